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
sys.path.insert(0, sys.argv[1])
from shared import telemetry

with telemetry.request_span(
    "scp-get-sales-highlights",
    {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
    {"c4s.request_id": "r-1"},
) as span:
    trace_id = format(span.get_span_context().trace_id, "032x")
from opentelemetry import trace

trace.get_tracer_provider().force_flush()
import gzip
import time


def exported_bodies() -> list[bytes]:
    return [gzip.decompress(b) if b[:2] == b"\x1f\x8b" else b for _, b in list(received)]


def has_span() -> bool:
    return any(b"4bf92f3577b34da6a3ce929d0e0e4736" in b and b"scp-get-sales-highlights" in b for b in exported_bodies())


for _ in range(100):  # the exporter sends from its own thread
    if has_span():
        break
    time.sleep(0.1)
print(
    json.dumps(
        {
            "enabled": telemetry.enabled(),
            "trace_id": trace_id,
            "exported": has_span(),
            "paths": sorted({p for p, _ in received}),
        }
    )
)
