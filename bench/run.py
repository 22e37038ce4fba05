"""The benchmark: our answers over real HTTP against the same storage reads made straight through
azure-data-tables, in the same run, on the same machine.

    python3 manage.py bench                       # the full run (200,000 documents)
    python3 manage.py bench --documents 20000     # a quick one

It starts Azurite (in memory) and the dev host (its own process), loads a synthetic data set
through the loader, and prints a table and writes bench/results/latest.json with, per operation,
p50/p95/p99 latency and requests per second at concurrency 1, 16 and 64, the floor's figures
and the ratios; the loader's documents per second against raw batch upserts and through the
ingestion API; the start-up time the app adds to a worker that has imported the runtime library
and azure.functions, and the plain import time of function_app.py; and peak memory. The floor
reads through the same async client the service uses (azure.data.tables.aio), on an event loop
of its own. Every request and answer stays on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import io
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from azure.core import MatchConditions
from azure.core.exceptions import AzureError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devhost.azurite import Azurite, free_port  # noqa: E402
from devhost.identity import LocalAuthority  # noqa: E402
from extensions import POINTS  # noqa: E402
from shared.contract import install_points  # noqa: E402
from shared.contract.normalize import email_address  # noqa: E402
from shared.documents import validate_document  # noqa: E402
from shared.settings import Settings, batch_settings, get_settings, reset_settings  # noqa: E402
from shared.storage import (  # noqa: E402
    RecordRef,
    build_table_client,
    data_entity,
    digest_of,
    index_entity,
    partition_key,
)
from shared.storage.keys import enc, home_of, twin_of  # noqa: E402
from tools.data import load  # noqa: E402

_dumps = json.dumps

AUDIENCE = "api://c4s-bench"
CLIENT_APP = "0f4e2d6c-8b1a-4c3d-9e5f-1a2b3c4d5e6f"
HOME = "5c1e9a7d-2b4f-4c6e-8a1d-3f5b7c9e1a20"
WRITER = "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
POINTS_PER_RECORD = {
    "recordDetails": 3,
    "opportunityInsights": 3,
    "recordSummary": 2,
    "emailSummary": 1,
    "emailDraftFiles": 1,
}


def tenant_id(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-00000000b0{n:02x}"[:36]


# ---- data -------------------------------------------------------------------------------------------


def synthetic(tenants: int, records: int, documents: int, seed: int = 7) -> list[dict[str, Any]]:
    """`documents` documents over `records` records spread over `tenants` tenants, every point."""
    rng = random.Random(seed)
    per_record = sum(POINTS_PER_RECORD.values())
    docs: list[dict[str, Any]] = []
    for r in range(records):
        tenant = tenant_id(r % tenants)
        record = f"opp-{r:06d}"
        contact = f"contact{r:06d}@customer{r % tenants}.example"
        for point, count in POINTS_PER_RECORD.items():
            for k in range(count):
                if len(docs) >= documents:
                    return docs
                day = rng.randrange(1, 365)
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1704067200 + day * 86400 + rng.randrange(86400)))
                doc: dict[str, Any] = {
                    "tenantId": tenant,
                    "extensionPoint": point,
                    "id": f"{point[:3]}-{r}-{k}",
                    "recordType": "opportunity",
                    "recordId": record,
                    "dateTime": when,
                    "language": "en",
                }
                if point == "recordDetails":
                    doc["fields"] = {
                        "recordId": f"Q-{r}-{k}",
                        "recordTypeDisplayName": "Quote",
                        "recordTypePluralDisplayName": "Quotes",
                        "recordType": "quote",
                        "recordTitle": f"Quote {r}-{k}",
                        "url": f"https://app.example/quotes/{r}-{k}",
                        "additionalProperties": {"Amount": f"${rng.randrange(1000, 99999)}", "Stage": "Sent"},
                    }
                    doc["localized"] = {
                        "fr": {
                            "recordTypeDisplayName": "Devis",
                            "recordTypePluralDisplayName": "Devis",
                            "recordTitle": f"Devis {r}-{k}",
                        }
                    }
                elif point == "opportunityInsights":
                    doc["fields"] = {
                        "title": "Relecloud",
                        "description": f"Usage grew {rng.randrange(1, 60)}% this quarter at site {k}.",
                        "additionalProperties": {"Trend": "up"},
                    }
                elif point == "recordSummary":
                    doc["fields"] = {
                        "title": f"Meeting {k}",
                        "description": "Reviewed the rollout plan and next steps.",
                    }
                elif point == "emailSummary":
                    doc["contactEmail"] = contact
                    doc["fields"] = {"insight": f"Quote Q-{r} expires soon; the buyer has not opened it."}
                else:
                    doc["contactEmail"] = contact
                    doc["prompts"] = ["Make a proposal"]
                    doc["fields"] = {
                        "contentType": "content-pdf",
                        "content": f"https://app.example/files/{r}.pdf",
                        "contentTitle": "Proposal",
                        "contentDescription": "The proposal deck.",
                    }
                docs.append(doc)
    assert len(docs) == documents or documents > records * per_record
    return docs


# ---- measuring -------------------------------------------------------------------------------------


@dataclass
class Figures:
    p50: float
    p95: float
    p99: float
    rps: float
    errors: int
    count: int

    def as_dict(self) -> dict[str, float]:
        return {
            "p50_ms": round(self.p50, 2),
            "p95_ms": round(self.p95, 2),
            "p99_ms": round(self.p99, 2),
            "rps": round(self.rps, 1),
            "errors": self.errors,
            "requests": self.count,
        }


def _run_calls(call: Callable[[int], bool], indices: range, concurrency: int) -> tuple[list[float], int, float]:
    """Run `call(i)` for each index on `concurrency` threads: latencies (ms), errors, elapsed s."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def one(i: int) -> None:
        started = time.perf_counter()
        try:
            ok = call(i)
        except Exception:  # a timeout or a refused call is an error in the figures, not the end of the run
            ok = False
        elapsed = (time.perf_counter() - started) * 1000
        with lock:
            latencies.append(elapsed)
            errors[0] += not ok

    started = time.perf_counter()
    if concurrency == 1:
        for i in indices:
            one(i)
    else:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(one, indices))
    return latencies, errors[0], time.perf_counter() - started


def _figures(latencies: list[float], errors: int, elapsed: float) -> Figures:
    ordered = sorted(latencies)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return Figures(statistics.median(ordered), q[94], q[98], len(ordered) / elapsed, errors, len(ordered))


def compare(
    ours: Callable[[int], bool],
    floor: Callable[[int], bool],
    count: int,
    concurrency: int,
    rounds: int = 5,
    service_cpu: Callable[[], float] | None = None,
) -> tuple[Figures, Figures, float | None]:
    """`count` calls of each, in `rounds` alternating slices (ours, floor, ours, ...) on the same
    indices, so drift in the machine or in Azurite during the run weighs on both alike. With
    `service_cpu` (the service process's CPU seconds so far), also the service's CPU milliseconds
    per answer, counted over our slices only."""
    cpu_used = 0.0
    for i in range(min(20, count)):  # warm connections and caches
        _run_calls(ours, range(i, i + 1), 1)
        _run_calls(floor, range(i, i + 1), 1)
    collected: dict[str, tuple[list[float], list[int], list[float]]] = {"ours": ([], [], []), "floor": ([], [], [])}
    step = max(1, -(-count // rounds))
    for start in range(0, count, step):
        indices = range(start, min(count, start + step))
        for name, call in (("ours", ours), ("floor", floor)):
            before = service_cpu() if service_cpu and name == "ours" else 0.0
            latencies, errors, elapsed = _run_calls(call, indices, concurrency)
            if service_cpu and name == "ours":
                cpu_used += service_cpu() - before
            collected[name][0].extend(latencies)
            collected[name][1].append(errors)
            collected[name][2].append(elapsed)
    mine, base = (_figures(lat, sum(err), sum(el)) for lat, err, el in (collected["ours"], collected["floor"]))
    answered = mine.count - mine.errors
    cpu_ms = round(cpu_used * 1000 / answered, 2) if service_cpu and answered else None
    return mine, base, cpu_ms


class Response:
    def __init__(self, status: int, body: bytes) -> None:
        self.status_code = status
        self._body = body

    def json(self) -> Any:
        return json.loads(self._body)


class Connection:
    """A lean keep-alive client (http.client), so the load generator's own cost stays small."""

    def __init__(self, host: str, port: int) -> None:
        self._conn = http.client.HTTPConnection(host, port, timeout=10)

    def get(self, path: str, params: dict[str, Any], headers: dict[str, str]) -> Response:
        return self._send("GET", f"{path}?{urlencode(params)}", None, headers)

    def post(self, path: str, json: Any, headers: dict[str, str]) -> Response:
        return self._send("POST", path, _dumps(json).encode(), {**headers, "Content-Type": "application/json"})

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Response:
        self._conn.request(method, path, body=body, headers=headers)
        response = self._conn.getresponse()
        return Response(response.status, response.read())

    def close(self) -> None:
        self._conn.close()


class Clients:
    """One keep-alive connection per thread (connection reuse, like Copilot's)."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._local = threading.local()
        self._all: list[Connection] = []
        self._lock = threading.Lock()

    def get(self) -> Connection:
        client = getattr(self._local, "client", None)
        if client is None:
            client = Connection(self._host, self._port)
            self._local.client = client
            with self._lock:
                self._all.append(client)
        return client

    def close(self) -> None:
        for client in self._all:
            client.close()


def start_dev_host(env: dict[str, str], port: int) -> tuple[subprocess.Popen[bytes], str]:
    """`manage.py serve` on `port` with `env`, once it answers: the process and its base URL."""
    host = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "serve", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(base + "/api/diagnostics/testconnection", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return host, base


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


STARTUP_PROBE = """
import time
t = time.perf_counter()
{before}
u = time.perf_counter()
import function_app
print((time.perf_counter() - u) * 1000, (time.perf_counter() - t) * 1000)
"""


def startup_ms(runs: int = 9) -> dict[str, float]:
    """Medians over fresh processes: what importing the app adds once the worker has imported the
    runtime library and azure.functions (as Azure's worker has before it indexes the app), and
    the plain import of function_app.py in a bare interpreter."""
    # A deployed worker loads compiled bytecode (pip compiles site-packages; the app's modules
    # once): PYTHONDONTWRITEBYTECODE, set on some machines, would measure compiling every time.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INSIGHTS_", "AUTH_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    # the worker-level app settings of the sample (PYTHON_*, PYDANTIC_*), as a deployment has them
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    env.update({k: str(v) for k, v in sample.items() if k.startswith(("PYTHON_", "PYDANTIC_"))})
    subprocess.run([sys.executable, "-c", "import function_app"], cwd=ROOT, env=env, check=True)  # compile .pyc first

    def probe(before: str) -> list[float]:
        code = STARTUP_PROBE.format(before=before)
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        return [float(x) for x in out.stdout.split()]

    on_worker = [probe("import azure_functions_runtime, azure.functions")[0] for _ in range(runs)]
    plain = [probe("pass")[0] for _ in range(runs)]
    return {
        "app_on_worker_ms": round(statistics.median(on_worker), 1),
        "plain_import_ms": round(statistics.median(plain), 1),
    }


class FloorLoop:
    """The floor's event loop, in a thread of its own: the bench's threads hand it their reads."""

    def __init__(self) -> None:
        self._asyncio = asyncio
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="floor-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Any) -> Any:
        return self._asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


# ---- the run -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--requests", type=int, default=300, help="requests per operation at concurrency 1")
    parser.add_argument("--concurrent-requests", type=int, default=600, help="requests per operation at concurrency 16")
    parser.add_argument("--c64-requests", type=int, default=1200, help="requests per operation at concurrency 64")
    parser.add_argument("--raw-documents", type=int, default=50_000, help="documents for the raw batch-upsert floor")
    parser.add_argument("--api-clients", type=int, default=4, help="concurrent ingestion clients (and raw writers)")
    parser.add_argument("--api-batches", type=int, default=2, help="batches each ingestion client sends")
    parser.add_argument(
        "--api-batch",
        type=int,
        default=1000,
        help="documents per ingestion request: updates of loaded documents, scattered over the tenants' records",
    )
    parser.add_argument("--workers", type=int, default=4, help="loader threads, and the raw floor's")
    parser.add_argument(
        "--skip-reads", action="store_true", help="load and measure the writers only (no read operations)"
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.json"))
    parser.add_argument(
        "--markdown",
        metavar="RESULTS",
        help="print the figures of docs/benchmarks.md from a results JSON file, and run nothing",
    )
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    args.records = min(args.records, max(1, args.documents // sum(POINTS_PER_RECORD.values())))

    install_points(POINTS)  # the bench validates documents in-process

    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "processor": platform.machine(),
        },
        "data": {"documents": args.documents, "records": args.records, "tenants": args.tenants},
        "requests": {"c1": args.requests, "c16": args.concurrent_requests, "c64": args.c64_requests},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(f"bench: {args.documents} documents over {args.records} records and {args.tenants} tenants", flush=True)
    results["startup"] = startup_ms()
    print(
        f"start-up: the app adds {results['startup']['app_on_worker_ms']} ms to a worker that has imported the runtime "
        f"and azure.functions; plain import of function_app.py {results['startup']['plain_import_ms']} ms "
        "(medians of 9 fresh processes)",
        flush=True,
    )

    azurite = Azurite().start()
    authority = LocalAuthority().start()
    host_port = free_port()
    tenants = [tenant_id(n) for n in range(args.tenants)]
    env = {
        **os.environ,
        "INSIGHTS_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "INSIGHTS_TABLE_NAME": "bench",
        "AUTH_AUTHORITY": authority.url,
        "AUTH_AUDIENCES": AUDIENCE,
        "AUTH_ALLOWED_TENANTS": ",".join(tenants),
        "AUTH_ALLOWED_CLIENT_APPS": CLIENT_APP,
        "AUTH_WRITER_HOME_TENANTS": HOME,
        "AUTH_WRITER_CLIENT_APPS": WRITER,
        "AUTH_WRITER_TENANT_GRANTS": f"{WRITER}=*",
        "THROTTLE_REQUESTS_PER_MINUTE": "0",
        "INGEST_MAX_DOCUMENTS": "1000",
        # Azurite answers every query by scanning the whole table, one query at a time: at full
        # size a read waits behind the others for seconds at concurrency 16, so the service gets
        # Copilot's whole 5 seconds and one unhurried try instead of the production defaults
        # (4 s budget, 1.5 s read timeout, one retry). STORAGE_MAX_CONCURRENT_READS keeps its default.
        "REQUEST_BUDGET_SECONDS": "5",
        "STORAGE_CONNECT_TIMEOUT_SECONDS": "0.5",
        "STORAGE_READ_TIMEOUT_SECONDS": "4.4",
        "STORAGE_RETRIES": "0",
    }
    os.environ.update(env)
    results["service_settings"] = {k: v for k, v in env.items() if k.startswith(("REQUEST_", "STORAGE_", "THROTTLE_"))}

    results["service_settings"].setdefault(
        "STORAGE_MAX_CONCURRENT_READS", f"{Settings.model_fields['storage_max_concurrent_reads'].default} (default)"
    )
    host: subprocess.Popen[bytes] | None = None
    try:
        # -- loading -----------------------------------------------------------------------------
        docs = synthetic(args.tenants, args.records, args.documents)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.jsonl"
            path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")

            reset_settings()

            started = time.perf_counter()
            load_report = io.StringIO()
            if load(path, workers=args.workers, out=load_report, err=load_report) != 0:
                print(load_report.getvalue()[-4000:], file=sys.stderr)
                raise SystemExit("bench: the loader failed (its report is above)")
            loader_seconds = time.perf_counter() - started
        loader_rate = len(docs) / loader_seconds
        print(f"loader: {len(docs)} documents in {loader_seconds:.1f}s = {loader_rate:.0f} documents/s", flush=True)

        # configured exactly as the loader's client (timeouts, retries, transport)
        raw_settings = batch_settings(get_settings()).model_copy(update={"insights_table_name": "rawfloor"})

        # The same documents' entities as the write path stores them (each document's row and
        # index entity, and its copy's when it has a record and a contact), grouped by
        # partition, upserted in batches of up to 100 with nothing else: no validation, no
        # lookup of what a partition holds, no condition.
        subset = [doc for d in docs[: args.raw_documents] if (doc := validate_document(d)[0]) is not None]
        entities = stored_entities(subset)
        total = sum(len(e) for e in entities.values())
        loader_entities = sum(2 + 2 * bool(d.get("recordId") and d.get("contactEmail")) for d in docs)

        async def upsert_all() -> float:
            async with build_table_client(raw_settings) as raw:
                await raw.create_table()
                turns = asyncio.Semaphore(args.workers * 4)  # the loader's concurrency

                async def upsert(group: list[dict[str, Any]]) -> None:
                    async with turns:
                        for i in range(0, len(group), 100):
                            await raw.submit_transaction(
                                [("upsert", e, {"mode": "replace"}) for e in group[i : i + 100]]
                            )

                started = time.perf_counter()
                await asyncio.gather(*(upsert(group) for group in entities.values()))
                return time.perf_counter() - started

        raw_seconds = asyncio.run(upsert_all())
        raw_rate = len(subset) / raw_seconds
        print(
            f"raw batch upserts: {len(subset)} documents ({total} entities) in {raw_seconds:.1f}s = {raw_rate:.0f} documents/s",
            flush=True,
        )
        results["loading"] = {
            "loader_documents_per_s": round(loader_rate, 1),
            "loader_entities_per_s": round(loader_entities / loader_seconds, 1),
            "raw_batch_upserts_documents_per_s": round(raw_rate, 1),
            "raw_batch_upserts_entities_per_s": round(total / raw_seconds, 1),
            "raw_documents": len(subset),
            "ratio": round(loader_rate / raw_rate, 2),
            "workers": args.workers,
            "loader_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }

        # -- the dev host ------------------------------------------------------------------------
        host, base = start_dev_host(env, host_port)

        # -- the ingestion API against raw batch upserts -------------------------------------------
        results["ingestion"] = ingestion_vs_raw(
            args,
            base,
            authority,
            docs,
            raw_settings,
            {"dev host": host.pid, "Azurite": azurite.process.pid if azurite.process else -1},
        )
        ingestion = results["ingestion"]
        print(
            f"ingestion API: {ingestion['documents']} documents in scattered batches of {ingestion['batch']} from "
            f"{ingestion['clients']} clients at {ingestion['api_documents_per_s']:.0f}/s "
            f"(batch median {ingestion['batch_median_s']} s, {ingestion['api_resent_documents']} documents re-sent after a "
            f"503), {ingestion['api_errors']} batches never completed; raw batch "
            f"upserts of their entities from {ingestion['clients']} clients {ingestion['raw_documents_per_s']:.0f}/s: "
            f"ratio {ingestion['ratio']}",
            flush=True,
        )
        print(
            f"  the same storage work the rules need, raw through azure-data-tables from {ingestion['clients']} clients: "
            f"{ingestion['rules_documents_per_s']:.0f} documents/s ({ingestion['rules_transactions']} transactions): "
            f"ratio {ingestion['rules_ratio']} (the ingestion API against it)",
            flush=True,
        )
        print(
            f"  CPU while the API wrote: {_cpu_text(ingestion['api_seconds'], ingestion['api_cpu_seconds'])}; "
            f"while raw upserts wrote: {_cpu_text(ingestion['raw_seconds'], ingestion['raw_cpu_seconds'])}",
            flush=True,
        )

        # -- requests ----------------------------------------------------------------------------
        results["operations"] = (
            {}
            if args.skip_reads
            else run_operations(args, base, authority, tenants, azurite.connection_string, host.pid)
        )
        results["dev_host_peak_rss_mb"] = round(peak_rss_mb(host.pid), 1)
        results["bench_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    finally:
        if host is not None:
            host.terminate()
            host.wait(timeout=10)
        authority.stop()
        azurite.stop()

    report(results)
    if results["operations"]:
        from bench.sizing import per_instance_concurrency  # the sizing of docs/operations.md

        concurrency, lines = per_instance_concurrency(results)
        results["sizing"] = {"http_per_instance_concurrency": concurrency, "arithmetic": lines}
        print("\nper-instance HTTP concurrency from these figures (docs/operations.md):\n  " + "\n  ".join(lines))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {out}")
    errors = sum(
        op[c][side]["errors"] for op in results["operations"].values() for c in op for side in ("ours", "floor")
    )
    errors += results["ingestion"]["api_errors"]
    return 1 if errors else 0


def stored_entities(documents: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """What the write path stores for each document, by partition: its row and index entity at
    home, and its copy's row and index entity when it has a record and a contact."""

    by_partition: dict[str, list[dict[str, Any]]] = {}
    for doc in documents:
        key, twin = home_of(doc), twin_of(doc)
        row = data_entity(doc, key, key.home, 1, twin)
        by_partition.setdefault(key.home, []).extend(
            [row, index_entity(key, key.home, row=row["RowKey"], version=1, twin=twin, digest=digest_of(doc))]
        )
        if twin:
            copy = data_entity(doc, key, twin, 1, key.home)
            by_partition.setdefault(twin, []).extend(
                [copy, index_entity(key, twin, row=copy["RowKey"], version=1, twin=key.home)]
            )
    return by_partition


def ingestion_vs_raw(
    args: argparse.Namespace,
    base: str,
    authority: LocalAuthority,
    docs: list[dict[str, Any]],
    settings: Any,
    processes: dict[str, int],
) -> dict[str, Any]:
    """Scattered 1,000-document batches of updates (each a new dateTime, so its row moves) sent by
    `api_clients` concurrent clients to the ingestion API of the loaded table; then raw batch
    upserts of the same documents' entities into the same table from as many clients.

    Each phase also records the CPU seconds of `processes` and of the bench process (the API's
    clients, then the raw writers): on one machine, whichever is busy all the time sets the pace."""

    def cpu() -> dict[str, float]:
        return {**{name: cpu_seconds(pid) for name, pid in processes.items()}, "bench": time.process_time()}

    def used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: round(after[name] - before[name], 1) for name in before}

    rng = random.Random(13)
    wanted = args.api_clients * args.api_batches * args.api_batch
    picked = rng.sample(docs, min(wanted, len(docs)))
    updates = []
    for d in picked:
        when = time.gmtime(time.mktime(time.strptime(d["dateTime"], "%Y-%m-%dT%H:%M:%SZ")) + 86400)
        updates.append({**d, "dateTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", when)})
    batches = [updates[i : i + args.api_batch] for i in range(0, len(updates), args.api_batch)]
    token = authority.mint(tenant=HOME, audience=AUDIENCE, client_app=WRITER, roles=["Insights.Write"])
    seconds: list[float] = []
    errors = resent = 0
    lock = threading.Lock()

    def client(mine: list[list[dict[str, Any]]]) -> None:
        """Each batch until every document is written, as a partner does: a 503's report says
        which documents failed, and only those are sent again (at most 5 times)."""
        nonlocal errors, resent
        with httpx.Client(base_url=base, timeout=60) as http:
            for batch in mine:
                started = time.perf_counter()
                pending = batch
                for _ in range(6):
                    r = http.post(
                        "/api/ingest/documents",
                        json={"documents": pending},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    if r.status_code == 200 and r.json()["summary"]["written"] == len(pending):
                        pending = []
                        break
                    if r.status_code != 503:
                        break
                    report = r.json()["details"].get("results")
                    if report is not None:  # only what failed goes again
                        pending = [pending[i] for i in (item["index"] for item in report if item["status"] == "failed")]
                    # else the request ran out of its budget before it could report: all of it again
                    with lock:
                        resent += len(pending)
                with lock:
                    seconds.append(time.perf_counter() - started)
                    errors += bool(pending)

    started, cpu_before = time.perf_counter(), cpu()
    with ThreadPoolExecutor(args.api_clients) as pool:
        list(pool.map(client, [batches[c :: args.api_clients] for c in range(args.api_clients)]))
    api_seconds, api_cpu = time.perf_counter() - started, used(cpu_before, cpu())

    # -- the same storage work the rules need, done raw: each document moved once more
    again = []
    for d in updates:
        when = time.gmtime(time.mktime(time.strptime(d["dateTime"], "%Y-%m-%dT%H:%M:%SZ")) + 86400)
        again.append({**d, "dateTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", when)})
    cpu_before = cpu()
    rules_seconds, rules_transactions = asyncio.run(raw_rules(settings, again, args.api_batch, args.api_clients))
    rules_cpu = used(cpu_before, cpu())

    entities = stored_entities([doc for d in updates if (doc := validate_document(d)[0]) is not None])
    chunks = [group[i : i + 100] for group in entities.values() for i in range(0, len(group), 100)]

    async def raw() -> float:
        async with build_table_client(settings.model_copy(update={"insights_table_name": "bench"})) as table:
            queue = list(chunks)

            async def one_client() -> None:
                while queue:
                    chunk = queue.pop()
                    await table.submit_transaction([("upsert", e, {"mode": "replace"}) for e in chunk])

            begun = time.perf_counter()
            await asyncio.gather(*(one_client() for _ in range(args.api_clients)))
            return time.perf_counter() - begun

    cpu_before = cpu()
    raw_seconds = asyncio.run(raw())
    raw_cpu = used(cpu_before, cpu())
    api_rate, raw_rate = len(updates) / api_seconds, len(updates) / raw_seconds
    rules_rate = len(again) / rules_seconds
    return {
        "rules_documents_per_s": round(rules_rate, 1),
        "rules_ratio": round(api_rate / rules_rate, 2),
        "rules_seconds": round(rules_seconds, 1),
        "rules_cpu_seconds": rules_cpu,
        "rules_transactions": rules_transactions,
        "documents": len(updates),
        "batch": args.api_batch,
        "clients": args.api_clients,
        "batches_per_client": args.api_batches,
        "api_documents_per_s": round(api_rate, 1),
        "batch_median_s": round(statistics.median(seconds), 2),
        "api_errors": errors,
        "api_resent_documents": resent,
        "raw_documents_per_s": round(raw_rate, 1),
        "raw_entities": sum(len(c) for c in chunks),
        "ratio": round(api_rate / raw_rate, 2),
        "api_seconds": round(api_seconds, 1),
        "api_cpu_seconds": api_cpu,
        "raw_seconds": round(raw_seconds, 1),
        "raw_cpu_seconds": raw_cpu,
    }


async def raw_rules(settings: Any, documents: list[dict[str, Any]], batch: int, clients: int) -> tuple[float, int]:
    """The storage work the write rules need, straight through azure-data-tables, from `clients`
    concurrent writers taking the same batches: per batch, the tenants' watermarks (the tenant's
    and its contacts'); per partition touched (each home, each copy's partition), a point read of
    each document's index entity and, in a record's partition, of its watermark; then one
    transaction per partition (up to 33 documents) that removes each old row, writes the new one
    and replaces the index entity on its ETag. No validation, no name index, no expiry index, no
    HTTP: what is left is the rules' own storage cost. Returns (seconds, transactions)."""
    valid = [doc for d in documents if (doc := validate_document(d)[0]) is not None]
    batches = [valid[i : i + batch] for i in range(0, len(valid), batch)]
    transactions = redone = 0

    async with build_table_client(settings.model_copy(update={"insights_table_name": "bench"})) as table:

        async def read(pk: str, rk: str) -> Any:
            try:
                return await table.get_entity(pk, rk)
            except Exception:
                return None

        async def partition(pk: str, items: list[tuple[Any, Any, str, bool]]) -> None:
            """The partition's reads and transaction; done again from its reads when storage
            resets the connection or refuses (as the API's client re-sends what a 503 reported)."""
            nonlocal redone
            for attempt in range(5):
                try:
                    return await partition_once(pk, items)
                except AzureError as exc:
                    status = getattr(exc, "status_code", None)
                    if attempt == 4 or (status is not None and status < 500 and status not in (409, 412)):
                        raise
                    redone += 1
                    await asyncio.sleep(0.2 * (attempt + 1))

        async def partition_once(pk: str, items: list[tuple[Any, Any, str, bool]]) -> None:
            nonlocal transactions
            reads = [read(pk, key.index_row(pk)) for key, _, _, _ in items]
            if "|r|" in pk:
                reads.append(read(pk, "~w"))
            found = await asyncio.gather(*reads)
            ops: list[tuple[Any, ...]] = []
            for (key, doc, twin, _home), index in zip(items, found, strict=False):
                version = (
                    int(index["Ver"].value if hasattr(index["Ver"], "value") else index["Ver"]) + 1 if index else 1
                )
                row = data_entity(doc, key, pk, version, twin)
                if index and index.get("Row") and index["Row"] != row["RowKey"]:
                    ops.append(("delete", {"PartitionKey": pk, "RowKey": index["Row"]}))
                ops.append(("upsert", row, {"mode": "replace"}))
                entity = index_entity(key, pk, row=row["RowKey"], version=version, twin=twin, digest=digest_of(doc))
                if index:
                    condition = {
                        "mode": "replace",
                        "etag": index.metadata["etag"],
                        "match_condition": MatchConditions.IfNotModified,
                    }
                    ops.append(("update", entity, condition))
                else:
                    ops.append(("create", entity))
            for i in range(0, len(ops), 99):
                await table.submit_transaction(ops[i : i + 99])
                transactions += 1

        async def one_batch(documents: list[Any]) -> None:
            tenants = sorted({d.tenantId for d in documents})
            marks = [read("~tenants", enc(t)) for t in tenants]

            async def contact_marks(tenant: str) -> list[Any]:
                query = table.query_entities("PartitionKey eq @pk", parameters={"pk": f"{enc(tenant)}|~w"})
                return [entity async for entity in query]

            await asyncio.gather(*marks, *(contact_marks(t) for t in tenants))
            work: dict[str, list[tuple[Any, Any, str, bool]]] = {}
            for doc in documents:
                key, twin = home_of(doc), twin_of(doc)
                work.setdefault(key.home, []).append((key, doc, twin, True))
                if twin:
                    work.setdefault(twin, []).append((key, doc, key.home, False))
            turns = asyncio.Semaphore(16)  # the ingestion API's partitions at once

            async def one(pk: str, items: list[tuple[Any, Any, str, bool]]) -> None:
                async with turns:
                    for i in range(0, len(items), 33):
                        await partition(pk, items[i : i + 33])

            await asyncio.gather(*(one(pk, items) for pk, items in work.items()))

        queue = list(batches)

        async def client() -> None:
            while queue:
                await one_batch(queue.pop())

        begun = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        if redone:
            print(f"  (raw rules: {redone} partitions done again after a reset or refusal)", flush=True)
        return time.perf_counter() - begun, transactions


def _cpu_text(seconds: float, cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {value} s" for name, value in cpu.items()) + f" of {seconds} s"


def run_operations(
    args: argparse.Namespace, base: str, authority: LocalAuthority, tenants: list[str], connection: str, host_pid: int
) -> dict[str, Any]:

    tokens = {
        t: authority.mint(tenant=t, audience=AUDIENCE, client_app=CLIENT_APP, scopes=["user_impersonation"])
        for t in tenants
    }
    rng = random.Random(3)
    picks = [rng.randrange(args.records) for _ in range(max(args.requests, args.concurrent_requests) + 50)]
    # the floor's client is configured as the service's (connect timeout, retries, transport),
    # but it has no answer budget to keep: its reads may take as long as the storage takes, so
    # its tail is the storage's, not cut off at the service's read timeout
    floor_table = build_table_client(get_settings().model_copy(update={"storage_read_timeout_seconds": 60.0}))
    floor_loop = FloorLoop()
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    top = 10

    def target(i: int) -> tuple[str, str, str, str]:
        r = picks[i % len(picks)]
        tenant = tenant_id(r % args.tenants)
        return tenant, f"opp-{r:06d}", f"contact{r:06d}@customer{r % args.tenants}.example", tokens[tenant]

    # The floor issues the reads the service issues for the same request: the same partitions
    # (for a POST operation the record and every participant of the email: from, to and cc) and
    # as many rows of each as the service asks for (a record's page plus one; a contact's twice
    # that less one, since it may repeat what the record gave, shared/reading.gather).
    record_rows, contact_rows = top + 1, 2 * (top + 1) - 1

    async def one(read: tuple[str, int]) -> int:
        pk, rows = read
        found = 0
        pages = floor_table.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi and ( Exp eq '' or Exp gt @now ) and Org eq ''",
            parameters={"pk": pk, "lo": "e|", "hi": "e}", "now": now},
            results_per_page=rows,
            select=[
                *(
                    "PartitionKey",
                    "RowKey",
                    "Id",
                    "Ep",
                    "DateTime",
                    "Exp",
                    "Lang",
                    "Fields",
                    "Localized",
                    "Prompts",
                    "V",
                ),
                *("RecordType", "RecordId", "Contact"),
            ],
        ).by_page()
        async for _ in await anext(pages):  # the first page holds them all
            found += 1
        return found

    async def all_of(reads: list[tuple[str, int]]) -> int:
        return sum(await asyncio.gather(*(one(read) for read in reads)))

    def floor_read(reads: list[tuple[str, int]]) -> bool:
        return bool(floor_loop.run(all_of(reads)) > 0)

    def get_op(path: str, point: str) -> tuple[Callable[[Clients], Callable[[int], bool]], Callable[[int], bool]]:
        def ours(clients: Clients) -> Callable[[int], bool]:
            def call(i: int) -> bool:
                _, record, _, token = target(i)
                r = clients.get().get(
                    path,
                    params={"recordType": "opportunity", "recordId": record, "top": top},
                    headers={"Authorization": f"Bearer {token}", "x-ms-client-request-id": f"bench-{i}"},
                )
                return r.status_code == 200 and bool(r.json()["value"])

            return call

        def floor(i: int) -> bool:
            tenant, record, _, _ = target(i)
            return floor_read([(partition_key(tenant, point, RecordRef.record("opportunity", record)), record_rows)])

        return ours, floor

    def post_op(
        path: str, point: str, body: Callable[[str, str], dict[str, Any]]
    ) -> tuple[Callable[[Clients], Callable[[int], bool]], Callable[[int], bool]]:
        def ours(clients: Clients) -> Callable[[int], bool]:
            def call(i: int) -> bool:
                _, record, contact, token = target(i)
                r = clients.get().post(
                    path,
                    json=body(record, contact),
                    headers={"Authorization": f"Bearer {token}", "x-ms-client-request-id": f"bench-{i}"},
                )
                return r.status_code == 200 and bool(r.json()["value"])

            return call

        def floor(i: int) -> bool:
            tenant, record, contact, _ = target(i)
            email = body(record, contact)["resourceData"]
            addresses = dict.fromkeys(
                email_address(a) for a in [email["from"], *email.get("to", []), *email.get("cc", [])]
            )
            return floor_read(
                [
                    (partition_key(tenant, point, RecordRef.record("opportunity", record)), record_rows),
                    *((partition_key(tenant, point, RecordRef.contact(a)), contact_rows) for a in addresses),
                ]
            )

        return ours, floor

    operations = {
        "scp-get-related-records": get_op("/api/enhanceskills/related-records", "recordDetails"),
        "scp-get-sales-highlights": get_op("/api/enhanceskills/sales-highlights", "opportunityInsights"),
        "scp-get-related-activities": get_op("/api/enhanceskills/activities", "recordSummary"),
        "scp-get-email-insights-v2": post_op(
            "/api/enhanceskills/email-insights-v2",
            "emailSummary",
            lambda record, contact: {
                "resourceData": {"from": contact, "to": ["seller@contoso.example"]},
                "relatedEntities": [{"entityId": record, "entityType": "opportunity"}],
                "top": top,
            },
        ),
        "scp-get-content-suggestions": post_op(
            "/api/enhanceskills/content-suggestions",
            "emailDraftFiles",
            lambda record, contact: {
                "resourceData": {"from": contact},
                "resourceType": "email-thread",
                "recordType": "opportunity",
                "recordId": record,
                "top": top,
            },
        ),
    }
    figures: dict[str, Any] = {}
    try:
        for name, (ours_factory, floor) in operations.items():
            figures[name] = {}
            for label, concurrency, count in (
                ("c1", 1, args.requests),
                ("c16", 16, args.concurrent_requests),
                ("c64", 64, args.c64_requests),
            ):
                clients = Clients(base)
                try:
                    ours, base_figures, cpu_ms = compare(
                        ours_factory(clients), floor, count, concurrency, service_cpu=lambda: cpu_seconds(host_pid)
                    )
                finally:
                    clients.close()
                figures[name][label] = {
                    "ours": ours.as_dict(),
                    "floor": base_figures.as_dict(),
                    "p50_ratio": round(ours.p50 / base_figures.p50, 2),
                    "p99_ratio": round(ours.p99 / base_figures.p99, 2),
                    "rps_ratio": round(ours.rps / base_figures.rps, 2),
                    "service_cpu_ms_per_answer": cpu_ms,
                }
                print(
                    f"  {name} {label}: ours p50 {ours.p50:.2f} ms, floor p50 {base_figures.p50:.2f} ms, rps {ours.rps:.0f} vs {base_figures.rps:.0f}, errors {ours.errors}, service CPU {cpu_ms} ms per answer",
                    flush=True,
                )
    finally:
        floor_loop.run(floor_table.close())
        floor_loop.close()
    return figures


def report(results: dict[str, Any]) -> None:
    print(
        "\noperation                       conc   p50 ms (floor)   p95 ms (floor)   p99 ms (floor)     req/s (floor)   p50x  p99x  rps x  errors"
    )
    for name, by_conc in results["operations"].items():
        for label, row in by_conc.items():
            o, f = row["ours"], row["floor"]
            print(
                f"{name:31} {label:>4} {o['p50_ms']:7.2f} ({f['p50_ms']:6.2f}) {o['p95_ms']:7.2f} ({f['p95_ms']:6.2f}) "
                f"{o['p99_ms']:7.2f} ({f['p99_ms']:6.2f}) {o['rps']:8.0f} ({f['rps']:6.0f}) {row['p50_ratio']:5.2f} {row['p99_ratio']:5.2f} {row['rps_ratio']:6.2f} {o['errors']:6d}"
            )
    loading = results["loading"]
    print(
        f"\nloader {loading['loader_documents_per_s']:.0f} documents/s vs raw batch upserts of the same documents' entities "
        f"{loading['raw_batch_upserts_documents_per_s']:.0f} documents/s "
        f"(ratio {loading['ratio']})"
    )
    ingestion = results["ingestion"]
    print(
        f"ingestion API {ingestion['api_documents_per_s']:.0f} documents/s vs raw batch upserts of the same entities "
        f"{ingestion['raw_documents_per_s']:.0f} documents/s (ratio {ingestion['ratio']}; {ingestion['clients']} "
        f"clients, scattered batches of {ingestion['batch']}, {ingestion['api_errors']} failed batches)"
    )
    startup = results["startup"]
    print(
        f"start-up: app on a worker {startup['app_on_worker_ms']} ms, plain import {startup['plain_import_ms']} ms; "
        f"peak memory: dev host {results['dev_host_peak_rss_mb']} MB, bench/loader {results['bench_peak_rss_mb']} MB"
    )
    print(f"machine: {results['machine']}")


def _ingestion_line(results: dict[str, Any]) -> str:
    if "ingestion" not in results:  # a results file from before the comparison
        loading = results["loading"]
        return (
            f"- Ingestion API (batches of {loading.get('ingestion_api_batch', 500)} over HTTP): "
            f"{loading['ingestion_api_documents_per_s']} documents/s, {loading['ingestion_api_errors']} failed batches."
        )
    i = results["ingestion"]
    return (
        f"- Ingestion API, {i['clients']} clients each sending {i['batches_per_client']} scattered batches of "
        f"{i['batch']:,} updates into the loaded table: {i['api_documents_per_s']} documents/s (median batch "
        f"{i['batch_median_s']} s including re-sends of the {i.get('api_resent_documents', 0)} documents a 503 "
        f"reported failed; {i['api_errors']} batches never completed) against raw batch upserts of the same entities "
        f"({i['raw_entities']:,}: rows and index entities, grouped per partition) from {i['clients']} clients at "
        f"{i['raw_documents_per_s']} documents/s: ratio {i['ratio']}."
        + (
            f" CPU while the API wrote: {_cpu_text(i['api_seconds'], i['api_cpu_seconds'])}; while raw upserts "
            f"wrote: {_cpu_text(i['raw_seconds'], i['raw_cpu_seconds'])}."
            if "api_cpu_seconds" in i
            else ""
        )
        + (
            f" The same storage work the rules need (per batch the tenants' watermarks; per partition touched the "
            f"index entities' and the record watermark's point reads, then one transaction removing each old row, "
            f"writing the new one and replacing the index entity on its ETag), raw through azure-data-tables from "
            f"{i['clients']} clients: {i['rules_documents_per_s']} documents/s ({i['rules_transactions']} "
            f"transactions): ratio {i['rules_ratio']}. CPU while it ran: "
            f"{_cpu_text(i['rules_seconds'], i['rules_cpu_seconds'])}."
            if "rules_ratio" in i
            else ""
        )
    )


def _startup_line(results: dict[str, Any]) -> str:
    if "startup" not in results:  # a results file from before the start-up probe
        return f"- Cold import of `function_app.py`: {results['cold_import_ms']} ms (median of 7 fresh processes)."
    startup = results["startup"]
    return (
        f"- Start-up: importing the app adds {startup['app_on_worker_ms']} ms to a worker that has imported the "
        f"runtime library and `azure.functions`; a plain import of `function_app.py` takes "
        f"{startup['plain_import_ms']} ms (medians of 9 fresh processes)."
    )


def markdown(results: dict[str, Any]) -> str:
    """The table and figures of docs/benchmarks.md for one results file."""
    m, d = results["machine"], results["data"]
    lines = [
        f"Run of {results['when']} on {m['cpus']} cores ({m['processor']}, {m['platform']}, Python {m['python']}): "
        f"{d['documents']:,} documents over {d['records']:,} records and {d['tenants']} tenants; "
        + ", ".join(f"{n} requests per operation at concurrency {c[1:]}" for c, n in results["requests"].items())
        + ", each side; service settings for the run: "
        + ", ".join(f"`{k}={v}`" for k, v in results.get("service_settings", {}).items())
        + ".",
        "",
        "| operation | conc | p50 ms (floor) | p95 ms (floor) | p99 ms (floor) | req/s (floor) | p50 ratio | p99 ratio | req/s ratio | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_conc in results["operations"].items():
        for label, row in by_conc.items():
            o, f = row["ours"], row["floor"]
            lines.append(
                f"| {name} | {label[1:]} | {o['p50_ms']} ({f['p50_ms']}) | {o['p95_ms']} ({f['p95_ms']}) | "
                f"{o['p99_ms']} ({f['p99_ms']}) | {o['rps']} ({f['rps']}) | {row['p50_ratio']} | {row['p99_ratio']} | "
                f"{row['rps_ratio']} | {o['errors']} (floor {f['errors']}) |"
            )
    loading = results["loading"]
    lines += [
        "",
        f"- Loader (`manage.py load`, {loading['workers']} workers): {loading['loader_documents_per_s']} documents/s "
        f"({loading['loader_entities_per_s']} entities/s) against raw batch upserts of {loading['raw_documents']:,} "
        f"of the same documents at {loading['raw_batch_upserts_documents_per_s']} documents/s "
        f"({loading['raw_batch_upserts_entities_per_s']} entities/s): ratio {loading['ratio']}.",
        _ingestion_line(results),
        _startup_line(results),
        f"- Peak memory: dev host {results['dev_host_peak_rss_mb']} MB; bench process incl. the loader "
        f"{results['bench_peak_rss_mb']} MB.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
