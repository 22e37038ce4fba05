"""Inside the budget, traceable, under load: storage stopped or slow, throttling, the request
summary line, and a bounded load test on loopback."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

import shared.storage
from devhost.azurite import Azurite, free_port
from tests.conftest import TENANT_A, TENANT_B, Service, attached, doc
from tests.proxies import LoopbackProxy

HIGHLIGHTS = "/api/enhanceskills/sales-highlights"
QUERY = {"recordType": "opportunity", "recordId": "opp-1"}


def _use_storage(service: Service, connection_string: str) -> None:
    service.set(INSIGHTS_STORAGE_CONNECTION_STRING=connection_string)
    shared.storage.reset_store()


def test_storage_stopped_mid_run_answers_503_in_budget_and_recovers(service: Service, tmp_path: Path) -> None:
    port = free_port()
    azurite = Azurite(port=port, location=tmp_path / "azurite").start()
    try:
        _use_storage(service, azurite.connection_string)
        service.set(REQUEST_BUDGET_SECONDS="3")
        from shared.documents import validate_document
        from shared.storage import write_documents
        from tools.data import with_store

        durable = validate_document(doc(id="durable"))[0]
        assert durable is not None
        with_store(lambda store: write_documents(store, [durable]))
        assert service.get(HIGHLIGHTS, QUERY).status_code == 200
        azurite.stop()
        for _ in range(3):
            started = time.monotonic()
            response = service.get(HIGHLIGHTS, QUERY)
            elapsed = time.monotonic() - started
            assert response.status_code == 503
            assert response.json()["errorCode"] == "SERVICE_UNAVAILABLE"
            assert int(response.headers["retry-after"]) >= 1
            assert elapsed < 3.5
        azurite = Azurite(port=port, location=tmp_path / "azurite").start()
        response = service.get(HIGHLIGHTS, QUERY)
        assert response.status_code == 200, response.text
        assert [i["description"] for i in response.json()["value"]] == ["Insight durable"]
    finally:
        azurite.stop()


@pytest.fixture
def slow_storage(service: Service, azurite: Azurite) -> Iterator[LoopbackProxy]:
    service.load([doc(id="slow")])
    proxy = LoopbackProxy(azurite.port, delay=4.0)
    _use_storage(service, proxy.url_of(azurite.connection_string, azurite.port))
    yield proxy
    proxy.close()


def test_slow_storage_the_deadline_holds(service: Service, slow_storage: LoopbackProxy) -> None:
    service.set(REQUEST_BUDGET_SECONDS="1.5", INSIGHTS_TABLE_NAME=service.table_name)
    started = time.monotonic()
    response = service.get(HIGHLIGHTS, QUERY, **{"x-ms-client-request-id": "slow-1"})
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json() == {
        "errorCode": "SERVICE_UNAVAILABLE",
        "errorMessage": "The service could not answer in time; retry shortly.",
        "activityId": "slow-1",
        "details": {},
    }
    assert "retry-after" in response.headers
    assert 1.4 < elapsed < 2.0


def test_storage_timeouts_and_retries_are_settings(service: Service, slow_storage: LoopbackProxy) -> None:
    """STORAGE_READ_TIMEOUT_SECONDS and STORAGE_RETRIES bound each storage call: one short try
    answers 503 long before the request budget."""
    service.set(STORAGE_READ_TIMEOUT_SECONDS="0.3", STORAGE_RETRIES="0", INSIGHTS_TABLE_NAME=service.table_name)
    started = time.monotonic()
    response = service.get(HIGHLIGHTS, QUERY)
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["errorCode"] == "SERVICE_UNAVAILABLE"
    assert 0.25 < elapsed < 1.0


@pytest.mark.parametrize(("limit", "peak"), [("1", 1), ("0", 4)])
def test_storage_reads_in_flight_are_bounded(service: Service, azurite: Azurite, limit: str, peak: int) -> None:
    """STORAGE_MAX_CONCURRENT_READS: concurrent requests queue for storage instead of all
    reaching it at once (0: no bound). Every request still gets its answer."""
    service.load([doc(id="gated")])
    proxy = LoopbackProxy(azurite.port, delay=0.3)
    try:
        _use_storage(service, proxy.url_of(azurite.connection_string, azurite.port))
        service.set(STORAGE_MAX_CONCURRENT_READS=limit, STORAGE_READ_TIMEOUT_SECONDS="3")
        shared.storage.reset_store()
        token = service.token()

        def one(_: int) -> httpx.Response:
            with httpx.Client(base_url=service.url, timeout=10) as client:
                return client.get(HIGHLIGHTS, params=QUERY, headers={"Authorization": f"Bearer {token}"})

        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(one, range(4)))
        assert [r.status_code for r in responses] == [200] * 4
        assert all(r.json()["value"][0]["description"] == "Insight gated" for r in responses)
        assert proxy.peak == peak
    finally:
        proxy.close()
        shared.storage.reset_store()


def test_default_budget_answers_before_copilot_gives_up(service: Service, slow_storage: LoopbackProxy) -> None:
    started = time.monotonic()
    response = service.get(HIGHLIGHTS, QUERY)
    assert response.status_code == 503
    assert time.monotonic() - started < 4.6  # 4 s budget, well inside Copilot's 5


def test_throttling_is_per_tenant(service: Service) -> None:
    service.set(THROTTLE_REQUESTS_PER_MINUTE="5")
    token_a, token_b = service.token(tenant=TENANT_A), service.token(tenant=TENANT_B)
    statuses = [service.get(HIGHLIGHTS, QUERY, token=token_a).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    throttled = service.get(HIGHLIGHTS, QUERY, token=token_a)
    assert throttled.json()["errorCode"] == "REQUEST_THROTTLED"
    assert 1 <= int(throttled.headers["retry-after"]) <= 12
    assert [service.get(HIGHLIGHTS, QUERY, token=token_b).status_code for _ in range(5)] == [200] * 5


def test_throttling_off_when_zero(service: Service) -> None:
    service.set(THROTTLE_REQUESTS_PER_MINUTE="0")
    assert {service.get(HIGHLIGHTS, QUERY).status_code for _ in range(30)} == {200}


def test_summary_line_and_traceparent(service: Service, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    service.load([doc(id="one")])
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    service.get(
        HIGHLIGHTS,
        QUERY,
        **{"x-ms-client-request-id": "trace-7", "traceparent": traceparent, "x-ms-user-agent": "sales-copilot"},
    )
    lines = [r.getMessage() for r in caplog.records if "request_id=trace-7" in r.getMessage()]
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith("[trace-7] request_id=trace-7 operation=scp-get-sales-highlights")
    for part in (
        f"tenant={TENANT_A}",
        "status=200",
        "items=1",
        "user_agent=sales-copilot",
        "token_version=2.0",
        "trace_id=4bf92f3577b34da6a3ce929d0e0e4736",
    ):
        assert part in line


def test_an_unexpected_error_is_logged_once_with_the_id(
    service: Service, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(shared.storage.InsightsStore, "read_page", broken)
    response = service.get(HIGHLIGHTS, QUERY, **{"x-ms-client-request-id": "boom-1"})
    assert response.status_code == 500
    assert response.json()["errorCode"] == "INTERNAL_SERVER_ERROR"
    assert "disk on fire" not in response.text and "Traceback" not in response.text
    with_exception = [r for r in caplog.records if r.exc_info]
    assert len(with_exception) == 1 and "[boom-1]" in with_exception[0].getMessage()


def test_telemetry_is_off_and_free_without_a_connection_string() -> None:
    import subprocess
    import sys

    probe = "import sys, function_app; from shared.http import telemetry; print(telemetry.enabled(), 'azure.monitor.opentelemetry' in sys.modules, 'opentelemetry' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.stdout.split() == ["False", "False", "False"], result.stderr


def test_load_20000_requests_at_concurrency_32(service: Service) -> None:
    """Bounded, loopback only: every answer 200, nothing lost, nothing from another tenant."""
    tenants = [TENANT_A, TENANT_B]
    docs = []
    for tenant in tenants:
        for r in range(4):
            docs += [
                doc(
                    id=f"{tenant}-h{r}",
                    tenant=tenant,
                    record_id=f"opp-{r}",
                    fields={"title": "T", "description": tenant},
                ),
                doc(
                    "recordDetails",
                    id=f"{tenant}-d{r}",
                    tenant=tenant,
                    record_id=f"opp-{r}",
                    fields={
                        "recordId": tenant,
                        "recordTypeDisplayName": "Q",
                        "recordTypePluralDisplayName": "Qs",
                        "recordType": "quote",
                        "recordTitle": tenant,
                    },
                ),
                attached(
                    "recordSummary",
                    id=f"{tenant}-a{r}",
                    tenant=tenant,
                    record_id=f"opp-{r}",
                    fields={"title": tenant, "description": "x"},
                ),
                attached(
                    "emailSummary",
                    id=f"{tenant}-e{r}",
                    tenant=tenant,
                    record_id=f"opp-{r}",
                    contact=f"c{r}@x.example",
                    fields={"insight": tenant},
                ),
                attached(
                    "emailDraftFiles",
                    id=f"{tenant}-f{r}",
                    tenant=tenant,
                    record_id=f"opp-{r}",
                    fields={
                        "contentType": "content-pdf",
                        "content": "https://x.example/f",
                        "contentTitle": tenant,
                        "contentDescription": "d",
                    },
                ),
            ]
    service.load(docs)
    tokens = {t: service.token(tenant=t) for t in tenants}
    total = 20_000
    failures: list[str] = []
    answered = [0]
    lock = threading.Lock()

    def one(n: int, client: httpx.Client) -> None:
        tenant = tenants[n % 2]
        record = f"opp-{n % 4}"
        headers = {"Authorization": f"Bearer {tokens[tenant]}", "x-ms-client-request-id": f"load-{n}"}
        kind = n % 5
        if kind == 0:
            r = client.get(HIGHLIGHTS, params={"recordType": "opportunity", "recordId": record}, headers=headers)
            got = [i["description"] for i in r.json().get("value", [])] if r.status_code == 200 else []
        elif kind == 1:
            r = client.get(
                "/api/enhanceskills/related-records",
                params={"recordType": "opportunity", "recordId": record},
                headers=headers,
            )
            got = [i["recordTitle"] for i in r.json().get("value", [])] if r.status_code == 200 else []
        elif kind == 2:
            r = client.get(
                "/api/enhanceskills/activities",
                params={"recordType": "opportunity", "recordId": record},
                headers=headers,
            )
            got = [i["title"] for i in r.json().get("value", [])] if r.status_code == 200 else []
        elif kind == 3:
            r = client.post(
                "/api/enhanceskills/email-insights-v2",
                json={
                    "resourceData": {"from": f"c{n % 4}@x.example"},
                    "relatedEntities": [{"entityId": record, "entityType": "opportunity"}],
                },
                headers=headers,
            )
            got = [i["insight"] for i in r.json().get("value", [])] if r.status_code == 200 else []
        else:
            r = client.post(
                "/api/enhanceskills/content-suggestions",
                json={
                    "resourceData": {},
                    "resourceType": "email-thread",
                    "recordType": "opportunity",
                    "recordId": record,
                },
                headers=headers,
            )
            got = [i["contentTitle"] for i in r.json().get("value", [])] if r.status_code == 200 else []
        with lock:
            answered[0] += 1
            if r.status_code != 200 or got != [tenant] or r.headers.get("x-ms-client-request-id") != f"load-{n}":
                failures.append(f"{n}: {r.status_code} {got}")

    local = threading.local()
    clients: list[httpx.Client] = []

    def work(n: int) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=service.url, timeout=10)
            with lock:
                clients.append(local.client)
        one(n, local.client)

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(work, range(total)))
    finally:
        for client in clients:
            client.close()
    elapsed = time.monotonic() - started
    print(
        f"\nload: {total} requests at concurrency 32 in {elapsed:.1f}s ({total / elapsed:.0f}/s), {len(failures)} failures"
    )
    assert answered[0] == total
    assert failures == []


def test_telemetry_files_each_invocation_under_the_hosts_span_with_its_calls_and_summary(
    service: Service, azurite: Azurite
) -> None:
    """Through the dev host and the runtime library (PYTHON_ENABLE_OPENTELEMETRY on), at a
    loopback Application Insights receiver: no request record of ours (the host's invocation is
    the request); export is configured at start-up, not in the first request's budget; our span
    is a child of the host's invocation span, in the caller's trace; the
    storage calls and key fetches are under our span; the summary line is filed inside it; a
    caller that does not sample gets no spans, and every summary line is exported."""
    import subprocess
    import sys

    service.load([doc(id="traced")])
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPLICATIONINSIGHTS_", "PYTHON_"))}
    env.update(PROBE_TOKEN=service.token())
    result = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "telemetry_probe.py"), str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["configured_at_start"]  # the exporter's import is not spent in a request's budget
    envelopes = report["envelopes"]
    by_id = {e["id"]: e for e in envelopes if e["id"]}

    def ancestors(e: dict[str, Any]) -> list[str]:
        chain = []
        while e["parent_id"] in by_id:
            chain.append(e["parent_id"])
            e = by_id[e["parent_id"]]
        return [*chain, e["parent_id"]]

    assert not [e for e in envelopes if e["kind"] == "Request"]
    traced_host, unsampled_host, fresh_host = (tp.split("-") for tp in report["host_traceparents"])
    assert traced_host[1] == "4bf92f3577b34da6a3ce929d0e0e4736" and traced_host[3] == "01"
    assert unsampled_host[3] == "00"
    ours = {
        e["operation_id"]: e
        for e in envelopes
        if e["kind"] == "RemoteDependency" and e["name"] == "scp-get-sales-highlights"
    }
    assert set(ours) == {traced_host[1], fresh_host[1]}  # the unsampled one is not recorded
    for host in (traced_host, fresh_host):
        span = ours[host[1]]
        assert span["type"] == "InProc" and span["parent_id"] == host[2]
        calls = [
            e for e in envelopes if e["kind"] == "RemoteDependency" and e["operation_id"] == host[1] and e is not span
        ]
        storage = [e for e in calls if f":{azurite.port}" in (e["target"] or "") + (e["name"] or "")]
        assert storage, calls
        assert all(span["id"] in ancestors(e) for e in calls)
        summary = next(e for e in envelopes if e["kind"] == "Message" and e["operation_id"] == host[1])
        assert "request_id=" in summary["message"] and summary["parent_id"] == span["id"]
    authority = service.authority.url.removeprefix("http://")
    key_fetches = [e for e in envelopes if e["target"] == authority]  # metadata and keys, on the first request
    assert key_fetches and all(ours[traced_host[1]]["id"] in ancestors(e) for e in key_fetches)
    summaries = [e["message"] for e in envelopes if e["kind"] == "Message" and "request_id=" in e["message"]]
    assert sorted(m.split()[1] for m in summaries) == [
        "request_id=no-traceparent",
        "request_id=not-traced-by-caller",
        "request_id=traced-by-caller",
    ]
