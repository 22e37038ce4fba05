"""A small HTTP host that serves a `FunctionApp`'s own registered HTTP triggers.

Core Tools (`func start`) cannot be installed everywhere; this host reads the routes, methods and
the `host.json` route prefix from the app itself (no second route table) and calls the same
functions the Functions worker would, over real HTTP, one thread per connection.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func

__all__ = ["DevHost", "Route", "route_prefix", "routes_of"]

log = logging.getLogger("devhost")
ROOT = Path(__file__).resolve().parent.parent
MAX_BODY = 64 * 1024 * 1024


@dataclass(frozen=True)
class Route:
    name: str
    template: str
    methods: frozenset[str]
    pattern: re.Pattern[str]
    function: Callable[[func.HttpRequest], func.HttpResponse]


def route_prefix(host_json: Path = ROOT / "host.json") -> str:
    try:
        config = json.loads(host_json.read_text())
    except FileNotFoundError:
        return "api"
    return str(config.get("extensions", {}).get("http", {}).get("routePrefix", "api")).strip("/")


def _compile(template: str) -> re.Pattern[str]:
    regex = ""
    for literal, name in re.findall(r"([^{]*)(?:\{([^}]*)\})?", template):
        regex += re.escape(literal)
        if name:
            param = name.split(":")[0].rstrip("?")
            regex += f"(?P<{param}>[^/]+)"
    return re.compile(f"^{regex}$", re.IGNORECASE)


_functions: dict[int, tuple[func.FunctionApp, list[Any]]] = {}
_functions_lock = threading.Lock()


def functions_of(app: func.FunctionApp) -> list[Any]:
    """`app.get_functions()`, which raises when called twice on one app, called once and kept."""
    with _functions_lock:
        if id(app) not in _functions:
            _functions[id(app)] = (app, app.get_functions())
        return _functions[id(app)][1]


def routes_of(app: func.FunctionApp, prefix: str) -> list[Route]:
    """The app's HTTP triggers, read from the app itself: the one route table."""
    routes = []
    for function in functions_of(app):
        trigger = function.get_trigger()
        if trigger is None or getattr(trigger, "type", "") != "httpTrigger":
            continue
        name = str(function.get_function_name())
        template = str(getattr(trigger, "route", None) or name).strip("/")
        full = f"{prefix}/{template}" if prefix else template
        declared = getattr(trigger, "methods", None) or ["GET", "POST"]
        methods = frozenset(str(getattr(m, "value", m)).upper() for m in declared)
        routes.append(Route(name, full, methods, _compile(full), function.get_user_function()))
    return routes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s - %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path.strip("/")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(413, {"error": "body too large for the dev host"})
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        extra = self.server.extra_routes.get(path)
        if extra is not None:
            extra(self, parts.query, body)
            return
        allowed: set[str] = set()
        for route in self.server.routes:
            match = route.pattern.match(path)
            if not match:
                continue
            if self.command not in route.methods:
                allowed |= route.methods
                continue
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            request = func.HttpRequest(
                method=self.command,
                url=f"http://{self.headers.get('Host', 'localhost')}{self.path}",
                headers=dict(self.headers.items()),
                params=params,
                route_params={k: unquote(v) for k, v in match.groupdict().items() if v is not None},
                body=body,
            )
            try:
                response = route.function(request)
            except Exception:  # the Functions host would answer 500 too
                log.exception("function %s raised", route.name)
                self._send(500, {"error": "function raised"})
                return
            self._write(response)
            return
        if allowed:
            self._send(405, {"error": "method not allowed"}, {"Allow": ", ".join(sorted(allowed))})
        else:
            self._send(404, {"error": "no function at this route"})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def _write(self, response: func.HttpResponse) -> None:
        body = response.get_body() or b""
        self.send_response(response.status_code)
        content_type = response.mimetype or "text/plain"
        if response.charset:
            content_type += f"; charset={response.charset}"
        self.send_header("Content-Type", content_type)
        for name, value in response.headers.items():
            if name.lower() not in ("content-type", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers)

    def send_bytes(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ExtraRoute = Callable[[_Handler, str, bytes], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], routes: list[Route], extra_routes: dict[str, ExtraRoute]) -> None:
        self.routes = routes
        self.extra_routes = extra_routes
        super().__init__(address, _Handler)


class DevHost:
    """Serve `app` on `host:port` (port 0 picks a free one). Use as a context manager or call
    `start()`/`stop()`; `serve_forever()` blocks."""

    def __init__(
        self,
        app: func.FunctionApp,
        host: str = "127.0.0.1",
        port: int = 7071,
        prefix: str | None = None,
        extra_routes: dict[str, ExtraRoute] | None = None,
    ) -> None:
        self.routes = routes_of(app, route_prefix() if prefix is None else prefix)
        self._server = _Server((host, port), self.routes, extra_routes or {})
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> DevHost:
        self._thread = threading.Thread(target=self._server.serve_forever, name="devhost", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> DevHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
