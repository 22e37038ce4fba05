"""The running request, as every layer sees it: its deadline (`asyncio.timeout` enforces it;
admission judges by it whether queued work can still finish), its log context (every line starts with its request id), and
clients that belong to an event loop."""

from shared.runtime._deadline import current_deadline, remaining, request_deadline
from shared.runtime._logs import (
    RequestLogger,
    clean_header_value,
    current_request_id,
    get_logger,
    logger,
    request_scope,
)
from shared.runtime._loopbound import PerLoop

__all__ = [
    "PerLoop",
    "RequestLogger",
    "clean_header_value",
    "current_deadline",
    "current_request_id",
    "get_logger",
    "logger",
    "remaining",
    "request_deadline",
    "request_scope",
]
