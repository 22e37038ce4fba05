"""Request-scoped logging. Application Insights drops `extra=` fields, so the request id goes in
the message text itself: every line logged during a request starts with
`[<x-ms-client-request-id>]`, whichever module logs it.

The request id lives in a context variable that the pipeline sets for the request. Everything a
request does runs in its invocation's task or in tasks it starts (which copy its context), so every
line carries the id, and the Functions worker ties every line to the invocation.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["RequestLogger", "clean_header_value", "current_request_id", "get_logger", "logger", "request_scope"]

_UNSAFE = re.compile(r"[^\x21-\x7e ]")
_request_id: ContextVar[str | None] = ContextVar("c4s_request_id", default=None)


def clean_header_value(value: str | None, limit: int = 128) -> str:
    """A header value fit for a log line: printable ASCII, no newlines, bounded length."""
    if not value:
        return ""
    return _UNSAFE.sub("", value)[:limit].strip()


@contextmanager
def request_scope(request_id: str) -> Iterator[None]:
    """Within this block (and whatever it hands on with its context), lines carry `request_id`."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


def current_request_id() -> str | None:
    return _request_id.get()


class RequestLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose lines start with the current request's id, when there is one."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        request_id = _request_id.get()
        return (f"[{request_id}] {msg}" if request_id else msg), kwargs


def get_logger(name: str) -> RequestLogger:
    return RequestLogger(logging.getLogger(name))


logger = get_logger("c4s")
