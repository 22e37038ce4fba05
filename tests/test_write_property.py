"""A property of the write path, against Azurite: whatever the interleaving of concurrent writers
sending writes with distinct explicit versions, moves (a new dateTime, a new contact, no contact)
and deletes, the table ends equal to a model built only from the versions: per document, the
highest version wins, and a delete is a version too. The name index follows the same model: the
record's name is its highest live version's. The model knows nothing of the code."""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shared.storage._batches
import shared.storage._writer
from shared.documents import validate_document
from shared.storage import delete, names_partition, write
from shared.storage.keys import DocKey, RecordRef, partition_key
from tests.conftest import TENANT_A, Service, attached

POINT = "emailSummary"
IDS = ("p0", "p1")
DATES = ("2025-01-01T00:00:00Z", "2025-06-01T00:00:00Z", "1969-12-31T23:59:59Z")
CONTACTS = (None, 0, 1)
WRITERS = 4

operation = st.fixed_dictionaries(
    {
        "writer": st.integers(0, WRITERS - 1),
        "id": st.sampled_from(IDS),
        "delete": st.booleans(),
        "date": st.sampled_from(DATES),
        "contact": st.sampled_from(CONTACTS),
        "pause": st.sampled_from((0.0, 0.0, 0.0, 0.002)),
        "stall": st.sampled_from((0.0, 0.0, 0.01, 0.05)),
        "crash": st.sampled_from((False, False, False, True)),
    }
)
STALL: contextvars.ContextVar[float] = contextvars.ContextVar("stall", default=0.0)
CRASH: contextvars.ContextVar[bool] = contextvars.ContextVar("crash", default=False)


@pytest.fixture(autouse=True)
def stalling_writers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer may stall between its home's commit and its copy (a slow or paused worker: the
    interleavings where copies of different versions race), or die there (its copy never
    written, and the partner re-sends the write later)."""
    copies = shared.storage._writer.Writer._copies

    async def stalled(self: Any, changes: Any) -> None:
        await asyncio.sleep(STALL.get())
        if not CRASH.get():
            await copies(self, changes)

    monkeypatch.setattr(shared.storage._writer.Writer, "_copies", stalled)
    refresh_names = shared.storage._batches.refresh_names

    async def dies_before_names(*args: Any, **kwargs: Any) -> None:
        if not CRASH.get():  # a writer that dies after its home commit refreshes no name either
            await refresh_names(*args, **kwargs)

    monkeypatch.setattr(shared.storage._batches, "refresh_names", dies_before_names)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(operation, min_size=1, max_size=16), versions=st.randoms(use_true_random=False))
def test_any_interleaving_ends_as_the_highest_versions_say(
    service: Service, ops: list[dict[str, Any]], versions: Any
) -> None:
    run = uuid.uuid4().hex[:10]
    record = f"opp-{run}"
    contacts = [f"c{n}-{run}@fabrikam.example" for n in range(2)]
    numbers = list(range(1, len(ops) + 1))
    versions.shuffle(numbers)
    for op, version in zip(ops, numbers, strict=True):
        op["version"] = version
        op["contact_email"] = None if op["contact"] is None else contacts[op["contact"]]

    async def writer(mine: list[dict[str, Any]]) -> None:
        for op in mine:
            await asyncio.sleep(op["pause"])
            STALL.set(op["stall"])
            CRASH.set(op["crash"])
            await send(op)

    async def send(op: dict[str, Any]) -> None:
        if op["delete"]:
            home = partition_key(TENANT_A, POINT, RecordRef.record("opportunity", record))
            report = await delete(service.store, [DocKey(home, op["id"])], op["version"])
        else:
            data = attached(POINT, id=op["id"], record_id=record, contact=op["contact_email"], date_time=op["date"])
            named = {**data, "version": op["version"], "recordName": f"Name{op['version']} deal"}
            document, errors = validate_document(named)
            assert document is not None, errors
            report = await write(service.store, [document])
        assert report.outcomes[0].status in ("written", "stale", "absent"), report.outcomes

    async def all_writers() -> None:
        await asyncio.gather(*(writer([op for op in ops if op["writer"] == w]) for w in range(WRITERS)))
        for op in ops:  # the partner re-sends what died half-way, as it would after no answer
            if op["crash"]:
                await send(op)

    service.run(all_writers())

    expected: set[tuple[str, str, str, int]] = set()
    for doc_id in IDS:
        mine = [op for op in ops if op["id"] == doc_id]
        if not mine:
            continue
        last = max(mine, key=lambda op: op["version"])
        if last["delete"]:
            continue
        when = last["date"].replace("Z", ".000Z")
        expected.add(("r", doc_id, when, last["version"]))
        if last["contact_email"]:
            expected.add((f"c|{last['contact_email']}", doc_id, when, last["version"]))
    found = set()
    for entity in service.table.query_entities(
        "RowKey ge @lo and RowKey lt @hi and ( RecordId eq @record or Contact eq @c0 or Contact eq @c1 )",
        parameters={"lo": "d|", "hi": "e}", "record": record, "c0": contacts[0], "c1": contacts[1]},
    ):
        kind = entity["PartitionKey"].split("|")[2]
        where = "r" if kind == "r" else f"c|{entity['Contact']}"
        found.add((where, entity["Id"], entity["DateTime"], entity["Ver"].value))
    assert found == expected

    live = [version for where, _, _, version in expected if where == "r"]
    entries = [
        (e["Name"], e["Ver"].value)
        for e in service.table.query_entities(
            "PartitionKey eq @pk and RowKey eq @row",
            parameters={"pk": names_partition(TENANT_A), "row": f"n|opportunity|{record}"},
        )
    ]
    assert entries == ([(f"Name{max(live)} deal", max(live))] if live else [])


def test_a_writer_that_died_after_its_home_commit_leaves_no_copy_behind_a_later_move(service: Service) -> None:
    """c0 holds version 1's copy; version 2 (contact c1) commits at home and dies before its
    copy step; version 3 has no contact. The home remembers c0 and c1 as partitions a copy may
    still be in, so version 3's writer clears both, and the late re-send of version 2 is stale."""
    run = uuid.uuid4().hex[:10]
    record = f"opp-{run}"
    c0, c1 = (f"c{n}-{run}@fabrikam.example" for n in range(2))

    def document(version: int, contact: str | None) -> Any:
        data = attached(POINT, id="moving", record_id=record, contact=contact)
        found, errors = validate_document({**data, "version": version})
        assert found is not None, errors
        return found

    async def story() -> list[str]:
        statuses = [(await write(service.store, [document(1, c0)])).outcomes[0].status]
        CRASH.set(True)
        statuses.append((await write(service.store, [document(2, c1)])).outcomes[0].status)
        CRASH.set(False)
        statuses.append((await write(service.store, [document(3, None)])).outcomes[0].status)
        statuses.append((await write(service.store, [document(2, c1)])).outcomes[0].status)
        return statuses

    assert service.run(story()) == ["written", "written", "written", "stale"]
    stored = [
        (e["PartitionKey"].split("|")[2], e["Ver"].value)
        for e in service.table.query_entities(
            "RowKey ge @lo and RowKey lt @hi and ( RecordId eq @record )",
            parameters={"lo": "e|", "hi": "e}", "record": record},
        )
    ]
    assert stored == [("r", 3)]
