"""Handing a request's work to another thread without losing the request.

A thread of a pool starts with an empty context. What a request's lines and calls need travels in
context variables: its deadline (`shared.deadline`), its request id (`shared.logs`), the Functions
runtime's invocation id (the worker ties a log record to an invocation by it; a record without it
reaches Application Insights as nobody's) and the trace context. `submit` runs the work in a copy
of the caller's context, so all of them go along.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Executor, Future

__all__ = ["submit"]


def submit[**P, R](pool: Executor, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
    """`pool.submit(fn, *args, **kwargs)`, run in a copy of the calling thread's context."""
    context = contextvars.copy_context()
    return pool.submit(lambda: context.run(fn, *args, **kwargs))
