"""The FunctionApp itself: imports cleanly with no settings and no network, and the Functions
runtime library indexes it into one anonymous HTTP trigger per operation, which the dev host
serves and nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from devhost.server import DevHost, route_prefix

ROOT = Path(__file__).resolve().parent.parent

IMPORT_PROBE = """
import socket, sys
def refuse(*a, **k):
    raise SystemExit("import touched the network")
socket.socket.connect = refuse
socket.create_connection = refuse
import function_app
fs = function_app.app.get_functions()
print(len(fs))
# what the first request needs, not the import: settings model, token and HTTP libraries; and
# what no reader's request needs at all: the document model of the write path, the models of the
# ingestion API and of the chat tools (imported on their first call)
lazy = (
    "pydantic_settings", "jwt", "httpx", "aiohttp", "azure.data.tables", "shared.auth", "shared.documents",
    "ingestion.models", "chat.models", "chat._mcp", "mcp", "starlette",
)
print(sorted(m for m in lazy if m in sys.modules))
# and no model of ours has built its validator yet (pydantic's defer_build: on first use)
from pydantic import BaseModel
def subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)
ours = {m for m in subclasses(BaseModel) if m.__module__.split(".")[0] in ("shared", "extensions", "chat", "ingestion")}
print(len(ours) > 10, sorted(m.__name__ for m in ours if m.__pydantic_complete__))
"""


def test_importing_the_app_needs_no_settings_and_no_network() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "INSIGHTS_"))}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["13", "[]", "True []"]


def test_the_runtime_indexes_anonymous_unique_http_triggers_and_the_purge_timer(devhost: DevHost) -> None:
    functions = devhost.worker.functions
    names = [f.name for f in functions]
    assert len(names) == len(set(names)) == 13
    timers = [f for f in functions if f.trigger["type"] == "timerTrigger"]
    assert [(f.name, f.trigger["schedule"]) for f in timers] == [("purge_expired", "%PURGE_SCHEDULE%")]
    assert "PURGE_SCHEDULE" in json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    for function in functions:
        if function in timers:
            continue
        assert function.trigger["type"] == "httpTrigger"
        assert function.trigger["authLevel"] == "ANONYMOUS"
        assert [b["name"] for b in function.bindings if b["direction"] == "OUT"] == ["$return"]


def test_dev_host_routes_come_from_the_runtime_and_host_json(devhost: DevHost) -> None:
    assert route_prefix() == json.loads((ROOT / "host.json").read_text())["extensions"]["http"]["routePrefix"]
    routes = {(r.template, tuple(sorted(r.methods or ()))) for r in devhost.routes}
    assert routes == {
        ("api/enhanceskills/related-records", ("GET",)),
        ("api/enhanceskills/sales-highlights", ("GET",)),
        ("api/enhanceskills/activities", ("GET",)),
        ("api/enhanceskills/email-insights-v2", ("POST",)),
        ("api/enhanceskills/content-suggestions", ("POST",)),
        ("api/diagnostics/testconnection", ("GET",)),
        ("api/ingest/documents", ("POST",)),
        ("api/ingest/delete", ("POST",)),
        ("api/chat/records", ("GET",)),
        ("api/chat/record-insights", ("GET",)),
        ("api/mcp", ("DELETE", "GET", "POST")),
        ("api/.well-known/oauth-protected-resource/mcp", ("GET",)),
    }


def test_the_connector_reads_the_same_functions_as_the_runtime(devhost: DevHost) -> None:
    from tools.contract_check import registered_operations

    served = {(sorted(r.methods or ())[0], r.template) for r in devhost.routes}
    declared = {(method, path) for method, path, _ in registered_operations()}
    assert declared and declared <= served
    assert {path for _, path in served - declared} == {
        "api/ingest/documents",
        "api/ingest/delete",
        "api/chat/records",
        "api/chat/record-insights",
        "api/mcp",
        "api/.well-known/oauth-protected-resource/mcp",
    }


def test_telemetry_follows_the_functions_opentelemetry_guidance() -> None:
    """The host records each invocation (telemetryMode OpenTelemetry); the worker attaches the
    host's invocation context for the app's spans (PYTHON_ENABLE_OPENTELEMETRY); the worker does
    not set up a second exporter of its own (the app configures Azure Monitor once)."""
    host = json.loads((ROOT / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert values["PYTHON_ENABLE_OPENTELEMETRY"] == "true"
    assert "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY" not in values
