"""The overload bench: answers inside the budget when storage is the bottleneck, ours against the
same reads made straight through azure-data-tables, in one run, on one machine.

    python3 manage.py bench-overload               # 300,000 filler entities, 256 callers, 40 s
    python3 manage.py bench-overload --filler 50000 --seconds 10   # a quick one

Record details for 500 records of 10 documents each, in a table that also holds `--filler`
entities of no interest, so that Azurite's whole-table scans make storage the bottleneck (as a hot
partition or a storage incident does in Azure). `--callers` callers each send their next request as
soon as they have an answer, for `--seconds`: the raw floor (the service's read, straight through
the async table client, with no budget: every read is waited for) and the service (the dev host,
its default budget and admission, the throttle off). Twice: callers that send again at once after
a 503, and callers that wait its `Retry-After` (at most 1 s). Printed per side: answers per second
inside the budget (5 s, Copilot's), the share of 503s and their median time, and Azurite's CPU
seconds (over the side and per answer: the same per answer on both sides means admission spends
storage's work only on answers); written to `bench/results/overload-latest.json`. Every request stays on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import AUDIENCE, CLIENT_APP, cpu_seconds, start_dev_host  # noqa: E402
from devhost.azurite import Azurite, free_port  # noqa: E402
from devhost.identity import LocalAuthority  # noqa: E402
from extensions import POINTS  # noqa: E402
from shared.contract import install_points  # noqa: E402
from shared.settings import get_settings, reset_settings  # noqa: E402
from shared.storage import RecordRef, build_table_client, partition_key  # noqa: E402
from tools.data import load  # noqa: E402

TENANT = "6a1f3c5e-7b9d-4e2f-8a4c-0d2e4f6a8b1c"
BUDGET_SECONDS = 5.0
"""Copilot's: an answer later than this is dropped."""
ROUTE = "/api/enhanceskills/related-records"
TOP = 10


def documents(records: int, per_record: int) -> list[dict[str, Any]]:
    docs = []
    for r in range(records):
        for k in range(per_record):
            docs.append(
                {
                    "tenantId": TENANT,
                    "extensionPoint": "recordDetails",
                    "id": f"q-{r}-{k}",
                    "recordType": "opportunity",
                    "recordId": f"opp-{r:04d}",
                    "dateTime": f"2026-0{1 + k % 9}-1{k % 9}T10:00:00Z",
                    "fields": {
                        "recordId": f"Q-{r}-{k}",
                        "recordTypeDisplayName": "Quote",
                        "recordTypePluralDisplayName": "Quotes",
                        "recordType": "quote",
                        "recordTitle": f"Quote {r}-{k}",
                        "url": f"https://app.example/quotes/{r}-{k}",
                    },
                }
            )
    return docs


async def add_filler(count: int) -> None:
    """Entities of no interest, in partitions of their own: the scans' cost."""
    async with build_table_client(get_settings()) as table:
        turns = asyncio.Semaphore(8)

        async def batch(start: int) -> None:
            async with turns:
                ops = [
                    ("upsert", {"PartitionKey": f"~filler|{start // 100:05d}", "RowKey": f"{n:07d}", "Pad": "x" * 64})
                    for n in range(start, min(count, start + 100))
                ]
                await table.submit_transaction(ops)

        await asyncio.gather(*(batch(start) for start in range(0, count, 100)))


class Tally:
    """What the callers of one side got over a window of `seconds` ending at `end`. An answer
    counts where it arrives: one that arrives after the window (a read still queued at storage
    when the callers stopped) is set apart, not added to the window's figures. Counting those
    flattered the floor, whose callers each have a read queued at the end: at 790 callers and
    40 s, 790 answers on top of the 2,580 in the window."""

    def __init__(self, end: float) -> None:
        self.end = end
        self.inside = 0
        self.late = 0
        self.after_window = 0
        self.refused: list[float] = []
        self.other = 0
        self.at_deadline = 0

    def answered(self, elapsed: float, now: float) -> None:
        if now > self.end:
            self.after_window += 1
        elif elapsed <= BUDGET_SECONDS:
            self.inside += 1
        else:
            self.late += 1

    def figures(self, seconds: float) -> dict[str, Any]:
        total = self.inside + self.late + len(self.refused) + self.other
        return {
            "answers": self.inside + self.late,
            "answers_per_s": round((self.inside + self.late) / seconds, 1),
            "inside_budget": self.inside,
            "inside_budget_per_s": round(self.inside / seconds, 1),
            "answers_after_window": self.after_window,
            "refused_503": len(self.refused),
            "share_503": round(len(self.refused) / total, 3) if total else 0.0,
            "median_503_ms": round(statistics.median(self.refused) * 1000, 1) if self.refused else None,
            "deadline_503": self.at_deadline,
            "other_errors": self.other,
            "requests": total,
        }


async def run_floor(callers: int, seconds: float, records: int) -> Tally:
    """The service's read for a record's details, straight through the async client, no budget."""
    settings = get_settings().model_copy(update={"storage_read_timeout_seconds": 60.0})
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    async with build_table_client(settings) as table:
        end = time.perf_counter() + seconds
        tally = Tally(end)

        async def caller(seed: int) -> None:
            rng = random.Random(seed)
            while time.perf_counter() < end:
                pk = partition_key(
                    TENANT, "recordDetails", RecordRef.record("opportunity", f"opp-{rng.randrange(records):04d}")
                )
                started = time.perf_counter()
                try:
                    pages = table.query_entities(
                        "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi and ( Exp eq '' or Exp gt @now )",
                        parameters={"pk": pk, "lo": "e|", "hi": "e}", "now": now},
                        results_per_page=TOP + 1,
                    ).by_page()
                    found = [e async for e in await anext(pages)]
                    assert found
                except Exception:
                    tally.other += 1
                    continue
                done = time.perf_counter()
                tally.answered(done - started, done)

        await asyncio.gather(*(caller(n) for n in range(callers)))
    return tally


async def run_service(base: str, token: str, callers: int, seconds: float, records: int, wait_retry: bool) -> Tally:
    end = time.perf_counter() + seconds
    tally = Tally(end)
    connector = aiohttp.TCPConnector(limit=callers)
    async with aiohttp.ClientSession(base, connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def caller(seed: int) -> None:
            rng = random.Random(seed)
            headers = {"Authorization": f"Bearer {token}"}
            while time.perf_counter() < end:
                params = {"recordType": "opportunity", "recordId": f"opp-{rng.randrange(records):04d}", "top": str(TOP)}
                started = time.perf_counter()
                try:
                    async with session.get(ROUTE, params=params, headers=headers) as response:
                        body = await response.read()
                        status, retry_after = response.status, response.headers.get("Retry-After")
                except Exception:
                    tally.other += 1
                    continue
                done = time.perf_counter()
                elapsed = done - started
                if status == 200:
                    tally.answered(elapsed, done)
                elif status == 503:
                    tally.refused.append(elapsed)
                    tally.at_deadline += b"overloaded" not in body  # the budget's 503, not admission's
                    if wait_retry:
                        await asyncio.sleep(min(1.0, float(retry_after or 1)))
                else:
                    tally.other += 1

        await asyncio.gather(*(caller(n) for n in range(callers)))
    return tally


def pin_storage(azurite: Azurite) -> dict[str, list[int]] | None:
    """Azurite on a CPU of its own, the callers and the service on the others (both sides alike).

    In Azure, storage runs on machines of its own: the service's CPU work never takes storage's.
    On one machine, Azurite would otherwise share the CPUs with the callers and the service, and
    whichever side burns more CPU (ours answers 503s; the floor does not) would slow storage down
    for itself. Every thread of the Node process is pinned, not only its main thread.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2 or azurite.process is None:
        return None
    storage, rest = cpus[-1:], cpus[:-1]
    for tid in os.listdir(f"/proc/{azurite.process.pid}/task"):
        os.sched_setaffinity(int(tid), storage)
    os.sched_setaffinity(0, rest)  # this process; the dev host inherits it
    return {"storage": storage, "callers_and_service": rest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--per-record", type=int, default=10)
    parser.add_argument("--filler", type=int, default=300_000)
    parser.add_argument("--callers", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument(
        "--share-cpus",
        action="store_true",
        help="let Azurite share every CPU with the callers and the service (by default it has a CPU of its own)",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "overload-latest.json"))
    args = parser.parse_args(argv)
    install_points(POINTS)

    azurite = Azurite().start()
    pinned = None if args.share_cpus else pin_storage(azurite)
    authority = LocalAuthority().start()
    port = free_port()
    env = {
        **os.environ,
        "INSIGHTS_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "INSIGHTS_TABLE_NAME": "overload",
        "AUTH_AUTHORITY": authority.url,
        "AUTH_AUDIENCES": AUDIENCE,
        "AUTH_ALLOWED_TENANTS": TENANT,
        "AUTH_ALLOWED_CLIENT_APPS": CLIENT_APP,
        "THROTTLE_REQUESTS_PER_MINUTE": "0",
    }
    for name in (
        "REQUEST_BUDGET_SECONDS",
        "STORAGE_READ_TIMEOUT_SECONDS",
        "STORAGE_RETRIES",
        "STORAGE_MAX_CONCURRENT_READS",
    ):
        env.pop(name, None)  # the service's defaults
    os.environ.update(env)
    reset_settings()
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "setup": {k: getattr(args, k) for k in ("records", "per_record", "filler", "callers", "seconds")},
        "storage_cpus": pinned,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    host: subprocess.Popen[bytes] | None = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "overload.jsonl"
            path.write_text("".join(json.dumps(d) + "\n" for d in documents(args.records, args.per_record)))
            if load(path, workers=4, out=open(os.devnull, "w"), err=sys.stderr) != 0:
                raise SystemExit("bench-overload: the loader failed")
        started = time.perf_counter()
        asyncio.run(add_filler(args.filler))
        print(
            f"loaded {args.records * args.per_record} documents and {args.filler} filler entities "
            f"({time.perf_counter() - started:.0f} s for the filler)",
            flush=True,
        )
        host, base = start_dev_host(env, port)
        token = authority.mint(tenant=TENANT, audience=AUDIENCE, client_app=CLIENT_APP, scopes=["user_impersonation"])
        # warm: the instance's clients, keys and service-time estimate
        asyncio.run(run_service(base, token, 4, 3.0, args.records, wait_retry=True))
        storage_pid = azurite.process.pid if azurite.process else None

        def storage_cpu() -> float:
            return cpu_seconds(storage_pid) if storage_pid else 0.0

        for behaviour, wait_retry in (("resend at once", False), ("wait Retry-After", True)):
            storage_before = storage_cpu()
            floor = asyncio.run(run_floor(args.callers, args.seconds, args.records))
            floor_storage_cpu = storage_cpu() - storage_before
            cpu_before, storage_before = cpu_seconds(host.pid), storage_cpu()
            ours = asyncio.run(run_service(base, token, args.callers, args.seconds, args.records, wait_retry))
            ours_storage_cpu = storage_cpu() - storage_before
            figures: dict[str, Any] = {"floor": floor.figures(args.seconds), "ours": ours.figures(args.seconds)}
            figures["ratio"] = round(
                figures["ours"]["inside_budget_per_s"] / max(0.1, figures["floor"]["inside_budget_per_s"]), 2
            )
            figures["service_cpu_s"] = round(cpu_seconds(host.pid) - cpu_before, 1)
            # how far past overload the run was: the callers against what storage answers inside
            # one budget (every answer of the floor's, inside the budget or not); under 1 the
            # callers' queue fits inside the budget and the run says nothing about overload
            floor_per_s = figures["floor"]["answers"] / args.seconds
            figures["overload"] = round(args.callers / max(0.1, floor_per_s * BUDGET_SECONDS), 2)
            # the stricter measure: ours inside the budget against every answer storage gave
            figures["ratio_of_every_floor_answer"] = round(
                figures["ours"]["inside_budget_per_s"] / max(0.1, floor_per_s), 2
            )
            # Azurite's CPU on each side, and per answer: whether ours got fewer answers because
            # its reads cost storage more, or because storage got less of the machine's CPU
            for side, used in (("floor", floor_storage_cpu), ("ours", ours_storage_cpu)):
                figures[side]["storage_cpu_s"] = round(used, 1)
                answers = figures[side]["answers"] + figures[side]["answers_after_window"]  # storage served all
                figures[side]["storage_cpu_ms_per_answer"] = round(used * 1000 / answers, 1) if answers else None
            results[behaviour] = figures
            print(
                f"{behaviour}: raw floor {figures['floor']['inside_budget_per_s']}/s inside {BUDGET_SECONDS:.0f} s "
                f"({figures['floor']['answers']} answers in the window, "
                f"{figures['floor']['answers_after_window']} after it); ours {figures['ours']['inside_budget_per_s']}/s "
                f"({figures['ours']['answers']} answers, {figures['ours']['refused_503']} 503s = "
                f"{figures['ours']['share_503']:.0%}, median 503 {figures['ours']['median_503_ms']} ms): "
                f"ratio {figures['ratio']}; storage CPU {figures['floor']['storage_cpu_s']} s "
                f"({figures['floor']['storage_cpu_ms_per_answer']} ms an answer) for the floor, "
                f"{figures['ours']['storage_cpu_s']} s ({figures['ours']['storage_cpu_ms_per_answer']} ms) for ours",
                flush=True,
            )
            print(
                f"  {args.callers} callers = {figures['overload']} x what storage answers inside the budget "
                f"({floor_per_s:.1f}/s x {BUDGET_SECONDS:.0f} s); ours against every answer of the floor's: "
                f"{figures['ratio_of_every_floor_answer']}"
                + ("" if figures["overload"] > 1 else "; not past overload: raise --callers or --filler"),
                flush=True,
            )
    finally:
        if host is not None:
            host.terminate()
            host.wait(timeout=10)
        authority.stop()
        azurite.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
