"""The current request's deadline, visible to whatever runs on its behalf.

The pipeline sets it when a request starts (arrival + its budget, on the `time.perf_counter`
clock) and clears it when the request ends; work it hands to other threads carries it along with
`contextvars.copy_context()`. Outside a request (CLI, loader) there is none.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["call_by", "current_deadline", "remaining", "request_deadline"]

_deadline: ContextVar[float | None] = ContextVar("request_deadline", default=None)


@contextmanager
def request_deadline(at: float) -> Iterator[None]:
    """Within this block, `current_deadline()` is `at` (a `time.perf_counter()` value)."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def call_by[**P, R](at: float, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """`fn(*args, **kwargs)` under the deadline `at`: what a pool thread runs for a request."""
    with request_deadline(at):
        return fn(*args, **kwargs)


def current_deadline() -> float | None:
    return _deadline.get()


def remaining() -> float | None:
    """Seconds left before the current request's deadline (never negative), or None outside one."""
    at = _deadline.get()
    return None if at is None else max(0.0, at - time.perf_counter())
