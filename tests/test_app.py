"""The FunctionApp itself: imports cleanly with no settings and no network, registers one
anonymous trigger per operation, and the dev host serves exactly what the app registers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from devhost.server import DevHost, functions_of, route_prefix, routes_of

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
# what the first request needs, not the import: settings model, token and HTTP libraries
print(sorted(m for m in ("pydantic_settings", "jwt", "httpx", "azure.data.tables") if m in sys.modules))
"""


def test_importing_the_app_needs_no_settings_and_no_network() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "INSIGHTS_"))}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["8", "[]"]


def test_triggers_are_anonymous_and_unique() -> None:
    from function_app import app

    functions = functions_of(app)
    names = [f.get_function_name() for f in functions]
    assert len(names) == len(set(names)) == 8
    for function in functions:
        binding = json.loads(str(function))["bindings"][0]
        assert binding["authLevel"] == "ANONYMOUS"


def test_dev_host_routes_come_from_the_app_and_host_json() -> None:
    from function_app import app

    assert route_prefix() == json.loads((ROOT / "host.json").read_text())["extensions"]["http"]["routePrefix"]
    routes = {(r.template, tuple(sorted(r.methods))) for r in routes_of(app, "api")}
    assert routes == {
        ("api/enhanceskills/related-records", ("GET",)),
        ("api/enhanceskills/sales-highlights", ("GET",)),
        ("api/enhanceskills/activities", ("GET",)),
        ("api/enhanceskills/email-insights-v2", ("POST",)),
        ("api/enhanceskills/content-suggestions", ("POST",)),
        ("api/diagnostics/testconnection", ("GET",)),
        ("api/ingest/documents", ("POST",)),
        ("api/ingest/delete", ("POST",)),
    }


def test_dev_host_serves_route_parameters_and_a_custom_prefix() -> None:
    import azure.functions as func
    import httpx

    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="items/{id}/parts/{part:int?}", methods=["GET"])
    def item(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(
            json.dumps({"route": dict(req.route_params), "q": dict(req.params)}), mimetype="application/json"
        )

    with DevHost(app, port=0, prefix="v1") as host:
        response = httpx.get(f"{host.base_url}/v1/items/a%20b/parts/3", params={"x": "1"})
        assert response.json() == {"route": {"id": "a b", "part": "3"}, "q": {"x": "1"}}
        assert httpx.get(f"{host.base_url}/api/items/a/parts/3").status_code == 404
        assert httpx.post(f"{host.base_url}/v1/items/a/parts/3").status_code == 405
