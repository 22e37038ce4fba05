"""Run in its own process by test_resilience: export one request span to a loopback
Application Insights receiver and report what arrived (only loopback sockets are allowed)."""

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
sys.path.insert(0, sys.argv[1])
import gzip
import logging
import time

from shared import telemetry

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
UNSAMPLED_TRACE = "0af7651916cd43dd8448eb211c80319c"
spans = {}
for name, headers in (
    ("traced-by-caller", {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}),
    ("not-traced-by-caller", {"traceparent": f"00-{UNSAMPLED_TRACE}-b7ad6b7169203331-00"}),
    ("no-traceparent", {}),
):
    with telemetry.request_span(name, headers, {"c4s.request_id": name}) as span:
        spans[name] = format(span.get_span_context().trace_id, "032x")
        logging.getLogger("c4s.app").warning("summary line of %s", name)

from opentelemetry import _logs, trace

trace.get_tracer_provider().force_flush()
_logs.get_logger_provider().force_flush()


def envelopes() -> list[dict]:
    out = []
    for _, body in list(received):
        body = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
        out.extend(json.loads(body))  # the exporter posts one JSON array of envelopes
    return out


def requests() -> dict[str, dict]:
    return {
        e["data"]["baseData"]["name"]: {
            "operation_id": e["tags"].get("ai.operation.id"),
            "parent_id": e["tags"].get("ai.operation.parentId"),
        }
        for e in envelopes()
        if e["name"].endswith(".Request")
    }


def messages() -> list[str]:
    return sorted(e["data"]["baseData"]["message"] for e in envelopes() if e["name"].endswith(".Message"))


deadline = time.monotonic() + 60  # the exporter sends from its own threads
while time.monotonic() < deadline:
    if {"traced-by-caller", "no-traceparent"} <= requests().keys() and len(messages()) >= 3:
        break
    time.sleep(0.1)
print(
    json.dumps(
        {
            "enabled": telemetry.enabled(),
            "trace_ids": spans,
            "requests": requests(),
            "messages": messages(),
            "paths": sorted({p for p, _ in received}),
        }
    )
)
