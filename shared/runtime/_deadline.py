"""The current request's deadline, visible to whatever runs on its behalf.

The pipeline sets it when a request starts (arrival + its budget, on the `time.perf_counter`
clock) and clears it when the request ends; the tasks a request starts inherit it (admission judges
by it whether its work can still finish). The deadline itself is enforced by `asyncio.timeout` around the whole
handler. Outside a request (CLI, loader) there is none.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["current_deadline", "remaining", "request_deadline"]

_deadline: ContextVar[float | None] = ContextVar("request_deadline", default=None)


@contextmanager
def request_deadline(at: float) -> Iterator[None]:
    """Within this block, `current_deadline()` is `at` (a `time.perf_counter()` value)."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def current_deadline() -> float | None:
    return _deadline.get()


def remaining() -> float | None:
    """Seconds left before the current request's deadline (never negative), or None outside one."""
    at = _deadline.get()
    return None if at is None else max(0.0, at - time.perf_counter())
