"""The contract check, run against the local dev host, and against an instance that breaks it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import Service, attached, doc

ROOT = Path(__file__).resolve().parent.parent


def run_check(base_url: str, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "check",
            "--base-url",
            base_url,
            "--record-id",
            "opp-1",
            "--token",
            token,
            *extra,
        ],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_operation_of_the_dev_host_is_conformant(service: Service) -> None:
    service.load(
        [
            doc(id="h1"),
            doc("recordDetails", id="r1"),
            attached("recordSummary", id="a1", record_id="opp-1"),
            attached("emailSummary", id="e1", record_id="opp-1"),
            attached("emailDraftFiles", id="f1", contact="megan@fabrikam.example"),
        ]
    )
    result = run_check(service.url, service.token(), "--participant", "megan@fabrikam.example")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for operation_id in (
        "scp-get-related-records",
        "scp-get-sales-highlights",
        "scp-get-related-activities",
        "scp-get-email-insights-v2",
        "scp-get-content-suggestions",
        "TestConnection",
    ):
        row = next(line for line in lines if line.startswith(operation_id))
        assert row.split()[1] == "200" and row.endswith("conformant"), row
    assert "6 conformant, 0 failing" in result.stdout


def test_a_bad_token_fails_the_check(service: Service) -> None:
    result = run_check(service.url, "not-a-token")
    assert result.returncode == 1
    assert "status 401" in result.stdout


class _Broken(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "testconnection" in self.path:
            body, ctype = b"ok", "text/plain"
        elif "sales-highlights" in self.path:
            body, ctype = (
                json.dumps(
                    {
                        "value": [
                            {
                                "title": "A title far longer than twenty",
                                "description": "x",
                                "dateTime": "2025-01-01T00:00:00+01:00",
                            }
                        ],
                        "hasMoreResults": False,
                    }
                ).encode(),
                "application/json",
            )
        elif "related-records" in self.path:
            body, ctype = (
                json.dumps({"value": [{"recordId": "", "recordType": "quote"}], "hasMoreResults": False}).encode(),
                "application/json",
            )
        elif "content-suggestions" in self.path:
            body, ctype = (
                json.dumps(
                    {
                        "value": [{"contentType": 0, "content": "x", "contentTitle": "t", "contentDescription": "d"}],
                        "hasMoreResults": False,
                    }
                ).encode(),
                "application/json",
            )
        else:
            body, ctype = json.dumps({"items": []}).encode(), "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def broken_instance() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_instance_that_breaks_the_contract_fails(broken_instance: str) -> None:
    result = run_check(broken_instance, "any-token")
    assert result.returncode == 1
    out = result.stdout
    assert "0 conformant, 6 failing" in out
    assert "value.0.title" in out and "20 characters" in out
    assert "value.0.recordId" in out
    assert "value.0.contentType" in out
    assert "envelope" in out
    assert "not application/json" in out
