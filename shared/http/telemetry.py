"""OpenTelemetry export to Application Insights, switched on by APPLICATIONINSIGHTS_CONNECTION_STRING.

Off (and free: nothing is imported) when the variable is absent. When on, it follows Microsoft's
OpenTelemetry guidance for Python Functions: host.json sets `"telemetryMode": "OpenTelemetry"`, so
the Functions host records each invocation as the request, and the app setting
`PYTHON_ENABLE_OPENTELEMETRY=true` has the runtime library make the host's invocation span the
current context before it calls the function. Our span for the invocation is then a child of it
(kind INTERNAL: one request record per invocation, the host's, not two), and the storage calls
(the distro's azure-core instrumentation) and key fetches (its httpx instrumentation) are children
of ours. Without an attached
context (that setting off), the caller's `traceparent` is the parent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["enabled", "invocation_span", "trace_id_of"]

log = logging.getLogger("c4s.telemetry")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_lock = threading.Lock()
_configured: bool | None = None


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a valid W3C traceparent (version 00, non-zero ids), else None."""
    match = _TRACEPARENT.fullmatch((traceparent or "").strip().lower())
    if not match or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return None
    return match.group(1)


def enabled() -> bool:
    global _configured
    if _configured is None:
        with _lock:
            if _configured is None:
                _configured = _configure()
    return _configured


def _configure() -> bool:
    if not os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        return False
    # Functions run on App Service: its resource detector reads environment variables only. The
    # distro's default list also probes the Azure VM metadata endpoint over the network, which
    # would hold up the first request where there is no such endpoint.
    os.environ.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "azure_app_service")
    # The distro's default sampler keeps at most 5 traces a second and, in a fresh process, may
    # drop the first ones whatever the caller decided. A request Copilot traces (traceparent with
    # the sampled flag) must be found in Application Insights, and one it does not trace is not
    # recorded: the parent decides, and a request without a traceparent is recorded. Operators
    # who want the rate limit back set OTEL_TRACES_SAMPLER=microsoft.rate_limited.
    os.environ.setdefault("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor  # only where export is on

        configure_azure_monitor(logger_name="c4s", enable_live_metrics=False)
        return True
    except Exception:
        log.exception("Application Insights export could not be configured; continuing without it")
        return False


@contextlib.contextmanager
def invocation_span(name: str, headers: Mapping[str, str], attributes: dict[str, Any]) -> Iterator[Any]:
    """Our span for one invocation when export is on (None otherwise): a child of the host's
    invocation span the runtime attached, else of the caller's `traceparent`."""
    if not enabled():
        yield None
        return
    from opentelemetry import propagate, trace  # only where export is on (configured above)

    attached = trace.get_current_span().get_span_context().is_valid
    context = None if attached else propagate.extract({k.lower(): v for k, v in headers.items()})
    tracer = trace.get_tracer("c4s")
    with tracer.start_as_current_span(
        name, context=context, kind=trace.SpanKind.INTERNAL, attributes=attributes
    ) as span:
        yield span


def reset() -> None:
    """Forget whether export is configured (tests)."""
    global _configured
    with _lock:
        _configured = None
