"""The per-instance read limit: at most `limit` storage reads in flight, earliest deadline first."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator

from shared.runtime import current_deadline
from shared.storage.errors import OutOfTime

__all__ = ["ReadGate"]


class ReadGate:
    """At most `limit` storage reads in flight from this process's event loop (0: no limit); the
    others wait, earliest request deadline first (arrival order among equals).

    A saturated store serves concurrent requests unevenly: some wait many times the average while
    others pass, and those miss the answer budget. Queued here instead, every request waits about
    the average and the oldest goes next. A read whose deadline has passed is never admitted: it
    is refused at once (OutOfTime: a 503 to the caller), and a waiter whose request is cancelled at its deadline leaves the
    queue (or passes on a slot it was just handed) without reaching the store."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._busy = 0
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.limit <= 0:
            _admit_only_in_time()
            yield
            return
        await self._acquire()
        try:
            yield
        finally:
            self._hand_over()

    @property
    def in_flight(self) -> int:
        return self._busy

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def _acquire(self) -> None:
        _admit_only_in_time()
        if self._busy < self.limit and not self._waiting:
            self._busy += 1
            return
        at = current_deadline()
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (math.inf if at is None else at, next(self._seq), granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._hand_over()  # handed a slot as it was cancelled: pass it on, unused
            else:
                self._waiting = [w for w in self._waiting if w[2] is not granted]
                heapq.heapify(self._waiting)
            raise
        _admit_only_in_time(release=self)

    def _hand_over(self) -> None:
        while self._waiting:
            _, _, granted = heapq.heappop(self._waiting)
            if not granted.done():
                granted.set_result(None)  # the slot changes hands; _busy stays
                return
        self._busy -= 1


def _admit_only_in_time(release: ReadGate | None = None) -> None:
    """A read whose request is past its deadline never starts (its slot, if it holds one, goes on)."""
    at = current_deadline()
    if at is not None and time.perf_counter() >= at:
        if release is not None:
            release._hand_over()
        raise OutOfTime("the request budget ran out before a storage read could start")
