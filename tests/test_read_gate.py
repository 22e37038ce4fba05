"""The read gate: at most N storage reads in flight, the oldest request's read next, and a wait
that ends with the request's deadline (shared.store.ReadGate, shared.deadline)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from shared.deadline import remaining, request_deadline
from shared.errors import ServiceUnavailable
from shared.store import ReadGate


def _wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


@contextmanager
def _held(gate: ReadGate) -> Iterator[None]:
    """Another thread holds the gate's only slot until the block ends."""
    held, let_go = threading.Event(), threading.Event()

    def holder() -> None:
        with gate.slot():
            held.set()
            let_go.wait()

    t = threading.Thread(target=holder)
    t.start()
    held.wait()
    try:
        yield
    finally:
        let_go.set()
        t.join()


def test_no_more_than_the_limit_in_flight() -> None:
    gate = ReadGate(3)
    lock = threading.Lock()
    inside = peak = 0

    def read() -> None:
        nonlocal inside, peak
        with gate.slot():
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.02)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=read) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 3
    assert gate.in_flight == 0


def test_waiters_go_earliest_deadline_first_and_those_without_one_last() -> None:
    gate = ReadGate(1)
    order: list[str] = []

    def waiter(name: str, seconds_left: float | None) -> None:
        def go() -> None:
            with gate.slot():
                order.append(name)

        if seconds_left is None:
            go()
        else:
            with request_deadline(time.perf_counter() + seconds_left):
                go()

    threads = []
    with _held(gate):
        # queued in this order, with these deadlines
        queued = [("none", None), ("late", 30.0), ("soon", 10.0), ("middle", 20.0), ("soonest", 5.0)]
        for n, (name, left) in enumerate(queued, start=1):
            t = threading.Thread(target=waiter, args=(name, left))
            t.start()
            threads.append(t)
            _wait_until(lambda n=n: len(gate._waiting) == n)  # type: ignore[misc]
    for t in threads:
        t.join()
    assert order == ["soonest", "soon", "middle", "late", "none"]
    assert gate.in_flight == 0


def test_a_wait_ends_with_the_deadline_and_leaks_no_slot() -> None:
    gate = ReadGate(1)
    with _held(gate):
        started = time.perf_counter()
        with request_deadline(started + 0.2), pytest.raises(ServiceUnavailable) as caught:
            with gate.slot():
                pytest.fail("entered a full gate")
        assert 0.15 < time.perf_counter() - started < 2.0
        assert caught.value.headers() == {"Retry-After": "2"}
        assert gate._waiting == []
    assert gate.in_flight == 0
    with gate.slot():  # the slot came back: a new read enters at once
        assert gate.in_flight == 1


def test_a_request_past_its_deadline_never_reaches_a_full_gate() -> None:
    gate = ReadGate(1)
    with gate.slot():
        with request_deadline(time.perf_counter() - 1), pytest.raises(ServiceUnavailable):
            with gate.slot():
                pass


def test_no_limit_when_zero() -> None:
    gate = ReadGate(0)
    with gate.slot(), gate.slot(), gate.slot():
        assert gate._waiting == []


def test_the_deadline_is_scoped_to_the_block() -> None:
    assert remaining() is None
    with request_deadline(time.perf_counter() + 3):
        left = remaining()
        assert left is not None and 2.5 < left <= 3
    assert remaining() is None
