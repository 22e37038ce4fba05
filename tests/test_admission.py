"""Admission of storage work (shared.storage.Admission): the limit on work in flight, refusal at
arrival of work that could not finish in its budget (and never a storage call for it), the adaptive
limit, the two classes' shares, and slots that never leak. Counts, not times: the sleeps here only
make work take long enough to be ahead of other work.

Through the service too: against storage that serves one request at a time behind a loopback
proxy, a flood of readers gets answers or an immediate `overloaded` 503, never a 503 at its
deadline, and a refused request makes no storage call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

import shared.storage
from devhost.azurite import Azurite
from shared.http import RefusalLog
from shared.http import unavailable as as_answered
from shared.runtime import request_deadline
from shared.storage import Admission
from shared.storage.errors import OutOfTime, Overloaded
from tests.conftest import Service, doc
from tests.proxies import LoopbackProxy

HIGHLIGHTS = "/api/enhanceskills/sales-highlights"
QUERY = {"recordType": "opportunity", "recordId": "opp-1"}


def run[T](scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(scenario())  # type: ignore[arg-type]


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.001)


async def _work(admission: Admission, kind: Any, seconds: float, budget: float | None = None) -> str:
    """One unit that holds its slot for `seconds`; 'done', or 'refused'."""
    try:
        if budget is None:
            async with admission.unit(kind):
                await asyncio.sleep(seconds)
        else:
            with request_deadline(time.perf_counter() + budget):
                async with admission.unit(kind):
                    await asyncio.sleep(seconds)
    except Overloaded:
        return "refused"
    return "done"


async def _primed(ceiling: int, kind: Any = "reader", seconds: float = 0.02) -> Admission:
    """An admission that has measured units of `kind` taking about `seconds`."""
    admission = Admission(ceiling)
    await asyncio.gather(*(_work(admission, kind, seconds) for _ in range(ceiling * 3)))
    return admission


async def _peak(admission: Admission, units: int) -> tuple[int, int]:
    """`units` readers' units at once, each 5 ms: the most in flight together, and how many ended."""
    inside = peak = ended = 0

    async def unit() -> None:
        nonlocal inside, peak, ended
        async with admission.unit("reader"):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.005)
            inside -= 1
        ended += 1

    await asyncio.gather(*(unit() for _ in range(units)))
    return peak, ended


def test_no_more_than_the_limit_in_flight_and_every_unit_served() -> None:
    async def scenario() -> tuple[int, int, int]:
        admission = Admission(3)
        peak, ended = await _peak(admission, 12)
        return peak, ended, admission.in_flight

    assert run(scenario) == (3, 12, 0)


def test_work_that_could_not_finish_in_its_budget_is_refused_at_arrival_without_queueing() -> None:
    async def scenario() -> tuple[int, int, str, int]:
        admission = await _primed(2, seconds=0.05)
        assert admission.service_time("reader") is not None
        # a standing queue: two in flight, ten waiting (about 0.25 s of work ahead)
        ahead = [asyncio.create_task(_work(admission, "reader", 0.05, budget=10)) for _ in range(12)]
        await _until(lambda: admission.waiting == 10)
        waiting_before = admission.waiting
        # 0.1 s of budget cannot cover a quarter of a second of queue: refused now, never queued
        refused = await _work(admission, "reader", 0.05, budget=0.1)
        waiting_after = admission.waiting
        results = await asyncio.gather(*ahead)
        return waiting_before, waiting_after, refused, results.count("done")

    before, after, refused, done = run(scenario)
    assert refused == "refused" and before == after == 10
    assert done == 12  # the queued ones, whose estimate held, all finished


def test_the_queue_holds_what_can_finish_in_the_budget_and_no_more() -> None:
    async def scenario() -> tuple[int, int, int]:
        admission = await _primed(1, seconds=0.02)
        # one slot, 20 ms a unit, a second of budget: about 40 can finish, the rest are told at once
        results = await asyncio.gather(*(_work(admission, "reader", 0.02, budget=1.0) for _ in range(150)))
        return results.count("done"), results.count("refused"), admission.left

    done, refused, left = run(scenario)
    assert 25 <= done <= 50 and refused == 150 - done and left == 0


def test_no_admitted_unit_runs_out_of_time_while_the_estimate_holds() -> None:
    async def scenario() -> tuple[list[str], int, int]:
        admission = await _primed(2, seconds=0.02)
        results = await asyncio.gather(*(_work(admission, "reader", 0.02, budget=0.3) for _ in range(80)))
        return list(results), admission.refused, admission.left

    results, refused, left = run(scenario)
    assert results.count("done") >= 10 and results.count("refused") == refused > 0
    assert left == 0  # every refusal was at arrival: none of the admitted ones waited in vain


def test_a_queued_unit_leaves_when_it_could_no_longer_finish() -> None:
    async def scenario() -> tuple[str, int]:
        admission = Admission(1)  # no estimate yet: the first waiters queue whatever their budget
        holder = asyncio.create_task(_work(admission, "reader", 0.5))
        await _until(lambda: admission.in_flight == 1)
        result = await _work(admission, "reader", 0.01, budget=0.2)
        await holder
        return result, admission.in_flight + admission.waiting

    result, left = run(scenario)
    assert result == "refused" and left == 0


def test_a_cancelled_waiter_leaks_no_slot() -> None:
    async def scenario() -> tuple[int, int, str]:
        admission = Admission(1)
        holder = asyncio.create_task(_work(admission, "reader", 0.05))
        await _until(lambda: admission.in_flight == 1)
        waiter = asyncio.create_task(_work(admission, "reader", 0.01))
        await _until(lambda: admission.waiting == 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await holder
        after = await _work(admission, "reader", 0.0)
        return admission.in_flight, admission.waiting, after

    assert run(scenario) == (0, 0, "done")


def test_a_slot_handed_to_a_waiter_as_it_is_cancelled_goes_on_to_the_next() -> None:
    async def scenario() -> tuple[str, int]:
        admission = Admission(1)
        holder_release = asyncio.Event()

        async def holder() -> None:
            async with admission.unit("reader"):
                await holder_release.wait()

        h = asyncio.create_task(holder())
        await _until(lambda: admission.in_flight == 1)
        first = asyncio.create_task(_work(admission, "reader", 0.0))
        second = asyncio.create_task(_work(admission, "reader", 0.0))
        await _until(lambda: admission.waiting == 2)
        holder_release.set()
        await h  # the slot is handed to `first`, which is cancelled before it runs
        first.cancel()
        result = await second
        with pytest.raises(asyncio.CancelledError):
            await first
        return result, admission.in_flight

    assert run(scenario) == ("done", 0)


def test_work_past_its_deadline_never_starts() -> None:
    async def scenario() -> None:
        admission = Admission(2)
        with request_deadline(time.perf_counter() - 0.01), pytest.raises(OutOfTime):
            async with admission.unit("reader"):
                raise AssertionError("started")

    run(scenario)


def test_the_limit_falls_when_latency_rises_and_rises_again_when_it_falls() -> None:
    """Fed measured service times (as each unit's release records them): the limit stays at its
    ceiling while latency is steady, falls when storage slows tenfold, and climbs back to the
    ceiling once it is fast again."""
    admission = Admission(16)
    for _ in range(50):
        admission.record("reader", 0.005)
    steady = admission.current_limit
    for _ in range(50):
        admission.record("reader", 0.05)
    slowed = admission.current_limit
    for _ in range(200):
        admission.record("reader", 0.005)
    assert (steady, admission.current_limit) == (16, 16) and slowed < 8


def test_the_limit_holds_while_the_worker_loop_lags_and_storage_does_not() -> None:
    """A flood's CPU work on the worker's own loop (here a callback that keeps the loop 30 ms a
    turn) makes 5 ms units take several times their best: a cut would serve fewer answers and
    not shorten the loop, so the limit holds; the same slowdown from storage cuts it (above)."""

    async def scenario() -> Admission:
        admission = await _primed(8, seconds=0.005)
        loop = asyncio.get_running_loop()
        hogging = True

        def hog() -> None:
            if hogging:
                until = time.perf_counter() + 0.03
                while time.perf_counter() < until:
                    pass
                loop.call_soon(hog)

        loop.call_soon(hog)
        try:
            await asyncio.gather(*(_work(admission, "reader", 0.005) for _ in range(48)))
        finally:
            hogging = False
        return admission

    admission = run(scenario)
    assert admission.current_limit == 8 and admission.held > 0


def test_a_queue_that_storage_serves_in_the_budget_is_not_refused_when_the_limit_is_cut() -> None:
    """Storage that serves one request at a time (Azurite, a hot partition): each unit takes
    longer the more are in flight, so service times measured at 8 in flight, divided among the
    fewer slots left after a cut, said a queue would take several times longer than it does, and
    callers storage would have served in a fraction of their budget were refused (at normal load,
    85 of 300 email summaries from 16 callers). The queue's measured pace holds whatever the
    limit: 16 callers in a loop, each unit 5 ms of storage (a queue of about 80 ms); the limit is
    cut to 2 under the standing queue, and the units that arrive after it, with a budget of
    350 ms, are all served."""

    async def scenario() -> tuple[int, int, int]:
        admission = Admission(8)
        storage = asyncio.Lock()
        served_before_cut = 0
        after_cut: list[str] = []

        async def caller() -> None:
            nonlocal served_before_cut
            while len(after_cut) < 160:
                cut = served_before_cut >= 160
                if cut and admission.limit > 2:
                    admission.limit = 2.0  # a cut, as the gradient makes one when storage slows
                try:
                    with request_deadline(time.perf_counter() + (0.35 if cut else 60.0)):
                        async with admission.unit("reader"), storage:
                            await asyncio.sleep(0.005)
                    outcome = "done"
                except Overloaded:
                    outcome = "refused"
                if cut:
                    after_cut.append(outcome)
                else:
                    served_before_cut += 1

        await asyncio.gather(*(caller() for _ in range(16)))
        return after_cut.count("done"), after_cut.count("refused"), admission.in_flight

    done, refused, in_flight = run(scenario)
    assert (refused, in_flight) == (0, 0) and done >= 160


def test_a_unit_that_read_nothing_is_no_sample_of_storage_time() -> None:
    """A request that makes no storage call (test connection, an MCP `tools/list`) holds its slot
    for next to nothing: counted as a sample, it would set the best latency near zero, and every
    real read after it would look many times slower than the best and cut the limit to one."""

    async def scenario() -> tuple[tuple[int, float | None], tuple[int, float | None], float | None]:
        admission = Admission(16)
        for _ in range(50):
            admission.record("reader", 0.02)
        steady = (admission.current_limit, admission.service_time("reader"))
        for _ in range(50):
            async with admission.unit("reader", counted=True):  # read nothing
                pass
        for _ in range(50):
            admission.record("reader", 0.02)
        after = (admission.current_limit, admission.service_time("reader"))
        async with admission.unit("reader", counted=True), admission.call("reader"):
            await asyncio.sleep(0.1)  # one that read: a sample
        return steady, after, admission.service_time("reader")

    steady, after, read = run(scenario)
    assert steady[0] == after[0] == 16 and steady[1] == after[1]
    assert read is not None and after[1] is not None and read > after[1]


def test_readers_keep_their_share_under_a_writers_flood_and_writers_theirs_under_a_readers() -> None:
    """A flood of one class holds every slot and a long queue; work of the other class that arrives
    then takes the next freed slots up to its share, ahead of the flood's queue (first come, first
    served alone would put it behind some 30 units of the flood)."""

    async def flood(flooding: str, other: str) -> tuple[list[int], int]:
        admission = Admission(8)  # readers keep 4 slots, writers 2
        starts = 0
        stop = asyncio.Event()

        async def flooder() -> None:
            nonlocal starts
            while not stop.is_set():
                async with admission.unit(flooding):  # type: ignore[arg-type]
                    starts += 1
                    await asyncio.sleep(0.01)

        flooders = [asyncio.create_task(flooder()) for _ in range(40)]
        await _until(lambda: admission.busy[flooding] == 8 and admission.waiting >= 30)  # its share and ours

        async def one() -> int:
            """How many of the flood's units started between this one's arrival and its start."""
            before = starts
            async with admission.unit(other):  # type: ignore[arg-type]
                overtaken = starts - before
                await asyncio.sleep(0.02)
            return overtaken

        overtaken = await asyncio.gather(*(one() for _ in range(12)))
        stop.set()
        await asyncio.gather(*flooders)
        return sorted(overtaken), admission.in_flight

    readers, left = run(lambda: flood("writer", "reader"))
    assert readers[:4] == [0, 0, 0, 0] and left == 0  # the readers' share came first
    writers, left = run(lambda: flood("reader", "writer"))
    assert writers[:2] == [0, 0] and left == 0  # and the writers', under a readers' flood


def test_no_limit_when_the_ceiling_is_zero() -> None:
    assert run(lambda: _peak(Admission(0), 20)) == (20, 20)


def test_a_refusal_is_a_503_that_says_the_service_is_overloaded() -> None:
    answered = as_answered(Overloaded("refused at arrival"))
    assert answered.status == 503 and answered.headers() == {"Retry-After": "1"}
    assert answered.error_code == "SERVICE_UNAVAILABLE" and "overloaded" in answered.message


def test_refusals_are_logged_once_a_second_each_line_saying_how_many_it_stands_for(
    log_lines: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    refusals = RefusalLog(every=1.0, clock=lambda: now[0])
    refusal = as_answered(Overloaded("reader work refused at arrival"))
    for n in range(100):  # a flood: 100 refusals in half a second
        now[0] = n * 0.005
        refusals.log(refusal)
    now[0] = 1.2
    refusals.log(refusal)
    lines = [r for r in log_lines.records if "refused at arrival" in r.getMessage()]
    assert [r.levelname for r in lines] == ["WARNING", "WARNING"]  # a shed, not a fault
    assert "more refused" not in lines[0].getMessage()
    assert lines[1].getMessage().endswith("(and 99 more refused since the last such line)")


# ---- through the service -------------------------------------------------------------------------


def test_a_flood_against_slow_storage_gets_answers_or_an_immediate_refusal_and_refused_requests_read_nothing(
    service: Service, azurite: Azurite, log_lines: pytest.LogCaptureFixture
) -> None:
    """Storage serves one request at a time, 50 ms each (20 a second); 40 callers at once with a
    1.5 s budget: what can finish in the budget is admitted, the rest refused at arrival."""
    service.load([doc(id="busy")])
    proxy = LoopbackProxy(azurite.port, delay=0.05, servers=1)
    try:
        service.set(
            INSIGHTS_STORAGE_CONNECTION_STRING=proxy.url_of(azurite.connection_string, azurite.port),
            REQUEST_BUDGET_SECONDS="1.5",
            STORAGE_READ_TIMEOUT_SECONDS="3",
            STORAGE_MAX_CONCURRENT_READS="4",
        )
        shared.storage.reset_store()
        token = service.token()

        def one(_: int) -> httpx.Response:
            with httpx.Client(base_url=service.url, timeout=10) as client:
                return client.get(HIGHLIGHTS, params=QUERY, headers={"Authorization": f"Bearer {token}"})

        assert one(0).status_code == 200  # the instance's first answer (it also checks the table's form)
        before = len(proxy.lines)
        assert one(0).status_code == 200
        calls_per_answer = len(proxy.lines) - before
        before = len(proxy.lines)
        with ThreadPoolExecutor(40) as pool:
            responses = list(pool.map(one, range(40)))
        calls = len(proxy.lines) - before
    finally:
        proxy.close()
        shared.storage.reset_store()
    answered = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 503]
    assert len(answered) + len(refused) == 40 and answered and refused
    assert all(r.json()["value"][0]["description"] == "Insight busy" for r in answered)
    # every refusal says overloaded (at arrival, or when the estimate stopped holding): none is
    # the deadline's "could not answer in time"
    assert all("overloaded" in r.json()["errorMessage"] for r in refused), [r.json() for r in refused]
    assert all(r.headers["Retry-After"] == "1" for r in refused)
    # storage calls came from the answered requests only
    assert calls <= len(answered) * calls_per_answer
    # each refusal is traceable by its own summary line; their detail is one line a second, not one each
    messages = [r.getMessage() for r in log_lines.records]
    for r in refused:
        assert any(f"request_id={r.headers['x-ms-client-request-id']} " in m and "status=503" in m for m in messages)
    details = [m for m in messages if "SERVICE_UNAVAILABLE" in m]
    assert 1 <= len(details) < len(refused) or len(refused) == 1, details
