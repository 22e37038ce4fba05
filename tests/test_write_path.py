"""The write path under concurrent writers and messy partner data, against Azurite: one current
version per document whatever the interleaving, dates from year 1 to 9999, honest failures."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

import shared.storage
from devhost.azurite import Azurite
from shared.storage import names_partition
from tests.conftest import TENANT_A, Service, attached, doc
from tests.proxies import LoopbackProxy
from tests.test_ingestion import DELETE, UPSERT, document_delete, highlights, rows, writer, writer_token

__all__ = ["writer"]  # the fixture, shared with the ingestion tests

SEEDED = int(__import__("os").environ.get("SEEDED", "5000"))
"""Records of the large tenant. The issue's size is 20,000 (SEEDED=20000), but Azurite's inserts
slow down as a table grows: seeding 20,000 records took more than 10 minutes here. The property
checked (one lookup per partition touched, none across partitions) does not depend on the size."""
ACTIVITIES = "/api/enhanceskills/activities"
EMAIL = "/api/enhanceskills/email-insights-v2"


def data_rows(service: Service) -> list[dict[str, Any]]:
    return [r for r in rows(service) if r["RowKey"][:2] in ("e|", "d|")]


def activity(id: str, when: str, **extra: Any) -> dict[str, Any]:
    return doc(
        "recordSummary",
        id=id,
        date_time=when,
        fields={"title": f"Activity {id}", "description": f"Did {id}"},
        **extra,
    )


def activity_ids(service: Service, **params: Any) -> list[str]:
    response = service.get(ACTIVITIES, {"recordType": "opportunity", "recordId": "opp-1", "top": 100, **params})
    assert response.status_code == 200, response.text
    return [item["title"].removeprefix("Activity ") for item in response.json()["value"]]


# ---- seen 1: concurrent writers -----------------------------------------------------------------


def test_eight_concurrent_writers_three_rounds_leave_one_row_and_a_delete_leaves_none(writer: Service) -> None:
    token = writer_token(writer)
    for round_ in range(3):
        barrier = threading.Barrier(8)
        answers: list[int] = []

        def send(n: int, round_: int = round_) -> None:
            body = {"documents": [doc(id="same", date_time=f"2025-0{round_ + 1}-{n + 10}T00:00:00Z")]}
            with httpx.Client(base_url=writer.url, timeout=30) as client:
                barrier.wait()
                answers.append(client.post(UPSERT, json=body, headers={"Authorization": f"Bearer {token}"}).status_code)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [200] * 8
        assert highlights(writer) == ["same"]
        stored = data_rows(writer)
        assert len(stored) == 1
        index = [r for r in rows(writer) if r["RowKey"] == "i|same"]
        assert len(index) == 1 and index[0]["Row"] == stored[0]["RowKey"]
        assert index[0]["Ver"].value == 8 * (round_ + 1)  # every write committed once, in some order
    deleted = writer.post(DELETE, document_delete("same"), token=token)
    assert deleted.json()["deleted"] == 1
    assert data_rows(writer) == []
    assert highlights(writer) == []


def test_concurrent_moves_of_a_document_between_contacts_leave_one_copy(writer: Service) -> None:
    """Writers race to move one record's email insight between contacts: whatever the order,
    the record and exactly one contact hold it, the contact of the highest version."""
    token = writer_token(writer)
    barrier = threading.Barrier(6)

    def send(n: int) -> None:
        body = {"documents": [attached("emailSummary", id="mail", record_id="opp-1", contact=f"c{n}@fabrikam.example")]}
        with httpx.Client(base_url=writer.url, timeout=30) as client:
            barrier.wait()
            assert client.post(UPSERT, json=body, headers={"Authorization": f"Bearer {token}"}).status_code == 200

    threads = [threading.Thread(target=send, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = data_rows(writer)
    home = [r for r in stored if "|r|" in r["PartitionKey"]]
    copies = [r for r in stored if "|c|" in r["PartitionKey"]]
    assert len(home) == 1 and len(copies) == 1
    assert copies[0]["Contact"] == home[0]["Contact"] and copies[0]["Ver"].value == home[0]["Ver"].value == 6


# ---- seen 2: the same document twice in one batch -----------------------------------------------


def test_the_last_occurrence_in_a_batch_wins_as_if_sent_alone(writer: Service) -> None:
    first = attached("emailSummary", id="twice", record_id="opp-1", contact="first@fabrikam.example")
    last = attached("emailSummary", id="twice", record_id="opp-1", contact="last@fabrikam.example")
    body = writer.post(UPSERT, {"documents": [first, last]}, token=writer_token(writer)).json()
    assert [r["status"] for r in body["results"]] == ["written", "written"]
    stored = data_rows(writer)
    assert sorted(r["PartitionKey"].rsplit("|", 1)[1] for r in stored) == ["last%40fabrikam.example", "opp-1"]
    assert all(r["Contact"] == "last@fabrikam.example" for r in stored)


# ---- seen 3: dates outside 1970-2286 ------------------------------------------------------------


DATES = {
    "year-1": "0001-01-01T00:00:00Z",
    "apollo": "1969-07-20T20:17:00Z",
    "epoch": "1970-01-01T00:00:00Z",
    "recent": "2025-05-31T23:45:00Z",
    "offset": "2025-06-01T00:30:00+01:00",  # 2025-05-31T23:30:00Z: older than "recent"
    "past-2286": "2286-11-20T17:46:40.001Z",
    "last": "9999-12-31T23:59:59.999Z",
}


def test_dates_from_year_1_to_9999_sort_newest_first_and_windows_work_from_any_bound(writer: Service) -> None:
    body = writer.post(
        UPSERT, {"documents": [activity(name, when) for name, when in DATES.items()]}, token=writer_token(writer)
    ).json()
    assert body["summary"]["written"] == len(DATES), body
    newest_first = ["last", "past-2286", "recent", "offset", "epoch", "apollo", "year-1"]
    assert activity_ids(writer) == newest_first
    items = writer.get(ACTIVITIES, {"recordType": "opportunity", "recordId": "opp-1", "top": 100}).json()["value"]
    assert items[-1]["dateTime"] == "0001-01-01T00:00:00Z"
    assert items[0]["dateTime"] == "9999-12-31T23:59:59.999Z"
    assert items[3]["dateTime"] == "2025-05-31T23:30:00Z"
    window = {"startDateTime": "1970-01-01T00:00:00Z", "endDateTime": "2100-01-01T00:00:00Z"}
    assert activity_ids(writer, **window) == ["recent", "offset", "epoch"]
    assert activity_ids(writer, startDateTime="0001-01-01T00:00:00Z") == newest_first
    assert activity_ids(writer, endDateTime="1970-01-01T00:00:00Z") == ["apollo", "year-1"]
    assert activity_ids(writer, startDateTime="2286-11-20T17:46:40Z") == ["last", "past-2286"]
    assert activity_ids(writer, startDateTime="2025-06-01T00:30:00+01:00", endDateTime="2025-06-01T00:45:00+01:00") == [
        "offset"
    ]


def test_instants_outside_year_1_to_9999_in_utc_are_invalid_not_500(writer: Service) -> None:
    body = writer.post(
        UPSERT,
        {
            "documents": [
                activity("before", "0001-01-01T00:00:00+01:00"),
                activity("after", "9999-12-31T23:30:00-01:00"),
            ]
        },
        token=writer_token(writer),
    ).json()
    assert [r["status"] for r in body["results"]] == ["invalid", "invalid"]
    assert all(r["error"].startswith("dateTime: dateTime is outside 0001-01-01") for r in body["results"])
    response = writer.get(
        ACTIVITIES, {"recordType": "opportunity", "recordId": "opp-1", "startDateTime": "0001-01-01T00:00:00+01:00"}
    )
    assert response.status_code == 400
    assert response.json()["details"] == {"parameter": "startDateTime"}


def test_a_stored_row_no_reader_understands_is_skipped_and_the_rest_served(writer: Service) -> None:
    writer.post(UPSERT, {"documents": [activity("fine", "2025-01-01T00:00:00Z")]}, token=writer_token(writer))
    good = data_rows(writer)[0]
    writer.table.upsert_entity({**good, "RowKey": good["RowKey"][:-4] + "bad", "Id": "bad", "Fields": "{not json"})
    assert activity_ids(writer) == ["fine"]


# ---- versions --------------------------------------------------------------------------------


def test_an_older_version_is_stale_and_changes_nothing(writer: Service) -> None:
    token = writer_token(writer)

    def send(version: int, text: str) -> dict[str, Any]:
        sent = doc(id="v", version=version, fields={"title": "Relecloud", "description": text})
        return writer.post(UPSERT, {"documents": [sent]}, token=token).json()["results"][0]  # type: ignore[no-any-return]

    assert send(1700000000000, "first")["status"] == "written"
    assert send(1700000000500, "second") == {
        "index": 0,
        "id": "v",
        "status": "written",
        "version": 1700000000500,
        "transaction": 1,
    }
    before = rows(writer)
    assert send(1700000000100, "late")["status"] == "stale"
    assert send(1700000000100, "late")["version"] == 1700000000500
    assert rows(writer) == before
    assert send(1700000000500, "second")["status"] == "written"  # a re-send of the stored revision
    assert rows(writer) == before
    assert highlights(writer) == ["second"]


def test_a_delete_is_a_version_too(writer: Service) -> None:
    token = writer_token(writer)
    target = document_delete("d")
    writer.post(UPSERT, {"documents": [doc(id="d", version=10)]}, token=token)
    stale = {"deleted": 0, "stale": 1, "failed": 0, "complete": True}
    assert writer.post(DELETE, {**target, "version": 5}, token=token).json() == stale
    assert highlights(writer) == ["d"]
    assert writer.post(DELETE, {**target, "version": 20}, token=token).json() == {**stale, "deleted": 1, "stale": 0}
    late = writer.post(UPSERT, {"documents": [doc(id="d", version=15)]}, token=token).json()
    assert late["results"][0]["status"] == "stale"
    assert highlights(writer) == []
    assert writer.post(UPSERT, {"documents": [doc(id="d", version=21)]}, token=token).json()["summary"]["written"] == 1
    assert highlights(writer) == ["d"]
    record = {"tenantId": TENANT_A, "scope": "record", "recordType": "opportunity", "recordId": "opp-1"}
    assert writer.post(DELETE, {**record, "version": 3}, token=token).json() == stale  # a record's delete: too
    assert highlights(writer) == ["d"]
    assert writer.post(DELETE, {**record, "version": 30}, token=token).json()["deleted"] == 1
    for late_version in (22, 30):  # below or at the record's delete: stale, whichever document
        for doc_id in ("d", "new"):
            late = writer.post(UPSERT, {"documents": [doc(id=doc_id, version=late_version)]}, token=token).json()
            assert late["results"][0]["status"] == "stale", (doc_id, late_version)
    assert (
        writer.post(UPSERT, {"documents": [doc(id="new", version=31)]}, token=token).json()["summary"]["written"] == 1
    )
    assert highlights(writer) == ["new"]


@pytest.mark.parametrize("version", [0, -1, "12", 1.5, True, 2**63])
def test_a_bad_version_is_invalid_naming_it(writer: Service, version: Any) -> None:
    body = writer.post(UPSERT, {"documents": [doc(id="x", version=version)]}, token=writer_token(writer)).json()
    assert body["results"][0]["status"] == "invalid"
    assert body["results"][0]["error"].startswith("version:")


# ---- seen 6: storage failing part-way -----------------------------------------------------------


@pytest.fixture
def flaky_storage(writer: Service, azurite: Azurite) -> Iterator[LoopbackProxy]:
    proxy = LoopbackProxy(azurite.port)
    writer.set(
        INSIGHTS_STORAGE_CONNECTION_STRING=proxy.url_of(azurite.connection_string, azurite.port),
        STORAGE_RETRIES="1",
    )
    shared.storage.reset_store()
    yield proxy
    proxy.close()
    shared.storage.reset_store()


def test_storage_reset_mid_ingestion_is_503_with_the_report_and_a_resend_completes(
    writer: Service, flaky_storage: LoopbackProxy
) -> None:
    token = writer_token(writer)
    batches: list[str] = []

    def reset_after_three_transactions(line: str) -> bool:
        if "$batch" not in line:
            return False
        batches.append(line)
        return len(batches) > 3

    flaky_storage.reset = reset_after_three_transactions
    documents = [doc(id=f"r{n}", record_id=f"opp-{n}") for n in range(8)] + [{"id": "broken"}]
    response = writer.post(UPSERT, {"documents": documents}, token=token)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    error = response.json()
    assert error["errorCode"] == "SERVICE_UNAVAILABLE"
    report = error["details"]
    statuses = [r["status"] for r in report["results"]]
    assert statuses.count("written") == 3 and statuses.count("failed") == 5 and statuses[-1] == "invalid"
    assert report["summary"] == {
        "received": 9,
        "written": 3,
        "stale": 0,
        "invalid": 1,
        "failed": 5,
        "partitions": 8,
        "transactions": 3,
    }
    failed = [r for r in report["results"] if r["status"] == "failed"]
    assert all(r["error"] and r["transaction"] for r in failed), failed
    assert len({r["transaction"] for r in failed}) == 5  # each its own transaction: nothing else dragged down
    written_ids = {r["id"] for r in report["results"] if r["status"] == "written"}
    assert {r["Id"] for r in data_rows(writer)} == written_ids

    flaky_storage.reset = None
    again = writer.post(UPSERT, {"documents": documents[:-1]}, token=token)
    assert again.status_code == 200, again.text
    assert sorted(r["Id"] for r in data_rows(writer)) == [f"r{n}" for n in range(8)]
    assert {r["Ver"].value for r in data_rows(writer)} == {1}  # the re-send changed nothing that had landed


def test_storage_reset_during_a_delete_is_503_and_a_resend_completes(
    writer: Service, flaky_storage: LoopbackProxy
) -> None:
    token = writer_token(writer)
    writer.post(UPSERT, {"documents": [doc(id=f"x{n}", record_id="opp-1") for n in range(3)]}, token=token)
    flaky_storage.reset = lambda line: "$batch" in line
    target = {"tenantId": TENANT_A, "scope": "record", "recordType": "opportunity", "recordId": "opp-1"}
    response = writer.post(DELETE, target, token=token)
    assert response.status_code == 503
    assert response.json()["details"] == {"deleted": 0, "stale": 0, "failed": 3, "complete": False}
    assert len(data_rows(writer)) == 3
    flaky_storage.reset = None
    assert writer.post(DELETE, target, token=token).json() == {"deleted": 3, "stale": 0, "failed": 0, "complete": True}
    assert data_rows(writer) == []


# ---- seen 7: bulk lookups per partition ---------------------------------------------------------


def test_a_scattered_batch_on_a_large_tenant_looks_each_partition_up_at_most_once(
    writer: Service, azurite: Azurite
) -> None:
    import asyncio

    from shared.documents import validate_document
    from shared.storage import data_entity, index_entity
    from shared.storage.keys import home_of

    async def seed() -> None:
        """20,000 records' documents, as the write path stores them (row and index entity)."""
        from shared.settings import Settings, batch_settings
        from shared.storage import InsightsStore, build_table_client

        turns = asyncio.Semaphore(32)

        async def one(store: Any, n: int) -> None:
            document, errors = validate_document(doc(id="seed", record_id=f"rec-{n:05d}"))
            assert document is not None, errors
            key = home_of(document)
            row = data_entity(document, key, key.home, 1, "")
            index = index_entity(key, key.home, row=row["RowKey"], version=1, twin="")
            async with turns:
                await store.table.submit([("upsert", row), ("upsert", index)])

        async with InsightsStore(build_table_client(batch_settings(Settings()))) as store:
            await asyncio.gather(*(one(store, n) for n in range(SEEDED)))

    writer.loop.run(seed(), timeout=600)
    proxy = LoopbackProxy(azurite.port)
    try:
        # watermarks are read again once half the settle time old: with ten minutes, once for the batch
        writer.set(
            INSIGHTS_STORAGE_CONNECTION_STRING=proxy.url_of(azurite.connection_string, azurite.port),
            WRITE_SETTLE_SECONDS="600",
        )
        shared.storage.reset_store()
        batch = [
            doc(
                id="seed" if n % 2 else f"new-{n}",
                record_id=f"rec-{(n * 7919) % 20_000:05d}",
                date_time="2026-01-01T00:00:00Z",
            )
            for n in range(1000)
        ]
        with httpx.Client(base_url=writer.url, timeout=60) as client:
            response = client.post(
                UPSERT, json={"documents": batch}, headers={"Authorization": f"Bearer {writer_token(writer)}"}
            )
        assert response.status_code == 200, response.text
        assert response.json()["summary"]["written"] == 1000
        queries = [unquote(line) for line in proxy.lines if line.startswith("GET ")]
        assert not [q for q in queries if "PartitionKey ge" in q or "PartitionKey gt" in q]
        per_partition: dict[str, int] = {}
        per_row: dict[tuple[str, str], int] = {}
        for query in (q for q in queries if "~meta" not in q):  # the table's form, read once
            # a point read names its partition in the path, a query in $filter
            pk = re.search(r"PartitionKey(?:=| eq )'([^']*)'", query).group(1)  # type: ignore[union-attr]
            per_partition[pk] = per_partition.get(pk, 0) + 1
            row = re.search(r"RowKey='([^']*)'", query)
            per_row[(pk, row.group(1) if row else "")] = per_row.get((pk, row.group(1) if row else ""), 0) + 1
        tenant = batch[0]["tenantId"]
        # the tenant has no names: its name index is asked once for the batch, not per record; its
        # watermark too (the tenant's; its contacts' partition only once the tenant says it has one)
        assert per_partition.pop(names_partition(tenant)) == 1
        assert per_partition.pop("~tenants") == 1  # its contacts' marks: none, so never queried
        assert f"{tenant}|~w" not in per_partition
        # each record's partition: one point read of the document's index entity and one of the
        # record's watermark, and nothing more
        assert len(per_partition) == 1000 and set(per_partition.values()) == {2}
        assert {row for (pk, row) in per_row if pk in per_partition} == {"i|seed", "~w"} | {
            f"i|new-{n}" for n in range(0, 1000, 2)
        }
        assert max(count for (pk, _), count in per_row.items() if pk in per_partition) == 1
    finally:
        proxy.close()
        shared.storage.reset_store()


# ---- seen 8: expiry compared as instants ----------------------------------------------------------


def test_expiry_is_compared_as_instants(writer: Service) -> None:
    from datetime import UTC, datetime, timedelta

    soon = datetime.now(UTC) + timedelta(minutes=5)
    whole = soon.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    token = writer_token(writer)
    writer.post(UPSERT, {"documents": [doc(id="whole", expiresAt=whole)]}, token=token)
    stored = next(r for r in data_rows(writer) if r["Id"] == "whole")
    assert stored["Exp"] == whole.replace("Z", ".000Z")  # one width for every instant
    # a first-form row with the short form, expired half a second ago by the clock of the read,
    # in a table that may hold such rows
    writer.table.delete_entity("~meta", "schema")
    shared.storage.reset_store()
    past = (datetime.now(UTC) - timedelta(milliseconds=500)).replace(microsecond=0)
    writer.table.upsert_entity(
        {**stored, "RowKey": "d|0000000000001|short", "Id": "short", "V": 1, "Exp": past.strftime("%Y-%m-%dT%H:%M:%SZ")}
    )
    assert highlights(writer) == ["whole"]


# ---- email identities -----------------------------------------------------------------------------


def test_the_same_id_on_two_records_and_a_contact_is_three_documents_after_any_writes(writer: Service) -> None:
    token = writer_token(writer)
    documents = [
        attached("emailSummary", id="latest", record_id="R1"),
        attached("emailSummary", id="latest", record_id="R2"),
        attached("emailSummary", id="latest", contact="megan@fabrikam.example"),
        attached(
            "emailSummary",
            id="latest",
            record_id="R1",
            contact="megan@fabrikam.example",
            date_time="2025-04-01T00:00:00Z",
        ),
    ]
    assert writer.post(UPSERT, {"documents": documents}, token=token).json()["summary"]["written"] == 4
    email = {
        "resourceData": {"from": "megan@fabrikam.example", "to": ["me@contoso.example"]},
        "relatedEntities": [
            {"entityId": "R1", "entityType": "opportunity"},
            {"entityId": "R2", "entityType": "opportunity"},
        ],
    }
    response = writer.post(EMAIL, email)
    assert response.status_code == 200, response.text
    assert len(response.json()["value"]) == 3
    # R1's document with a contact has its copy beside the contact's own document of the same id
    contact_rows = [r for r in data_rows(writer) if "|c|" in r["PartitionKey"]]
    assert sorted(r["RowKey"].split("|", 2)[2] for r in contact_rows) == ["latest", "latest|r|opportunity|R1"]


def lookups_of(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The partitions the write path looks up, one entry a lookup, as they happen."""
    import shared.storage._writer

    lookups: list[str] = []
    real = shared.storage._writer.Writer._lookup

    async def spy(self: Any, pk: str, keys: Any) -> Any:
        lookups.append(pk)
        return await real(self, pk, keys)

    monkeypatch.setattr(shared.storage._writer.Writer, "_lookup", spy)
    return lookups


def test_a_partition_that_is_a_home_and_a_copys_is_looked_up_once(
    writer: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = lookups_of(monkeypatch)
    batch = [
        attached("emailSummary", id="own", contact="megan@fabrikam.example"),
        attached("emailSummary", id="deal", record_id="opp-1", contact="megan@fabrikam.example"),
    ]
    for _ in range(2):  # new, then known
        lookups.clear()
        body = writer.post(UPSERT, {"documents": batch}, token=writer_token(writer)).json()
        assert body["summary"]["written"] == 2
        assert sorted(lookups) == sorted(set(lookups)) and len(lookups) == 2
    assert len(data_rows(writer)) == 3


def test_a_contact_partition_that_takes_copies_from_several_homes_is_looked_up_once(
    writer: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A buyer on three deals: the three records' email summaries all have their copy in the
    contact's partition, written once the last of the three homes has committed."""
    lookups = lookups_of(monkeypatch)
    batch = [
        attached("emailSummary", id=f"deal-{n}", record_id=f"opp-{n}", contact="megan@fabrikam.example")
        for n in range(3)
    ]
    for _ in range(2):  # new, then moved to a new dateTime
        lookups.clear()
        body = writer.post(UPSERT, {"documents": batch}, token=writer_token(writer)).json()
        assert body["summary"]["written"] == 3
        assert len(lookups) == 4 and len(set(lookups)) == 4, lookups  # three homes, one contact
        batch = [{**d, "dateTime": "2025-04-01T10:00:00Z"} for d in batch]
    assert len(data_rows(writer)) == 6


def test_a_request_cut_by_its_deadline_leaves_whole_documents_for_the_resend(
    writer: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document's copy follows its home's commit in the same turn: the deadline cuts the batch
    between documents, not between every home and every copy (which made each re-send look up
    again every home it had already written, only to find it done: at 200,000 documents that was
    a third more storage calls for the same batch)."""
    import ingestion.api
    from shared.storage._writer import Writer
    from shared.storage.errors import Unavailable
    from shared.storage.keys import is_contact_partition

    monkeypatch.setattr(ingestion.api, "WRITE_CONCURRENCY", 1)  # one document in flight at a time
    checks = 0

    def deadline_after_some_calls() -> None:  # the request's time, counted in storage steps
        nonlocal checks
        checks += 1
        if checks > 30:
            raise Unavailable("not attempted: the request's time ran out")

    monkeypatch.setattr(Writer, "_check_time", staticmethod(deadline_after_some_calls))
    batch = [
        attached("emailSummary", id=f"d{n}", record_id=f"opp-{n}", contact=f"c{n}@fabrikam.example") for n in range(20)
    ]
    first = writer.post(UPSERT, {"documents": batch}, token=writer_token(writer))
    assert first.status_code == 503, first.text
    results = first.json()["details"]["results"]
    written = [r["id"] for r in results if r["status"] == "written"]
    assert written and len(written) < 20  # cut part-way

    def sides() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for row in data_rows(writer):
            found.setdefault(row["Id"], set()).add("copy" if is_contact_partition(row["PartitionKey"]) else "home")
        return found

    stored = sides()
    assert all(stored.get(name) == {"home", "copy"} for name in written)
    half_done = [name for name, where in stored.items() if where == {"home"}]
    assert len(half_done) <= 1, half_done  # only the document in flight when time ran out

    checks = -10_000  # time enough for the re-send
    failed = [batch[r["index"]] for r in results if r["status"] == "failed"]
    again = writer.post(UPSERT, {"documents": failed}, token=writer_token(writer))
    assert again.status_code == 200, again.text
    assert all(where == {"home", "copy"} for where in sides().values()) and len(sides()) == 20
