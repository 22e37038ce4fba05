"""The read gate: at most N storage reads in flight on the event loop, the read of the request
nearest its deadline next, never a read whose deadline has passed, and a waiter cancelled at its
deadline leaves no trace (shared.storage.ReadGate, shared.runtime)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from shared.http._pipeline import _unavailable as as_answered
from shared.runtime import remaining, request_deadline
from shared.storage import ReadGate
from shared.storage.errors import OutOfTime


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.001)


@asynccontextmanager
async def _held(gate: ReadGate) -> AsyncIterator[None]:
    """Another task holds the gate's only slot until the block ends."""
    held, let_go = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with gate.slot():
            held.set()
            await let_go.wait()

    task = asyncio.create_task(holder())
    await held.wait()
    try:
        yield
    finally:
        let_go.set()
        await task


def test_no_more_than_the_limit_in_flight() -> None:
    async def scenario() -> int:
        gate = ReadGate(3)
        inside = peak = 0

        async def read() -> None:
            nonlocal inside, peak
            async with gate.slot():
                inside += 1
                peak = max(peak, inside)
                await asyncio.sleep(0.01)
                inside -= 1

        await asyncio.gather(*(read() for _ in range(12)))
        assert gate.in_flight == 0
        return peak

    assert asyncio.run(scenario()) == 3


def test_waiters_go_earliest_deadline_first_and_those_without_one_last() -> None:
    async def scenario() -> list[str]:
        gate = ReadGate(1)
        order: list[str] = []

        async def waiter(name: str, seconds_left: float | None) -> None:
            if seconds_left is None:
                async with gate.slot():
                    order.append(name)
                return
            with request_deadline(time.perf_counter() + seconds_left):
                async with gate.slot():
                    order.append(name)

        tasks = []
        async with _held(gate):
            queued = [("none", None), ("late", 30.0), ("soon", 10.0), ("middle", 20.0), ("soonest", 5.0)]
            for n, (name, left) in enumerate(queued, start=1):
                tasks.append(asyncio.create_task(waiter(name, left)))
                await _until(lambda n=n: gate.waiting == n)  # type: ignore[misc]
        await asyncio.gather(*tasks)
        assert gate.in_flight == 0
        return order

    assert asyncio.run(scenario()) == ["soonest", "soon", "middle", "late", "none"]


def test_a_waiter_cancelled_at_its_deadline_leaves_and_leaks_no_slot() -> None:
    async def scenario() -> None:
        gate = ReadGate(1)
        async with _held(gate):
            started = time.perf_counter()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    with request_deadline(started + 0.2):
                        async with gate.slot():
                            pytest.fail("entered a full gate")
            assert 0.15 < time.perf_counter() - started < 2.0
            assert gate.waiting == 0
        assert gate.in_flight == 0
        async with gate.slot():  # the slot came back: a new read enters at once
            assert gate.in_flight == 1

    asyncio.run(scenario())


def test_a_slot_handed_to_a_waiter_whose_deadline_passed_goes_to_the_next() -> None:
    async def scenario() -> list[str]:
        gate = ReadGate(1)
        admitted: list[str] = []
        refused: list[str] = []

        async def waiter(name: str, seconds_left: float) -> None:
            with request_deadline(time.perf_counter() + seconds_left):
                try:
                    async with gate.slot():
                        admitted.append(name)
                except OutOfTime:
                    refused.append(name)

        async with _held(gate):
            expiring = asyncio.create_task(waiter("expiring", 0.05))
            await _until(lambda: gate.waiting == 1)
            patient = asyncio.create_task(waiter("patient", 30.0))
            await _until(lambda: gate.waiting == 2)
            await asyncio.sleep(0.1)  # the first waiter's deadline passes while the slot is held
        await asyncio.gather(expiring, patient)
        assert refused == ["expiring"]
        assert gate.in_flight == 0
        return admitted

    assert asyncio.run(scenario()) == ["patient"]


def test_a_request_past_its_deadline_never_reads() -> None:
    async def scenario() -> None:
        for gate in (ReadGate(1), ReadGate(0)):
            with request_deadline(time.perf_counter() - 1), pytest.raises(OutOfTime) as caught:
                async with gate.slot():
                    pytest.fail("a read started after its deadline")
            answer = as_answered(caught.value)  # what the caller gets: 503 SERVICE_UNAVAILABLE
            assert (answer.status, answer.headers()) == (503, {"Retry-After": "2"})
            assert gate.in_flight == 0

    asyncio.run(scenario())


def test_no_limit_when_zero() -> None:
    async def scenario() -> None:
        gate = ReadGate(0)
        async with gate.slot(), gate.slot(), gate.slot():
            assert gate.waiting == 0

    asyncio.run(scenario())


def test_the_deadline_is_scoped_to_the_block() -> None:
    assert remaining() is None
    with request_deadline(time.perf_counter() + 3):
        left = remaining()
        assert left is not None and 2.5 < left <= 3
    assert remaining() is None
