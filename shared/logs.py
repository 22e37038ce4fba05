"""Request-scoped logging. Application Insights drops `extra=` fields, so the request id goes in
the message text itself: every line of a request starts with `[<x-ms-client-request-id>]`."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

__all__ = ["RequestLogger", "clean_header_value", "logger"]

logger = logging.getLogger("c4s")
_UNSAFE = re.compile(r"[^\x21-\x7e ]")


def clean_header_value(value: str | None, limit: int = 128) -> str:
    """A header value fit for a log line: printable ASCII, no newlines, bounded length."""
    if not value:
        return ""
    return _UNSAFE.sub("", value)[:limit].strip()


class RequestLogger(logging.LoggerAdapter[logging.Logger]):
    def __init__(self, request_id: str, base: logging.Logger = logger) -> None:
        super().__init__(base, {"request_id": request_id})
        self.request_id = request_id

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"[{self.request_id}] {msg}", kwargs
