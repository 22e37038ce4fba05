"""The dev host plays the Functions host and hands every request to the runtime library the app
pins (`azure-functions-runtime`): requests converted as the host converts them, apps the runtime
refuses refused, and each log record tied to the invocation whose task or thread emitted it.

The library holds one app per process, so the small apps here run in their own dev host process
(`python -m devhost`); the product's app is the one the session's dev host serves."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devhost import protos
from devhost.server import to_rpc_http
from devhost.worker import attribution
from tests.conftest import TENANT_OUTSIDE, Service, attached

ROOT = Path(__file__).resolve().parent.parent

ECHO_APP = """
import json, logging, threading
import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="echo/{id}/{part:int?}", methods=["GET", "POST"])
def echo(req: func.HttpRequest) -> func.HttpResponse:
    seen = {"method": req.method, "url": req.url, "headers": dict(req.headers), "params": dict(req.params),
            "route": dict(req.route_params), "body": req.get_body().decode()}
    return func.HttpResponse(json.dumps(seen), mimetype="application/json", charset="utf-8")


@app.route(route="fails", methods=["GET"])
def fails(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("the function failed on purpose")


@app.timer_trigger(schedule="0 0 3 * * *", arg_name="timer", run_on_startup=False)
def nightly(timer: func.TimerRequest) -> None:
    logging.getLogger("app").warning("nightly ran, past due %s", timer.past_due)


@app.route(route="logs", methods=["GET"])
def logs(req: func.HttpRequest) -> func.HttpResponse:
    log = logging.getLogger("app")
    log.warning("line from the invocation's thread")
    own = threading.Thread(target=log.warning, args=("line from a thread of the app's own",))
    own.start()
    own.join()
    return func.HttpResponse("logged")
"""

BROKEN_APP = """
import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="fine", methods=["GET"])
def fine(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("fine")


@app.route(route="bad", methods=["GET"])
def bad(req: func.HttpRequest) -> dict:
    return {}
"""


def _write_app(folder: Path, source: str, route_prefix: str = "api") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "function_app.py").write_text(textwrap.dedent(source))
    host = {"version": "2.0", "functionTimeout": "00:00:20", "extensions": {"http": {"routePrefix": route_prefix}}}
    (folder / "host.json").write_text(json.dumps(host))
    return folder


def _devhost_process(app_dir: Path, log_file: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log_file.open("w") as console:
        return subprocess.Popen(
            [sys.executable, "-m", "devhost", "--app-dir", str(app_dir), "--port", "0"],
            cwd=app_dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=console,
            text=True,
        )


class AppHost:
    def __init__(self, process: subprocess.Popen[str], log_file: Path, url: str) -> None:
        self.process, self.log_file, self.url = process, log_file, url

    def stop(self) -> str:
        """Stop the host; its console output."""
        self.process.terminate()
        self.process.communicate(timeout=10)
        return self.log_file.read_text()


@pytest.fixture(scope="module")
def echo_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppHost]:
    folder = tmp_path_factory.mktemp("echo")
    app_dir = _write_app(folder / "app", ECHO_APP, route_prefix="v1")
    log_file = folder / "console.log"
    process = _devhost_process(app_dir, log_file)
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.startswith("serving 3 functions on http://127.0.0.1:"), first + log_file.read_text()  # of 4: one timer
    host = AppHost(process, log_file, first.rsplit(" ", 1)[1].strip())
    yield host
    if host.process.poll() is None:
        host.stop()


# ---- the host's conversion, unit by unit ---------------------------------------------------------


def test_the_host_lower_cases_header_names_and_joins_repeated_headers() -> None:
    request = to_rpc_http(
        "GET",
        "http://h/api/x",
        [("X-Custom-Header", "A"), ("Accept", "text/html"), ("accept", "application/json"), ("X-Empty", "")],
        b"",
    )
    assert request.headers == {"x-custom-header": "A", "accept": "text/html,application/json"}


def test_the_host_drops_empty_query_values_and_joins_repeated_keys() -> None:
    request = to_rpc_http("GET", "http://h/api/x?a=1&a=2&empty=&flag&b=x%20y&plus=a+b&blank=&blank=", [], b"")
    assert request.query == {"a": "1,2", "b": "x y", "plus": "a b"}


def test_the_host_sends_the_body_as_bytes_only_when_there_is_one() -> None:
    assert not to_rpc_http("GET", "http://h/api/x", [], b"").HasField("body")
    posted = to_rpc_http("POST", "http://h/api/x", [], b'{"a": 1}', {"id": "7"})
    assert posted.body.WhichOneof("data") == "bytes"
    assert posted.body.bytes == b'{"a": 1}'
    assert posted.params == {"id": "7"}


def test_protocol_messages_behave_like_protobuf_where_the_library_relies_on_it() -> None:
    data = protos.TypedData(string="x")
    assert data.WhichOneof("data") == "string"
    data.bytes = b"y"  # setting another member of the oneof clears the first
    assert data.WhichOneof("data") == "bytes"
    assert data.string == ""
    empty = protos.InvocationResponse(return_value=None)
    assert not empty.HasField("return_value")
    assert empty.return_value.WhichOneof("data") is None  # an unset sub-message reads as an empty one
    assert protos.StatusResult(status=protos.StatusResult.Success).status == 1
    assert getattr(protos.BindingInfo, "in") == 0 and protos.BindingInfo.out == 1
    with pytest.raises(AttributeError):
        protos.RpcHttp(no_such_field="x")


# ---- through the runtime, over HTTP --------------------------------------------------------------


def test_a_get_arrives_as_the_host_converts_it(echo_host: AppHost) -> None:
    response = httpx.get(
        f"{echo_host.url}/v1/echo/a%20b/3?a=1&a=2&empty=&flag&b=x",
        headers=[("X-Custom-Header", "A"), ("X-Multi", "1"), ("X-Multi", "2")],
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"  # the runtime drops the charset
    seen = response.json()
    assert seen["method"] == "GET"
    assert seen["params"] == {"a": "1,2", "b": "x"}
    assert seen["route"] == {"id": "a b", "part": "3"}
    assert seen["headers"]["x-custom-header"] == "A"
    assert seen["headers"]["x-multi"] == "1,2"
    assert seen["body"] == ""
    assert seen["url"].endswith("/v1/echo/a%20b/3?a=1&a=2&empty=&flag&b=x")


def test_a_post_body_arrives_unchanged(echo_host: AppHost) -> None:
    body = '{"name": "Fabrikam", "é": [1, 2]}'
    response = httpx.post(f"{echo_host.url}/v1/echo/abc", content=body.encode(), headers={"Content-Type": "text/x"})
    assert response.json()["body"] == body
    assert response.json()["route"] == {"id": "abc"}


def test_a_chunked_or_encoded_body_is_handed_over_as_it_came(echo_host: AppHost) -> None:
    chunks = [b'{"part": 1, ', b'"part2": "\xc3\xa9"}']
    chunked = httpx.post(f"{echo_host.url}/v1/echo/abc", content=iter(chunks))  # Transfer-Encoding: chunked
    assert chunked.json()["body"] == b"".join(chunks).decode()
    # the host does not decode a Content-Encoding: what the caller sent is what the function gets
    encoded = httpx.post(f"{echo_host.url}/v1/echo/abc", content=b"plain", headers={"Content-Encoding": "gzip"})
    assert encoded.status_code == 200 and encoded.json()["body"] == "plain"


def test_a_body_over_the_hosts_limit_is_refused_before_it_is_read(echo_host: AppHost) -> None:
    from devhost.server import MAX_BODY

    host, port = echo_host.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"POST /v1/echo/abc HTTP/1.1\r\nHost: {host}\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(4096):  # the host closes the connection after its answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_unknown_routes_and_other_methods_are_empty_404s(echo_host: AppHost) -> None:
    for response in (
        httpx.get(f"{echo_host.url}/api/echo/abc"),  # the app's prefix is v1
        httpx.get(f"{echo_host.url}/v1/nothing"),
        httpx.delete(f"{echo_host.url}/v1/echo/abc"),
        httpx.post(f"{echo_host.url}/v1/fails"),
    ):
        assert (response.status_code, response.content) == (404, b"")


def test_a_function_that_raises_is_an_empty_500(echo_host: AppHost) -> None:
    response = httpx.get(f"{echo_host.url}/v1/fails")
    assert (response.status_code, response.content) == (500, b"")


def test_the_admin_api_runs_a_timer_function_through_the_runtime(echo_host: AppHost) -> None:
    admin = f"{echo_host.url}/admin/functions/nightly"
    refused = httpx.post(admin, json={"input": ""}, headers={"Host": "attacker.example"})
    assert refused.status_code == 403
    assert httpx.post(f"{echo_host.url}/admin/functions/logs", json={"input": ""}).status_code == 404  # HTTP
    assert httpx.post(f"{echo_host.url}/admin/functions/nothing", json={"input": ""}).status_code == 404
    accepted = httpx.post(admin, json={"input": ""})
    assert (accepted.status_code, accepted.content) == (202, b"")
    deadline = time.monotonic() + 10
    while "nightly ran" not in echo_host.log_file.read_text():
        assert time.monotonic() < deadline, echo_host.log_file.read_text()
        time.sleep(0.05)
    line = next(x for x in echo_host.log_file.read_text().splitlines() if "nightly ran" in x)
    assert line.startswith("[nightly ") and line.endswith("past due False")


def test_only_records_of_the_invocations_own_thread_are_tied_to_it(echo_host: AppHost) -> None:
    assert httpx.get(f"{echo_host.url}/v1/logs").text == "logged"
    httpx.get(f"{echo_host.url}/v1/fails")
    console = echo_host.stop()
    own = next(line for line in console.splitlines() if "line from the invocation's thread" in line)
    other = next(line for line in console.splitlines() if "line from a thread of the app's own" in line)
    assert own.startswith("[logs ")
    assert other.startswith("[no invocation]")
    assert "RuntimeError: the function failed on purpose" in console


def test_an_app_the_runtime_cannot_index_is_refused_whole(tmp_path: Path) -> None:
    app_dir = _write_app(tmp_path / "app", BROKEN_APP)
    process = _devhost_process(app_dir, tmp_path / "console.log")
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "serving" not in out
    refusal = (tmp_path / "console.log").read_text()
    assert 'Python return annotation "dict" does not match binding type "http"' in refusal


# ---- the product's own records ---------------------------------------------------------------------


def test_attribution_follows_the_invocation_task_and_the_runtime_thread() -> None:
    from azure_functions_runtime import invocation_id_cv

    seen: dict[str, str | None] = {}

    def runtime_thread() -> None:
        invocation_id_cv.set("inv-1")
        seen["runtime thread"] = attribution()
        helper = threading.Thread(target=lambda: seen.setdefault("plain thread", attribution()))
        helper.start()
        helper.join()

    thread = threading.Thread(target=runtime_thread)
    thread.start()
    thread.join()
    assert seen == {"runtime thread": "inv-1", "plain thread": None}
    assert attribution() is None


def test_every_record_of_a_request_belongs_to_its_invocation_and_names_the_request(
    service: Service, log_lines: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import extensions.sales_highlights

    service.load([attached("emailSummary", id="e1", record_id="opp-1", contact="a@fabrikam.example")])
    record = {"recordType": "opportunity", "recordId": "opp-1"}
    email = {
        "resourceData": {
            "subject": "s",
            "plaintextBody": "b",
            "from": "a@fabrikam.example",
            "to": ["c@contoso.example"],
        },
        "relatedEntities": [{"entityId": "opp-1", "entityType": "opportunity", "entitySource": "connected"}],
    }
    log_lines.clear()
    statuses = {
        "req-ok": service.get("/api/enhanceskills/sales-highlights", record, **{"x-ms-client-request-id": "req-ok"}),
        "req-email": service.post(
            "/api/enhanceskills/email-insights-v2", email, **{"x-ms-client-request-id": "req-email"}
        ),
        "req-401": service.client.get(
            "/api/enhanceskills/sales-highlights", params=record, headers={"x-ms-client-request-id": "req-401"}
        ),
        "req-403": service.get(
            "/api/enhanceskills/sales-highlights",
            record,
            token=service.token(tenant=TENANT_OUTSIDE),
            **{"x-ms-client-request-id": "req-403"},
        ),
        "req-400": service.get(
            "/api/enhanceskills/sales-highlights", {"recordId": "x"}, **{"x-ms-client-request-id": "req-400"}
        ),
    }

    def broken(*args: object) -> None:
        raise RuntimeError("a bug in a handler")

    monkeypatch.setattr(extensions.sales_highlights, "record_page", broken)
    statuses["req-500"] = service.get(
        "/api/enhanceskills/sales-highlights", record, **{"x-ms-client-request-id": "req-500"}
    )
    service.set(AUTH_AUTHORITY="http://127.0.0.1:9")  # nothing listens: the key fetch fails
    statuses["req-503"] = service.get(
        "/api/enhanceskills/sales-highlights", record, **{"x-ms-client-request-id": "req-503"}
    )
    assert {k: r.status_code for k, r in statuses.items()} == {
        "req-ok": 200,
        "req-email": 200,
        "req-401": 401,
        "req-403": 403,
        "req-400": 400,
        "req-500": 500,
        "req-503": 503,
    }

    app_records = [r for r in log_lines.records if r.name == "c4s" or r.name.startswith("c4s.")]
    assert any(r.levelno == logging.WARNING for r in app_records)
    assert any(r.exc_info for r in app_records)  # the 500's traceback
    assert any(r.name == "c4s.auth" for r in app_records)  # logged where the key fetch failed
    invocation_of: dict[str, str] = {}
    for r in app_records:
        request_ids = [rid for rid in statuses if f"[{rid}]" in r.getMessage()]
        assert len(request_ids) == 1, r.getMessage()
        assert r.invocation_id is not None, f"untied: {r.getMessage()}"  # type: ignore[attr-defined]
        assert invocation_of.setdefault(request_ids[0], r.invocation_id) == r.invocation_id  # type: ignore[attr-defined]
    assert set(invocation_of) == set(statuses)
    assert len(set(invocation_of.values())) == len(statuses)
