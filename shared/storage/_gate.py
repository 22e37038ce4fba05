"""Admission of storage work on one instance: answer what storage can, refuse the rest at once.

A seller gets value from an answer inside the budget; a 503 after four seconds of waiting is worse
than a 503 at once. When storage is the bottleneck (a hot partition, a storage incident, Azurite's
scans), a queue longer than the budget makes nearly every request expire in it. So, as in
"Fail at Scale" (a controlled-delay queue) and the Google SRE book's load shedding:

- **Units.** A reader's request is admitted as one unit of work for all of its storage calls (an
  email summary's several partitions included), so an admitted request is never half-served.
  A writer's work (the ingestion API) is admitted call by call: its calls are short and many, and
  a slot a writer borrowed comes back within one call.
- **Admission.** A unit that finds no free slot is queued only if, from the work ahead of it and
  the pace at which its class's queue was measured to drain (or, with no current measure, its
  recent service time per slot), it can still finish inside its request's remaining budget;
  otherwise it is refused at once (`Overloaded`: a 503 with Retry-After). The queue then never
  holds more than storage serves within a budget: every queued unit is one that can finish, and
  the requests beyond are told at once. A queued unit whose estimate stops holding (storage
  slowed while it waited) leaves when it could no longer finish, also refused, never run out of
  time.
- **Order.** First come, first served within a class. Each class keeps a reserved share of the
  limit (readers half, writers a quarter, at least one slot each); a share its class is not using
  is lent to the other, and a freed slot goes first to a class below its share with work waiting.
  A partner's bulk push cannot make a seller's cards expire, and a read storm cannot refuse every
  write.
- **The limit adapts** to measured latency (as Netflix's concurrency-limits and Envoy's adaptive
  concurrency do): the ratio of readers' service time seen over the last minute at its best to the
  one seen now cuts the limit when storage slows (more work in flight only waits there), and the
  limit grows back, by about its square root a unit, while latency stays near its best. (A
  writer's calls range from a point read to a 100-operation transaction: their times do not say
  how loaded storage is, so only readers' units move the limit; and only units that made a storage
  call: a request that reads nothing would pass for storage answering in no time.)
  `STORAGE_MAX_CONCURRENT_READS` is its ceiling (0: no limit and no admission).
- **Unless the worker is the bottleneck.** A unit's time includes the waits of its continuations
  on the worker's event loop. Under a flood the loop itself lags (each refusal is CPU work), the
  units' times grow though storage is idle, and a cut would only serve fewer answers while the
  flood goes on. So arrivals probe the loop's lag (a callback's wait for its turn), and while it
  is at least `LAG_SHARE` of storage's best service time the limit holds: neither cut nor grown.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

from shared.runtime import current_deadline
from shared.storage.errors import OutOfTime, Overloaded

__all__ = ["Admission", "Kind", "work_kind"]

Kind = Literal["reader", "writer"]
KINDS: tuple[Kind, Kind] = ("reader", "writer")
SHARES: dict[Kind, float] = {"reader": 0.5, "writer": 0.25}
"""The least share of the limit each class keeps for itself (rounded up, at least one slot)."""
HEADROOM = 1.5
"""A unit is queued only if this many of its class's service times, and `SLACK` of its remaining
budget, are left after its expected wait; it leaves the queue only once less than one service time
is left. The gap between the two absorbs an estimate a little short, so an admitted unit does not
leave the queue while the estimate holds."""
SLACK = 0.1
TOLERANCE = 4.0
"""Latency may grow to this multiple of its best before the limit is cut."""
WINDOW_SECONDS = 60.0
"""How long the best recent service time is remembered (in six buckets)."""
SMOOTHING = 0.2
"""Weight of a new sample in the service-time estimate."""
LAG_SHARE = 0.5
"""While the event loop's lag is at least this share of readers' best service time, the limit holds."""
LAG_PROBE_SECONDS = 0.01
"""Arrivals probe the loop's lag at most this often."""
FRESH_SECONDS = 1.0
"""How long a measured drain rate of a queue stays current once the queue stops draining."""

_kind: ContextVar[Kind | None] = ContextVar("storage_work_kind", default=None)
_calls: ContextVar[list[int] | None] = ContextVar("storage_unit_calls", default=None)
"""The storage calls made so far by the unit this code runs in, where the unit counts them."""


@contextlib.contextmanager
def work_kind(kind: Kind) -> Iterator[None]:
    """Within this block, storage calls are this class's work (the pipeline sets it per request:
    a writer's calls are admitted one by one; a reader's request holds one unit for all)."""
    token = _kind.set(kind)
    try:
        yield
    finally:
        _kind.reset(token)


def current_kind() -> Kind | None:
    return _kind.get()


@dataclass
class _Service:
    """One class's measured service time: a smoothed estimate, and its best over the window."""

    estimate: float | None = None
    buckets: deque[tuple[float, float]] = field(default_factory=deque)  # (bucket start, best)
    ends: deque[float] = field(default_factory=deque)
    """When the last units ended (up to the deque's length), as long as each ended with units of
    the class waiting (so storage or the limit, not arrivals, set their pace): how fast a queue of
    this class drains. A unit that ends with none waiting starts the run again."""

    def ended_unit(self, now: float, waiting: bool) -> None:
        if waiting:
            self.ends.append(now)
        else:
            self.ends.clear()

    def drain_time(self, now: float, least: int) -> float | None:
        """The measured time a queue of this class takes to move one place: over a run of at
        least `least` ends (units end in bunches when their slots were granted together, so a
        shorter run says little), while the run is current."""
        if len(self.ends) < least:
            return None
        pace = (self.ends[-1] - self.ends[0]) / (len(self.ends) - 1)
        if now - self.ends[-1] > max(FRESH_SECONDS, 4 * pace):
            return None
        return pace

    def add(self, seconds: float, now: float) -> None:
        self.estimate = seconds if self.estimate is None else (1 - SMOOTHING) * self.estimate + SMOOTHING * seconds
        span = WINDOW_SECONDS / 6
        if self.buckets and now - self.buckets[-1][0] < span:
            start, best = self.buckets[-1]
            self.buckets[-1] = (start, min(best, seconds))
        else:
            self.buckets.append((now, seconds))
        while self.buckets and now - self.buckets[0][0] > WINDOW_SECONDS:
            self.buckets.popleft()

    @property
    def best(self) -> float | None:
        return min((b for _, b in self.buckets), default=None)


@dataclass(eq=False)
class _Waiter:
    kind: Kind
    seq: int
    granted: asyncio.Future[None]


class Admission:
    """See the module. `ceiling` is STORAGE_MAX_CONCURRENT_READS (0: everything is admitted)."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.busy: dict[Kind, int] = dict.fromkeys(KINDS, 0)
        self._queues: dict[Kind, deque[_Waiter]] = {k: deque() for k in KINDS}
        # a queue's pace is measured over its last 4 × ceiling ends
        self._service: dict[Kind, _Service] = {k: _Service(ends=deque(maxlen=4 * max(1, ceiling))) for k in KINDS}
        self._seq = itertools.count()
        self.refused = 0
        """Units refused at arrival so far."""
        self.left = 0
        """Units that left the queue so far because their estimate stopped holding."""
        self.lag = 0.0
        """The event loop's lag as arrivals' probes measured it (smoothed)."""
        self._lag_seen_at = -math.inf
        self._probe_sent_at = -math.inf
        self._probe_pending = False
        self.held = 0
        """Times the limit held instead of moving, the loop lagging."""

    # ---- what callers use ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def unit(self, kind: Kind = "reader", *, counted: bool = False) -> AsyncIterator[None]:
        """Hold one slot of `kind` for the block: admitted at once, queued while it can still
        finish, or refused (`Overloaded`) without waiting for its deadline. `counted`: the block's
        time is a service-time sample only if it made a storage call (`call`); the pipeline's
        units are counted, so an operation that reads nothing (test connection, an MCP
        `tools/list`) does not pass for storage answering in no time."""
        if self.ceiling <= 0:
            _only_in_time()
            yield
            return
        await self._acquire(kind)
        started = time.perf_counter()
        calls = [0] if counted else None
        token = _calls.set(calls)
        try:
            yield
        finally:
            _calls.reset(token)
            if calls is None or calls[0] > 0:
                self._release(kind, time.perf_counter() - started)
            else:
                self._give_back(kind)

    def call(self, kind: Kind | None = None) -> contextlib.AbstractAsyncContextManager[None]:
        """One storage call: a writer's is a unit of its own; a reader's is covered by its
        request's unit (and work outside a request, a command's, is not admitted here)."""
        kind = kind or current_kind()
        if kind == "writer":
            return self.unit("writer")
        calls = _calls.get()
        if calls is not None:
            calls[0] += 1
        return contextlib.nullcontext()

    @property
    def in_flight(self) -> int:
        return sum(self.busy.values())

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    @property
    def current_limit(self) -> int:
        return max(1, int(self.limit))

    def service_time(self, kind: Kind) -> float | None:
        return self._service[kind].estimate

    # ---- admission -------------------------------------------------------------------------------

    def _reserve(self, kind: Kind) -> int:
        return max(1, math.ceil(self.current_limit * SHARES[kind]))

    def _free_for(self, kind: Kind) -> bool:
        """A slot is free for `kind` now, without taking one owed to the other class's waiters."""
        if self.in_flight >= self.current_limit:
            return False
        other: Kind = "writer" if kind == "reader" else "reader"
        owed = max(0, self._reserve(other) - self.busy[other]) if self._queues[other] else 0
        return self.busy[kind] < self._reserve(kind) or self.in_flight + owed < self.current_limit

    def _expected_wait(self, kind: Kind, service: float) -> float:
        """The time until a unit arriving now gets a slot: the units ahead of it, at the pace the
        queue was measured to drain at, or else one service time per slot. The measured pace
        holds when the limit has just moved: a limit cut from 8 to 2 leaves 8 units in flight
        finishing at the pace storage sets, and service times measured at 8 in flight say four
        times too long a wait at 2 slots, until the estimate catches up."""
        ahead = len(self._queues[kind]) + 1
        drain = self._service[kind].drain_time(time.monotonic(), least=self.ceiling + 1)
        if drain is not None:
            return ahead * drain
        other: Kind = "writer" if kind == "reader" else "reader"
        slots = max(self._reserve(kind), self.current_limit - self.busy[other], self.busy[kind])
        return ahead * service / max(1, slots)

    def check(self, kind: Kind = "reader") -> None:
        """Refuse now (`Overloaded`) work of `kind` that would be refused at arrival: the pipeline
        asks before it validates a token, so a refusal under a flood costs next to nothing."""
        if self.ceiling > 0:
            self._probe_lag()
            if self._queues[kind] or not self._free_for(kind):
                self._refuse_if_late(kind)

    def _probe_lag(self) -> None:
        """How long a callback scheduled now waits for its turn on the running loop (at most one
        probe in flight, and one every `LAG_PROBE_SECONDS`)."""
        now = time.perf_counter()
        # a probe whose loop ended before it ran is given up after FRESH_SECONDS
        if now - self._probe_sent_at < (FRESH_SECONDS if self._probe_pending else LAG_PROBE_SECONDS):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._probe_sent_at, self._probe_pending = now, True
        loop.call_soon(self._lag_seen, now)

    def _lag_seen(self, sent: float) -> None:
        now = time.perf_counter()
        lag = now - sent
        self.lag = (1 - SMOOTHING) * self.lag + SMOOTHING * lag if self._lag_fresh(now) else lag
        self._lag_seen_at, self._probe_pending = now, False

    def _lag_fresh(self, now: float) -> bool:
        return now - self._lag_seen_at < FRESH_SECONDS

    def loop_lagging(self, best: float | None) -> bool:
        """The worker's loop, not storage, sets the units' pace now."""
        return best is not None and self._lag_fresh(time.perf_counter()) and self.lag >= LAG_SHARE * best

    def _refuse_if_late(self, kind: Kind) -> None:
        service = self._service[kind].estimate
        if service is None:
            return
        at = current_deadline()
        left = math.inf if at is None else at - time.perf_counter()
        wait = self._expected_wait(kind, service)
        if wait + HEADROOM * service > (1 - SLACK) * left:
            self.refused += 1
            raise Overloaded(
                f"{kind} work refused at arrival: {self.waiting} waiting, {self.in_flight} in flight "
                f"(limit {self.current_limit}), about {wait * 1000:.0f} ms to wait and "
                f"{service * 1000:.0f} ms to serve, {left * 1000:.0f} ms left"
            )

    async def _acquire(self, kind: Kind) -> None:
        _only_in_time()
        self._probe_lag()
        if not self._queues[kind] and self._free_for(kind):
            self.busy[kind] += 1
            return
        self._refuse_if_late(kind)
        at = current_deadline()
        service = self._service[kind].estimate
        left = math.inf if at is None else at - time.perf_counter()
        waiter = _Waiter(kind, next(self._seq), asyncio.get_running_loop().create_future())
        self._queues[kind].append(waiter)
        self._dispatch()  # a slot may be free for it (one kept for the other class's share went unclaimed)
        # leave when the unit could no longer finish: its deadline, less the service time
        give_up = None if at is None else max(0.0, left - (service or 0.0))
        try:
            async with asyncio.timeout(give_up):
                await waiter.granted
        except TimeoutError:
            self._leave(waiter)
            self.left += 1
            raise Overloaded(f"{kind} work left the queue: it could no longer finish in its budget") from None
        except asyncio.CancelledError:
            self._leave(waiter)
            raise
        try:
            _only_in_time()
        except OutOfTime:
            self._give_back(kind)
            raise
        now_service = self._service[kind].estimate
        if at is not None and now_service is not None and at - time.perf_counter() < HEADROOM * now_service:
            # storage slowed while it waited: it would not finish, so its slot goes on now
            self._give_back(kind)
            self.left += 1
            raise Overloaded(f"{kind} work given a slot too late to finish in its budget")

    def _leave(self, waiter: _Waiter) -> None:
        """A waiter that gives up: out of the queue, or, if it was handed a slot meanwhile, the
        slot goes on unused."""
        if waiter.granted.done() and not waiter.granted.cancelled():
            self._give_back(waiter.kind)
        else:
            with contextlib.suppress(ValueError):
                self._queues[waiter.kind].remove(waiter)

    def _release(self, kind: Kind, held: float) -> None:
        self.busy[kind] -= 1
        self._service[kind].ended_unit(time.monotonic(), bool(self._queues[kind]))
        self.record(kind, held)  # dispatches, once the estimate has the sample

    def _give_back(self, kind: Kind) -> None:
        """A slot of `kind` goes on unused, to the next waiter."""
        self.busy[kind] -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to waiters: first a class below its share, then the longest waiting."""
        while self.in_flight < self.current_limit:
            heads = [q[0] for q in self._queues.values() if q]
            if not heads:
                return
            owed = [w for w in heads if self.busy[w.kind] < self._reserve(w.kind)]
            chosen = min(owed or heads, key=lambda w: w.seq)
            self._queues[chosen.kind].popleft()
            if chosen.granted.done():  # cancelled while queued
                continue
            self.busy[chosen.kind] += 1
            chosen.granted.set_result(None)

    # ---- the adaptive limit ------------------------------------------------------------------------

    def record(self, kind: Kind, held: float) -> None:
        """A unit of `kind` held its slot `held` seconds: the service-time estimate and the limit
        follow (and a higher limit admits waiters at once)."""
        now = time.monotonic()
        service = self._service[kind]
        service.add(held, now)
        # a writer's calls differ too much in cost (a point read, a 100-operation transaction) for
        # their best to say what storage's latency is: readers' units set the limit
        if kind == "reader":
            if self.loop_lagging(service.best):
                self.held += 1
            else:
                self.limit = self._next_limit(service)
        self._dispatch()  # a higher limit admits waiters at once

    def _next_limit(self, service: _Service) -> float:
        """Cut by the gradient of best to current service time, or grown by about its square root."""
        gradient = 1.0
        if service.estimate and service.best is not None:
            gradient = min(1.0, max(0.5, TOLERANCE * service.best / service.estimate))
        proposed = self.limit * gradient + (math.sqrt(self.limit) if gradient >= 1.0 else 0.0)
        return min(float(self.ceiling), max(1.0, (1 - SMOOTHING) * self.limit + SMOOTHING * proposed))


def _only_in_time() -> None:
    """Work whose request is past its deadline never starts."""
    at = current_deadline()
    if at is not None and time.perf_counter() >= at:
        raise OutOfTime("the request budget ran out before its storage work could start")
