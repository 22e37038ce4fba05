"""Run in its own process by test_resilience: requests through the dev host, and so through the
Functions runtime library with PYTHON_ENABLE_OPENTELEMETRY on (as Azure runs the app), export their
telemetry to a loopback Application Insights receiver; report what arrived (only loopback sockets
are allowed). Storage and identity are the parent test's (Azurite, the loopback authority); its
settings and a token come in the environment."""

import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

real = socket.socket.connect


def guard(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "localhost", "::1"):
        print("refused", address, file=sys.stderr)
        raise ConnectionRefusedError(address[0])
    return real(self, address)


socket.socket.connect = guard
received = []


class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"itemsReceived": 1, "itemsAccepted": 1, "errors": []}')

    def log_message(self, *a):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=server.serve_forever, daemon=True).start()
os.environ["APPLICATIONINSIGHTS_CONNECTION_STRING"] = (
    f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:{server.server_address[1]}/"
)
os.environ["APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL"] = "true"
os.environ["APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED"] = "true"  # the SDK's own settings fetch leaves the machine
os.environ["PYTHON_ENABLE_OPENTELEMETRY"] = "true"  # the worker's switch: it attaches the host's invocation context
sys.path.insert(0, sys.argv[1])
import gzip
import http.client
import logging
import time
from pathlib import Path

from devhost.server import DevHost

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
UNSAMPLED_TRACE = "0af7651916cd43dd8448eb211c80319c"
host_traceparents: list[str] = []


class HostLog(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("Executing 'Functions."):
            host_traceparents.append(record.getMessage().rsplit(" ", 1)[1].rstrip(")"))


logging.getLogger().setLevel(logging.INFO)  # as Azure's proxy worker sets the root logger
devhost_log = logging.getLogger("devhost")
devhost_log.setLevel(logging.DEBUG)
devhost_log.addHandler(HostLog())
with DevHost(Path(sys.argv[1]), port=0) as host:
    configured_at_start = "azure.monitor.opentelemetry" in sys.modules  # not inside the first request
    # http.client: the distro instruments httpx and urllib, whose spans would replace our traceparents
    caller = http.client.HTTPConnection("127.0.0.1", int(host.base_url.rsplit(":", 1)[1]), timeout=30)
    for name, headers in (
        ("traced-by-caller", {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}),
        ("not-traced-by-caller", {"traceparent": f"00-{UNSAMPLED_TRACE}-b7ad6b7169203331-00"}),
        ("no-traceparent", {}),
    ):
        headers = {"Authorization": f"Bearer {os.environ['PROBE_TOKEN']}", "x-ms-client-request-id": name, **headers}
        caller.request(
            "GET", "/api/enhanceskills/sales-highlights?recordType=opportunity&recordId=opp-1", headers=headers
        )
        started = time.monotonic()
        response = caller.getresponse()
        assert response.status == 200, response.read()
        print(f"{name}: {time.monotonic() - started:.3f} s", file=sys.stderr)
        response.read()
    caller.close()

from opentelemetry import _logs, trace

trace.get_tracer_provider().force_flush()
_logs.get_logger_provider().force_flush()


def envelopes() -> list[dict]:
    out = []
    for _, body in list(received):
        body = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
        for e in json.loads(body):  # the exporter posts one JSON array of envelopes
            base = e["data"]["baseData"]
            out.append(
                {
                    "kind": e["name"].rsplit(".", 1)[-1],
                    "id": base.get("id"),
                    "name": base.get("name"),
                    "type": base.get("type"),
                    "target": base.get("target"),
                    "message": base.get("message"),
                    "operation_id": e["tags"].get("ai.operation.id"),
                    "parent_id": e["tags"].get("ai.operation.parentId"),
                }
            )
    return out


def summaries() -> int:
    return sum(1 for e in envelopes() if e["kind"] == "Message" and "request_id=" in (e["message"] or ""))


deadline = time.monotonic() + 60  # the exporter sends from its own threads
while time.monotonic() < deadline and summaries() < 3:
    time.sleep(0.1)
time.sleep(1)
print(
    json.dumps(
        {
            "configured_at_start": configured_at_start,
            "host_traceparents": host_traceparents,
            "envelopes": envelopes(),
        }
    )
)
