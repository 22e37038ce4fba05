"""The one request pipeline every trigger goes through.

    request id -> settings -> token -> inputs -> handler -> JSON response
                     \\_________ any failure -> ApiError, mapped in `_error_response` _/

An extension point file declares its request model, item model and async handler;
`operation(...)` turns the handler into the `async (func.HttpRequest) -> func.HttpResponse`
function the Functions worker runs on its event loop, and keeps the operation's description for
the connector generator. The whole handler runs under the request budget (`asyncio.timeout`).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import azure.functions as func
from pydantic import BaseModel, ValidationError

from shared.contract import ApiError, Page, parse_accept_language
from shared.contract.errors import (
    ApiException,
    InternalServerError,
    InvalidRequest,
    RequestThrottled,
    RequestTooLarge,
    ServiceUnavailable,
)
from shared.http._throttle import TenantThrottle
from shared.http.telemetry import invocation_span, trace_id_of
from shared.runtime import PerLoop, RequestLogger, clean_header_value, logger, request_deadline, request_scope
from shared.settings import get_settings
from shared.storage import InsightsStore, Kind, get_store, work_kind
from shared.storage.errors import OutOfTime, Overloaded, StorageError

if TYPE_CHECKING:
    from shared.auth import Principal, TokenValidator
    from shared.settings import Settings

__all__ = [
    "JSON_MIMETYPE",
    "Operation",
    "RequestContext",
    "get_throttle",
    "get_validator",
    "operation",
    "reset_refusal_log",
    "reset_throttle",
    "reset_validator",
    "unavailable",
    "validate_inputs",
]

JSON_MIMETYPE = "application/json"
REQUEST_ID_HEADER = "x-ms-client-request-id"


@dataclass
class RequestContext:
    request_id: str
    principal: Principal | None
    """None only for a `public` operation (no token asked)."""
    settings: Settings
    log: RequestLogger
    languages: list[str]
    headers: dict[str, str]
    started: float
    content_languages: list[str] = field(default_factory=list)
    url: str = ""
    """The request's URL, as the host gives it."""

    @property
    def tenant(self) -> str:
        return self.caller.tenant_id

    @property
    def caller(self) -> Principal:
        """The verified caller (every operation but a `public` one has one)."""
        if self.principal is None:
            raise RuntimeError("a public operation has no caller")
        return self.principal

    @property
    def store(self) -> InsightsStore:
        return get_store(self.settings)

    def served_language(self, language: str) -> None:
        if language not in self.content_languages:
            self.content_languages.append(language)


type ModelRef = type[BaseModel] | str
"""A model, or where it is (`"package.module:Name"`): imported on the operation's first use, so
models of rarely called operations cost an instance's start-up nothing."""


def _resolve(ref: ModelRef | None) -> type[BaseModel] | None:
    if ref is None or isinstance(ref, type):
        return ref
    module, _, name = ref.partition(":")
    model = getattr(importlib.import_module(module), name)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"{ref} is not a pydantic model")
    return model


@dataclass(frozen=True)
class Operation[InputT: BaseModel]:
    """What the connector generator needs to know about one operation, beyond its trigger."""

    operation_id: str
    summary: str
    description: str
    item: ModelRef | None
    query: ModelRef | None = None
    body: ModelRef | None = None
    visibility: str = "important"
    response: ModelRef | None = None
    role: str = "reader"
    """`reader`: Copilot for Sales for a seller; `writer`: a partner backend (ingestion); `public`:
    no token asked (what a client must read before it has one, such as the MCP endpoint's
    protected-resource metadata)."""
    in_connector: bool = True
    """Whether the operation belongs to the connector definition Copilot for Sales sees."""
    budget_seconds: float | None = None
    """The answer budget; None is REQUEST_BUDGET_SECONDS (Copilot's 5-second rule)."""
    raw: bool = False
    """The handler is given the `func.HttpRequest` itself and answers a `func.HttpResponse` (a
    protocol of its own over HTTP, such as MCP); token, throttle, budget and logs as for any other."""
    resource_metadata: str | None = None
    """Where the RFC 9728 protected-resource metadata is, relative to the operation's URL; a 401's
    challenge names it."""

    @cached_property
    def item_model(self) -> type[BaseModel] | None:
        return _resolve(self.item)

    @cached_property
    def query_model(self) -> type[BaseModel] | None:
        return _resolve(self.query)

    @cached_property
    def body_model(self) -> type[BaseModel] | None:
        return _resolve(self.body)

    @cached_property
    def response_model(self) -> type[BaseModel] | None:
        """For operations that answer something other than the `{value, hasMoreResults}` envelope."""
        return _resolve(self.response)


Handler = Callable[[RequestContext, Any], Awaitable[BaseModel | func.HttpResponse]]


def _new_validator(settings: Settings) -> TokenValidator:
    from shared.auth import TokenValidator  # on the first request, not when the worker indexes the app

    return TokenValidator(settings)


async def _close_validator(validator: TokenValidator) -> None:
    await validator.close()


_validators: PerLoop[TokenValidator] = PerLoop(_new_validator, _close_validator)


def get_validator(settings: Settings) -> TokenValidator:
    """This event loop's token validator for these settings (its key caches and HTTP client are
    reused by every request)."""
    return _validators.get(settings)


def reset_validator() -> None:
    _validators.reset()


def operation(
    *,
    operation_id: str,
    summary: str,
    description: str,
    item: ModelRef | None = None,
    query: ModelRef | None = None,
    body: ModelRef | None = None,
    visibility: str = "important",
    response: ModelRef | None = None,
    role: str = "reader",
    in_connector: bool = True,
    budget_seconds: float | None = None,
    raw: bool = False,
    resource_metadata: str | None = None,
) -> Callable[[Handler], Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]]:
    spec: Operation[Any] = Operation(
        operation_id=operation_id,
        summary=summary,
        description=description,
        item=item,
        query=query,
        body=body,
        visibility=visibility,
        response=response,
        role=role,
        in_connector=in_connector,
        budget_seconds=budget_seconds,
        raw=raw,
        resource_metadata=resource_metadata,
    )

    def decorate(handler: Handler) -> Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]:
        # The Functions worker binds by parameter name, so the wrapper's only parameter is `req`
        # (functools.wraps would expose the handler's signature through __wrapped__). It is a
        # coroutine function: the worker runs it on its event loop, not in its thread pool.
        async def trigger(req: func.HttpRequest) -> func.HttpResponse:
            return await _run(spec, handler, req)

        trigger.__name__ = handler.__name__
        trigger.__qualname__ = handler.__qualname__
        trigger.__doc__ = handler.__doc__
        trigger.__module__ = handler.__module__
        trigger.operation = spec  # type: ignore[attr-defined]
        trigger.handler = handler  # type: ignore[attr-defined]  # the MCP tools answer through it
        return trigger

    return decorate


@dataclass
class _Outcome:
    """What the summary line reports; filled in as the request goes."""

    tenant: str = "-"
    version: str = "-"
    items: int = 0


async def _run(spec: Operation[Any], handler: Handler, req: func.HttpRequest) -> func.HttpResponse:
    started = time.perf_counter()
    request_id = clean_header_value(req.headers.get(REQUEST_ID_HEADER)) or str(uuid.uuid4())
    with request_scope(request_id):
        return await _run_scoped(spec, handler, req, request_id, started)


async def _run_scoped(
    spec: Operation[Any], handler: Handler, req: func.HttpRequest, request_id: str, started: float
) -> func.HttpResponse:
    user_agent = clean_header_value(req.headers.get("x-ms-user-agent") or req.headers.get("user-agent"))
    trace_id = trace_id_of(req.headers.get("traceparent"))
    outcome = _Outcome()
    with invocation_span(spec.operation_id, req.headers, {"c4s.request_id": request_id}) as span:
        try:
            settings = get_settings()
            # The budget runs from arrival; whatever is not done by then is cancelled (storage and
            # key calls in flight included: nothing starts after the answer) and answers 503
            # instead of letting Copilot for Sales give up at 5 seconds.
            budget = spec.budget_seconds or settings.request_budget_seconds
            remaining = budget - (time.perf_counter() - started)
            try:
                async with asyncio.timeout(max(0.0, remaining)):
                    with request_deadline(started + budget):
                        response = await _handle(spec, handler, req, request_id, started, settings, outcome)
            except TimeoutError:
                raise ServiceUnavailable(
                    "The service could not answer in time; retry shortly.",
                    retry_after=2,
                    log_detail=f"request budget of {budget:.1f}s exceeded",
                ) from None
        except ApiException as exc:
            response = _error_response(exc, request_id)
        except StorageError as exc:
            response = _storage_failure(exc, request_id)
        except Exception:
            logger.exception("unhandled error in %s", spec.operation_id)
            response = _error_response(InternalServerError(), request_id)
        if response.status_code == 401 and spec.resource_metadata:
            _name_resource_metadata(response, req, spec.resource_metadata)
        if span is not None:
            span.set_attribute("http.response.status_code", response.status_code)
            span.set_attribute("c4s.tenant", outcome.tenant)
        # inside the span: the summary line is filed under the invocation's trace
        duration_ms = (time.perf_counter() - started) * 1000
        logger.info(
            "request_id=%s operation=%s tenant=%s status=%d items=%d duration_ms=%.1f user_agent=%s token_version=%s%s",
            request_id,
            spec.operation_id,
            outcome.tenant,
            response.status_code,
            outcome.items,
            duration_ms,
            user_agent or "-",
            outcome.version,
            f" trace_id={trace_id}" if trace_id else "",
        )
    return response


async def _handle(
    spec: Operation[Any],
    handler: Handler,
    req: func.HttpRequest,
    request_id: str,
    started: float,
    settings: Settings,
    outcome: _Outcome,
) -> func.HttpResponse:
    """Token, throttle, inputs, handler: every failure becomes an ApiError response."""
    try:
        if spec.role != "writer":  # under a flood, refused before the token costs anything
            get_store(settings).gate.check("reader")
        principal: Principal | None = None
        if spec.role != "public":
            principal = await get_validator(settings).validate(req.headers.get("Authorization"), role=spec.role)
            outcome.tenant, outcome.version = principal.tenant_id, principal.version
            wait = get_throttle(settings).retry_after(f"{spec.role}:{principal.tenant_id}")
            if wait is not None:
                raise RequestThrottled(
                    wait, log_detail=f"tenant {principal.tenant_id} is over THROTTLE_REQUESTS_PER_MINUTE"
                )
        ctx = RequestContext(
            request_id=request_id,
            principal=principal,
            settings=settings,
            log=logger,
            languages=parse_accept_language(req.headers.get("Accept-Language")),
            headers={k.lower(): v for k, v in req.headers.items()},
            started=started,
            url=req.url,
        )
        inputs = _parse_inputs(spec, req, settings)
        kind: Kind = "writer" if spec.role == "writer" else "reader"
        with work_kind(kind):
            if kind == "reader":  # all its storage calls as one unit: admitted whole, or refused at once
                async with ctx.store.gate.unit(kind, counted=True):
                    result = await handler(ctx, inputs)
            else:  # a writer's calls are admitted one by one (`shared.storage._gate`)
                result = await handler(ctx, inputs)
        if isinstance(result, func.HttpResponse):  # a raw operation's own answer
            result.headers[REQUEST_ID_HEADER] = request_id
            return result
        if isinstance(result, Page):
            outcome.items = len(result.value)
        headers = {REQUEST_ID_HEADER: request_id}
        if ctx.content_languages:
            headers["Content-Language"] = ", ".join(ctx.content_languages)
        return func.HttpResponse(
            result.model_dump_json(exclude_none=True),
            status_code=200,
            headers=headers,
            mimetype=JSON_MIMETYPE,
            charset="utf-8",
        )
    except ApiException as exc:
        return _error_response(exc, request_id)
    except StorageError as exc:
        return _storage_failure(exc, request_id)
    except Exception:
        logger.exception("unhandled error in %s", spec.operation_id)
        return _error_response(InternalServerError(), request_id)


def unavailable(exc: StorageError) -> ServiceUnavailable:
    """Every storage failure a request meets is the store's, not the caller's: a 503, the one
    place storage errors become HTTP."""
    if isinstance(exc, Overloaded):
        return ServiceUnavailable(
            "The service is overloaded and could not answer in time; retry in a moment.",
            retry_after=1,
            log_detail=exc.detail,
        )
    if isinstance(exc, OutOfTime):
        return ServiceUnavailable(
            "The service could not answer in time; retry shortly.", retry_after=2, log_detail=exc.detail
        )
    return ServiceUnavailable(log_detail=f"insights store failed: {exc.detail}"[:400])


_throttle_lock = threading.Lock()
_throttle: TenantThrottle | None = None


def get_throttle(settings: Settings) -> TenantThrottle:
    global _throttle
    if _throttle is None or _throttle.per_minute != settings.throttle_requests_per_minute:
        with _throttle_lock:
            if _throttle is None or _throttle.per_minute != settings.throttle_requests_per_minute:
                _throttle = TenantThrottle(settings.throttle_requests_per_minute)
    return _throttle


def reset_throttle() -> None:
    global _throttle
    with _throttle_lock:
        _throttle = None


def _parse_inputs(spec: Operation[Any], req: func.HttpRequest, settings: Settings) -> Any:
    if spec.raw:
        if len(req.get_body() or b"") > settings.max_request_bytes:
            raise RequestTooLarge(f"The request body is larger than {settings.max_request_bytes} bytes.")
        return req
    if spec.body_model is not None:
        raw = req.get_body() or b""
        if len(raw) > settings.max_request_bytes:
            raise RequestTooLarge(f"The request body is larger than {settings.max_request_bytes} bytes.")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InvalidRequest("body", "is not valid JSON") from None
        if not isinstance(data, dict):
            raise InvalidRequest("body", "must be a JSON object")
        return validate_inputs(spec.body_model, data)
    if spec.query_model is not None:
        return validate_inputs(spec.query_model, dict(req.params))
    return None


def validate_inputs(model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    """The inputs as the model reads them, or the `InvalidRequest` naming the first bad one."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "missing":
            raise InvalidRequest(name, "is required") from None
        problem = err["msg"].removeprefix("Value error, ")
        if not err["loc"] and ": " in problem:  # a model-level rule names its own parameter
            name, problem = problem.split(": ", 1)
        raise InvalidRequest(name, problem[0].lower() + problem[1:] if problem else "is not valid") from None


def _name_resource_metadata(response: func.HttpResponse, req: func.HttpRequest, route: str) -> None:
    """MCP's authorization spec: a 401 names where the resource's RFC 9728 metadata is, so a
    client can find the authorization server and the scope to ask for."""
    where = urljoin(req.url.split("?", 1)[0], route)
    challenge = response.headers.get("WWW-Authenticate") or "Bearer"
    sep = ", " if challenge != "Bearer" else " "
    response.headers["WWW-Authenticate"] = f'{challenge}{sep}resource_metadata="{where}"'


class RefusalLog:
    """Admission's refusals come in floods (callers that re-send at once past overload: thousands
    a second on one instance). Each is a deliberate shed, not a fault, and each request already
    has its own summary line (`status=503`, its request id), so the refusal's detail is logged at
    most once per `every` seconds, as a warning that says how many refusals it stands for: a line
    per refusal was a sixteenth of the worker's CPU under such a flood, and as many traces in
    Application Insights as refusals. The refusals after a flood's last line are counted by the
    next refusal's line, whenever that comes; until then only their own summary lines say so."""

    def __init__(self, every: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self._clock = every, clock
        self._lock = threading.Lock()
        self._last = -math.inf
        self._folded = 0

    def log(self, exc: ApiException) -> None:
        now = self._clock()
        with self._lock:
            if now - self._last < self.every:
                self._folded += 1
                return
            folded, self._folded, self._last = self._folded, 0, now
        logger.warning(
            "%s %s: %s%s",
            exc.status,
            exc.error_code,
            exc.log_detail or exc.message,
            f" (and {folded} more refused since the last such line)" if folded else "",
        )


_refusals = RefusalLog()


def reset_refusal_log() -> None:
    global _refusals
    _refusals = RefusalLog()


def _storage_failure(exc: StorageError, request_id: str) -> func.HttpResponse:
    """A storage failure's answer: admission's refusal is a shed, logged as one (`RefusalLog`)."""
    return _error_response(unavailable(exc), request_id, shed=isinstance(exc, Overloaded))


def _error_response(exc: ApiException, request_id: str, *, shed: bool = False) -> func.HttpResponse:
    if shed:
        _refusals.log(exc)
    elif exc.status >= 500:
        logger.error("%s %s: %s", exc.status, exc.error_code, exc.log_detail or exc.message)
    else:
        logger.warning("%s %s: %s", exc.status, exc.error_code, exc.log_detail or exc.message)
    body = ApiError(errorCode=exc.error_code, errorMessage=exc.message, activityId=request_id, details=exc.details)
    return func.HttpResponse(
        body.model_dump_json(),
        status_code=exc.status,
        headers={REQUEST_ID_HEADER: request_id, **exc.headers()},
        mimetype=JSON_MIMETYPE,
        charset="utf-8",
    )
