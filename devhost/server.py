"""The dev host's HTTP front: it plays the Functions host for HTTP triggers.

Core Tools (`func start`) cannot be installed everywhere. This host asks the runtime library the
app pins which functions there are (`devhost.worker`: the library indexes `function_app.py`, as in
Azure), builds its route table from that metadata and the `host.json` route prefix, and turns
each HTTP request into one invocation request, converted the way the Functions host converts it:

* header names lower-cased; a header sent more than once is one value, joined with commas;
  headers with an empty value are left out;
* query values decoded; a key given more than once is one value, joined with commas; a key whose
  value is empty is left out;
* the body as bytes, only when there is one; route parameters by name;
* the trace context of the host's own span for the invocation (a child of the caller's
  `traceparent`), which the runtime attaches when `PYTHON_ENABLE_OPENTELEMETRY` is on.

What the library answers is written back as it is (status, headers, body). A function that fails
is an empty 500, an unknown route or a known route with another method an empty 404, as the
host answers them. `POST /admin/functions/{name}` runs a function without an HTTP trigger (a
timer, say) as the host's admin API does, from this machine only. Nothing here calls a user
function: every request goes through the runtime.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from devhost import protos
from devhost.worker import IndexedFunction, RuntimeWorker

__all__ = ["DevHost", "Route", "function_timeout", "is_loopback_host", "route_prefix", "routes_of", "to_rpc_http"]

log = logging.getLogger("devhost")
ROOT = Path(__file__).resolve().parent.parent
MAX_BODY = 64 * 1024 * 1024
ADMIN_PREFIX = "admin/functions/"
"""The host's admin API for running a function that has no HTTP trigger (a timer, say)."""
DEFAULT_FUNCTION_TIMEOUT = 30 * 60.0
"""Flex Consumption's default functionTimeout, for a host.json that sets none."""


@dataclass(frozen=True)
class Route:
    function: IndexedFunction
    template: str
    methods: frozenset[str] | None
    """None: every method (an HTTP trigger that names no methods)."""
    pattern: re.Pattern[str]

    @property
    def name(self) -> str:
        return self.function.name

    def allows(self, method: str) -> bool:
        return self.methods is None or method in self.methods


def _host_json(directory: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads((directory / "host.json").read_text())
    except FileNotFoundError:
        return {}
    return config


def route_prefix(directory: Path = ROOT) -> str:
    """`extensions.http.routePrefix` of the app's host.json (`api` when it sets none)."""
    http = _host_json(directory).get("extensions", {}).get("http", {})
    return str(http.get("routePrefix", "api")).strip("/")


def function_timeout(directory: Path = ROOT) -> float | None:
    """`functionTimeout` of the app's host.json in seconds; None for `-1` (no limit)."""
    value = str(_host_json(directory).get("functionTimeout", "") or "")
    if not value:
        return DEFAULT_FUNCTION_TIMEOUT
    if value.strip() == "-1":
        return None
    days, clock = value.split(".", 1) if "." in value.split(":")[0] else ("0", value)  # [d.]hh:mm:ss
    hours, minutes, seconds = (float(part) for part in clock.split(":"))
    return (float(days) * 24 + hours) * 3600 + minutes * 60 + seconds


def _compile(template: str) -> re.Pattern[str]:
    regex = ""
    for literal, name in re.findall(r"([^{]*)(?:\{([^}]*)\})?", template):
        regex += re.escape(literal)
        if name:
            param = name.split(":")[0].rstrip("?").lstrip("*")
            optional = name.endswith("?")
            if optional and regex.endswith("/"):
                regex = regex[:-1] + f"(?:/(?P<{param}>[^/]+))?"
            else:
                regex += f"(?P<{param}>[^/]+)" + ("?" if optional else "")
    return re.compile(f"^{regex}$", re.IGNORECASE)


def routes_of(functions: Iterable[IndexedFunction], prefix: str) -> list[Route]:
    """The HTTP triggers among the indexed functions, literal routes before parameterized ones."""
    routes = []
    for function in functions:
        trigger = function.trigger
        if trigger.get("type") != "httpTrigger":
            continue
        template = str(trigger.get("route") or function.name).strip("/")
        full = f"{prefix}/{template}" if prefix else template
        declared = trigger.get("methods")
        methods = frozenset(str(m).upper() for m in declared) if declared else None
        routes.append(Route(function, full, methods, _compile(full)))
    return sorted(routes, key=lambda r: r.template.count("{"))


def _joined(pairs: Iterable[tuple[str, str]], *, lower: bool = False) -> dict[str, str]:
    """A repeated name becomes one value, its non-empty values joined with commas (ASP.NET's
    StringValues); a name left with an empty value is dropped, as the host drops it."""
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        values = grouped.setdefault(name.lower() if lower else name, [])
        if value:
            values.append(value)
    return {name: ",".join(values) for name, values in grouped.items() if values}


def to_rpc_http(
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    route_params: dict[str, str] | None = None,
) -> protos.RpcHttp:
    """An HTTP request as the Functions host hands it to a worker."""
    return protos.RpcHttp(
        method=method,
        url=url,
        headers=_joined(headers, lower=True),
        query=_joined(parse_qsl(urlsplit(url).query, keep_blank_values=True)),
        params=route_params or {},
        body=protos.TypedData(bytes=body) if body else None,
    )


_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def invocation_traceparent(incoming: str | None) -> str:
    """The traceparent of the host's span for an invocation, which the host hands the worker:
    a child of the caller's valid `traceparent` (same trace, same sampling flags), else the root
    of a new, sampled trace."""
    match = _TRACEPARENT.match((incoming or "").strip().lower())
    if match and int(match.group(1), 16) and int(match.group(2), 16):
        trace_id, flags = match.group(1), match.group(3)
    else:
        trace_id, flags = secrets.token_hex(16), "01"
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"


def is_loopback_host(host: str) -> bool:
    """Whether a bind address or a `Host` header (port included or not) names this machine only."""
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:7071
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.split(":")[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _body_bytes(data: protos.TypedData) -> bytes:
    kind = data.WhichOneof("data")
    if kind in ("bytes", "stream"):
        return bytes(getattr(data, kind))
    if kind in ("string", "json"):
        return str(getattr(data, kind)).encode()
    return b""


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
            self.send_bytes(413, b"", "text/plain")
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        extra = self.server.extra_routes.get(path)
        if extra is not None:
            # The preview mints tokens and lists records: a page on another site must not reach
            # it through DNS rebinding, so only a request addressed to a loopback name gets in.
            if not is_loopback_host(self.headers.get("Host") or ""):
                self.send_bytes(403, b"the local preview answers only requests to localhost", "text/plain")
                return
            extra(self, parts.query, body)
            return
        if path.startswith(ADMIN_PREFIX) and self.command == "POST":
            self._admin_invoke(unquote(path.removeprefix(ADMIN_PREFIX)), body)
            return
        for route in self.server.routes:
            match = route.pattern.match(path)
            if match and route.allows(self.command):
                params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                self._invoke(route, body, params)
                return
        self.send_bytes(404, b"", None)

    def _admin_invoke(self, name: str, body: bytes) -> None:
        """`POST /admin/functions/{name}` as the host answers it: a non-HTTP function is run now
        with `{"input": ...}` as its trigger's input (a timer gets a timer's payload), 202 at once.
        Loopback only; the host asks for the master key, which the dev host does not have."""
        if not is_loopback_host(self.headers.get("Host") or ""):
            self.send_bytes(403, b"", None)
            return
        function = next((f for f in self.server.worker.functions if f.name.lower() == name.lower()), None)
        if function is None or function.trigger.get("type") == "httpTrigger":
            self.send_bytes(404, b"", None)
            return
        try:
            payload = json.loads(body or b"{}")
            text = str(payload.get("input", "")) if isinstance(payload, dict) else ""
        except ValueError:
            self.send_bytes(400, b"", None)
            return
        if function.trigger.get("type") == "timerTrigger":
            data = protos.TypedData(json=json.dumps({"Schedule": {"AdjustForDST": True}, "IsPastDue": False}))
        else:
            data = protos.TypedData(string=text)
        binding = protos.ParameterBinding(name=function.trigger["name"], data=data)
        worker, timeout = self.server.worker, self.server.function_timeout

        def run() -> None:
            try:
                response = worker.invoke(
                    function, [binding], trace_parent=invocation_traceparent(None), timeout=timeout
                )
            except TimeoutError as exc:
                log.error("Executed 'Functions.%s' (Failed): %s", function.name, exc)
                return
            if response.result.status != protos.StatusResult.Success:
                log.error("Executed 'Functions.%s' (Failed): %s", function.name, response.result.exception.message)

        threading.Thread(target=run, name=f"admin-{function.name}", daemon=True).start()
        self.send_bytes(202, b"", None)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def _invoke(self, route: Route, body: bytes, params: dict[str, str]) -> None:
        url = f"http://{self.headers.get('Host') or self.server.authority}{self.path}"
        request = to_rpc_http(self.command, url, self.headers.items(), body, params)
        binding = protos.ParameterBinding(name=route.function.trigger["name"], data=protos.TypedData(http=request))
        traceparent = invocation_traceparent(self.headers.get("traceparent"))
        log.debug("Executing 'Functions.%s' (traceparent %s)", route.name, traceparent)
        try:
            response = self.server.worker.invoke(
                route.function,
                [binding],
                trace_parent=traceparent,
                trace_state=self.headers.get("tracestate") or "",
                timeout=self.server.function_timeout,
            )
        except TimeoutError as exc:
            log.error("Executed 'Functions.%s' (Failed): %s", route.name, exc)
            self.send_bytes(500, b"", None)
            return
        if response.result.status != protos.StatusResult.Success:
            exception = response.result.exception
            log.error(
                "Executed 'Functions.%s' (Failed, Id=%s): %s\n%s",
                route.name,
                response.invocation_id,
                exception.message,
                exception.stack_trace,
            )
            self.send_bytes(500, b"", None)
            return
        self._write(response.return_value)

    def _write(self, value: protos.TypedData) -> None:
        if value.WhichOneof("data") != "http":  # a function that returns a plain value
            self.send_bytes(200, _body_bytes(value), "text/plain; charset=utf-8")
            return
        http = value.http
        headers = {k: v for k, v in http.headers.items() if k.lower() != "content-length"}
        self.send_bytes(int(http.status_code or 200), _body_bytes(http.body), None, headers)

    def send_bytes(
        self, status: int, body: bytes, content_type: str | None, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


ExtraRoute = Callable[[_Handler, str, bytes], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        worker: RuntimeWorker,
        routes: list[Route],
        function_timeout: float | None,
        extra_routes: dict[str, ExtraRoute],
    ) -> None:
        self.worker = worker
        self.routes = routes
        self.function_timeout = function_timeout
        self.extra_routes = extra_routes
        super().__init__(address, _Handler)
        host, port = self.server_address[:2]
        self.authority = f"{host!s}:{port}"


class DevHost:
    """Serve the function app in `directory` on `host:port` (port 0 picks a free one). Use as a
    context manager or call `start()`/`stop()`; `serve_forever()` blocks.

    The runtime library indexes the app once per process (its state is module-global); several
    DevHosts in one process share that one worker."""

    def __init__(
        self,
        directory: Path = ROOT,
        host: str = "127.0.0.1",
        port: int = 7071,
        prefix: str | None = None,
        extra_routes: dict[str, ExtraRoute] | None = None,
        allow_remote: bool = False,
    ) -> None:
        if not is_loopback_host(host):
            if not allow_remote:
                raise ValueError(
                    f"refusing to serve on {host}: the dev host is for this machine (allow_remote to bind beyond it)"
                )
            log.warning("the dev host is serving on %s: reachable beyond this machine, with no TLS", host)
        self.worker = RuntimeWorker.start(directory)
        self.routes = routes_of(self.worker.functions, route_prefix(directory) if prefix is None else prefix)
        self._server = _Server((host, port), self.worker, self.routes, function_timeout(directory), extra_routes or {})
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self._server.authority}"

    def start(self) -> DevHost:
        self._thread = threading.Thread(target=self._server.serve_forever, name="devhost", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        if self._thread:  # shutdown() waits for a serve_forever() that never ran otherwise
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> DevHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
