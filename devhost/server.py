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

import asyncio
import ipaddress
import json
import logging
import re
import secrets
import socket
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from aiohttp import web
from multidict import CIMultiDict

from devhost import protos
from devhost.worker import IndexedFunction, RuntimeWorker

__all__ = [
    "DevHost",
    "ExtraRoute",
    "Reply",
    "Route",
    "function_timeout",
    "is_loopback_host",
    "route_prefix",
    "routes_of",
    "to_rpc_http",
]

log = logging.getLogger("devhost")
ROOT = Path(__file__).resolve().parent.parent
MAX_BODY = 64 * 1024 * 1024
MAX_HEADER_LINE = 64 * 1024
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


class Reply:
    """What an extra route (the local preview's pages and data) answers: it calls `send_bytes`."""

    def __init__(self) -> None:
        self.status, self.body, self.headers = 500, b"", CIMultiDict[str]()

    def send_bytes(
        self, status: int, body: bytes, content_type: str | None, headers: dict[str, str] | None = None
    ) -> None:
        self.status, self.body = status, body
        if content_type:
            self.headers["Content-Type"] = content_type
        self.headers.extend(headers or {})


ExtraRoute = Callable[[Reply, str, bytes], None]
"""A page of the dev host's own (not a function): called on a thread with the query string and
the body; it answers through `Reply.send_bytes`."""


def _answer(status: int, body: bytes = b"", content_type: str | None = None, headers: Any = None) -> web.Response:
    """A response as written: the status, these headers, the body (no default content type)."""
    response = web.Response(status=status, body=body, headers=headers)
    if content_type:
        response.headers["Content-Type"] = content_type
    return response


class _TooLarge(Exception):
    pass


async def _read_body(request: web.BaseRequest) -> bytes:
    if (request.content_length or 0) > MAX_BODY:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > MAX_BODY:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class DevHost:
    """Serve the function app in `directory` on `host:port` (port 0 picks a free one). Use as a
    context manager or call `start()`/`stop()`; `serve_forever()` blocks.

    The HTTP front is asynchronous and serves on the worker's event loop, where invocations run,
    as the Functions host's front (Kestrel) is asynchronous: a connection waiting for its answer
    holds no thread, and a request goes to the runtime library without a hop between threads.
    The runtime library indexes the app once per process (its state is module-global); several
    DevHosts in one process share that one worker."""

    BACKLOG = 128

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
        self.function_timeout = function_timeout(directory)
        self.extra_routes = extra_routes or {}
        self._socket = socket.create_server((host, port), backlog=self.BACKLOG)  # bound now: base_url is known
        bound_host, bound_port = self._socket.getsockname()[:2]
        self.authority = f"{bound_host!s}:{bound_port}"
        self._runner: web.ServerRunner | None = None
        self._pages = ThreadPoolExecutor(max_workers=4, thread_name_prefix="devhost-page")
        self._background: set[asyncio.Task[None]] = set()
        self._stopped = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://{self.authority}"

    def start(self) -> DevHost:
        async def serve() -> web.ServerRunner:
            server = web.Server(
                self._handle,
                access_log=None,
                auto_decompress=False,  # the host hands the worker the body as it came
                max_line_size=MAX_HEADER_LINE,
                max_field_size=MAX_HEADER_LINE,
                lingering_time=0,  # a body refused unread is not drained: the connection closes
            )
            runner = web.ServerRunner(server, handle_signals=False)
            await runner.setup()
            await web.SockSite(runner, self._socket, backlog=self.BACKLOG).start()
            return runner

        if self._runner is None:
            self._runner = self.worker.run(serve())
        return self

    def serve_forever(self) -> None:
        self.start()
        self._stopped.wait()

    def stop(self) -> None:
        if self._runner is not None:
            self.worker.run(self._runner.cleanup(), timeout=10)
            self._runner = None
        self._socket.close()
        self._pages.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()

    def __enter__(self) -> DevHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        target = request.raw_path  # the request target as sent: path and query
        parts = urlsplit(target)
        path = parts.path.strip("/")
        try:
            body = await _read_body(request)
        except _TooLarge:
            response = _answer(413, b"", "text/plain")
            response.force_close()
            return response
        extra = self.extra_routes.get(path)
        if extra is not None:
            # The preview mints tokens and lists records: a page on another site must not reach
            # it through DNS rebinding, so only a request addressed to a loopback name gets in.
            if not is_loopback_host(request.headers.get("Host") or ""):
                return _answer(403, b"the local preview answers only requests to localhost", "text/plain")
            reply = Reply()
            await asyncio.get_running_loop().run_in_executor(self._pages, extra, reply, parts.query, body)
            return _answer(reply.status, reply.body, None, reply.headers)
        if path.startswith(ADMIN_PREFIX) and request.method == "POST":
            return self._admin_invoke(request, unquote(path.removeprefix(ADMIN_PREFIX)), body)
        for route in self.routes:
            match = route.pattern.match(path)
            if match and route.allows(request.method):
                params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                return await self._invoke(request, route, target, body, params)
        return _answer(404)

    def _admin_invoke(self, request: web.BaseRequest, name: str, body: bytes) -> web.Response:
        """`POST /admin/functions/{name}` as the host answers it: a non-HTTP function is run now
        with `{"input": ...}` as its trigger's input (a timer gets a timer's payload), 202 at once.
        Loopback only; the host asks for the master key, which the dev host does not have."""
        if not is_loopback_host(request.headers.get("Host") or ""):
            return _answer(403)
        function = next((f for f in self.worker.functions if f.name.lower() == name.lower()), None)
        if function is None or function.trigger.get("type") == "httpTrigger":
            return _answer(404)
        try:
            payload = json.loads(body or b"{}")
            text = str(payload.get("input", "")) if isinstance(payload, dict) else ""
        except ValueError:
            return _answer(400)
        if function.trigger.get("type") == "timerTrigger":
            data = protos.TypedData(json=json.dumps({"Schedule": {"AdjustForDST": True}, "IsPastDue": False}))
        else:
            data = protos.TypedData(string=text)
        binding = protos.ParameterBinding(name=function.trigger["name"], data=data)

        async def run() -> None:
            try:
                response = await self.worker.invoke(
                    function, [binding], trace_parent=invocation_traceparent(None), timeout=self.function_timeout
                )
            except TimeoutError as exc:
                log.error("Executed 'Functions.%s' (Failed): %s", function.name, exc)
                return
            if response.result.status != protos.StatusResult.Success:
                log.error("Executed 'Functions.%s' (Failed): %s", function.name, response.result.exception.message)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)  # held until it ends: the loop keeps only a weak reference
        task.add_done_callback(self._background.discard)
        return _answer(202)

    async def _invoke(
        self, request: web.BaseRequest, route: Route, target: str, body: bytes, params: dict[str, str]
    ) -> web.Response:
        url = f"http://{request.headers.get('Host') or self.authority}{target}"
        rpc = to_rpc_http(request.method, url, request.headers.items(), body, params)
        binding = protos.ParameterBinding(name=route.function.trigger["name"], data=protos.TypedData(http=rpc))
        traceparent = invocation_traceparent(request.headers.get("traceparent"))
        log.debug("Executing 'Functions.%s' (traceparent %s)", route.name, traceparent)
        try:
            response = await self.worker.invoke(
                route.function,
                [binding],
                trace_parent=traceparent,
                trace_state=request.headers.get("tracestate") or "",
                timeout=self.function_timeout,
            )
        except TimeoutError as exc:
            log.error("Executed 'Functions.%s' (Failed): %s", route.name, exc)
            return _answer(500)
        if response.result.status != protos.StatusResult.Success:
            exception = response.result.exception
            log.error(
                "Executed 'Functions.%s' (Failed, Id=%s): %s\n%s",
                route.name,
                response.invocation_id,
                exception.message,
                exception.stack_trace,
            )
            return _answer(500)
        value = response.return_value
        if value.WhichOneof("data") != "http":  # a function that returns a plain value
            return _answer(200, _body_bytes(value), "text/plain; charset=utf-8")
        http = value.http
        headers = {k: v for k, v in http.headers.items() if k.lower() != "content-length"}
        return _answer(int(http.status_code or 200), _body_bytes(http.body), None, headers)
