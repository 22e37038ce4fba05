"""The write path's rules (docs/write-rules.md), one test for each way they were seen broken: a
re-sent delete repairs its copies, a delete of any scope holds against a late write, one version
has one text, the purge and stale writes do not move a document's retention, transactions fit the
service, `migrate` keeps the newest, a tenant's delete runs in steps and leaves no address behind,
the name index follows live documents only, a batch orders by version, reads are bounded, keys
are exact, and a re-delete deletes nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import shared.storage
from devhost.azurite import Azurite
from tests.conftest import TENANT_A, TENANT_B, Service, attached, doc
from tests.proxies import LoopbackProxy
from tests.test_data_cli import cli
from tests.test_ingestion import (
    DELETE,
    UPSERT,
    WRITER,
    delete_fully,
    document_delete,
    highlights,
    rows,
    writer,
    writer_token,
)
from tests.test_storage_forms import first_form, store_first_form

__all__ = ["writer"]

EMAIL = "/api/enhanceskills/email-insights-v2"
MEGAN = "megan@fabrikam.example"
RECORD = {"tenantId": TENANT_A, "scope": "record", "recordType": "opportunity", "recordId": "opp-1"}


def upsert(service: Service, *documents: dict[str, Any]) -> list[dict[str, Any]]:
    response = service.post(UPSERT, {"documents": list(documents)}, token=writer_token(service))
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def statuses(service: Service, *documents: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(r["status"], r.get("version")) for r in upsert(service, *documents)]


def holding(service: Service, text: str) -> list[tuple[str, str]]:
    """Every entity of the table that carries `text` in any value (or key)."""
    found = []
    for entity in service.table.list_entities():
        values = json.dumps({k: str(v) for k, v in entity.items()}) + json.dumps(dict(entity.metadata), default=str)
        if text.lower() in values.lower():
            found.append((entity["PartitionKey"], entity["RowKey"]))
    return found


def mail(id: str, text: str, version: int | None = None, **extra: Any) -> dict[str, Any]:
    """An email summary of opp-1 and Megan, stored at the record and copied to the contact."""
    data = attached("emailSummary", id=id, record_id="opp-1", contact=MEGAN, **extra)
    data["fields"] = {"insight": text}
    if version is not None:
        data["version"] = version
    return data


def insights_of(service: Service, related: bool) -> list[str]:
    """What the email summary serves for a mail from Megan: the contact's side alone, or with opp-1."""
    body: dict[str, Any] = {"resourceData": {"from": MEGAN}}
    if related:
        body["relatedEntities"] = [{"entityId": "opp-1", "entityType": "opportunity"}]
    response = service.post(EMAIL, body)
    assert response.status_code == 200, response.text
    return [item["insight"] for item in response.json()["value"]]


def side_texts(service: Service, id: str) -> dict[str, str]:
    """The stored text of a document on each side (`r` its record's partition, `c` the contact's)."""
    return {
        e["PartitionKey"].split("|")[2]: json.loads(e["Fields"])["insight"]
        for e in rows(service)
        if e.get("Id") == id and e["RowKey"].startswith("e|")
    }


@pytest.fixture
def flaky(writer: Service, azurite: Azurite) -> Iterator[LoopbackProxy]:
    proxy = LoopbackProxy(azurite.port)
    writer.set(
        INSIGHTS_STORAGE_CONNECTION_STRING=proxy.url_of(azurite.connection_string, azurite.port), STORAGE_RETRIES="1"
    )
    shared.storage.reset_store()
    yield proxy
    proxy.close()
    shared.storage.reset_store()


def reset_nth_batch(proxy: LoopbackProxy, n: int) -> None:
    """Storage resets the connection of the n-th transaction from now, and only that one."""
    seen: list[str] = []

    def rule(line: str) -> bool:
        if "$batch" not in line:
            return False
        seen.append(line)
        return len(seen) == n

    proxy.reset = rule


# ---- seen 1: a re-sent record delete repairs the copy its fault left -----------------------------


def test_a_record_delete_cut_between_home_and_copy_is_completed_by_its_resend(
    writer: Service, flaky: LoopbackProxy
) -> None:
    upsert(writer, mail("m1", "Budget approved"))
    assert insights_of(writer, related=False) == ["Budget approved"]
    reset_nth_batch(flaky, 2)  # the record's transaction commits, the contact's does not
    cut = writer.post(DELETE, RECORD, token=writer_token(writer))
    assert cut.status_code == 503
    assert cut.json()["details"]["failed"] == 1
    flaky.reset = None
    again = writer.post(DELETE, RECORD, token=writer_token(writer))
    assert again.status_code == 200, again.text
    assert again.json()["failed"] == 0 and again.json()["complete"] is True
    assert insights_of(writer, related=False) == []
    assert insights_of(writer, related=True) == []
    assert holding(writer, "Budget approved") == []


# ---- seen 2: a delete of any scope holds against a late retry -------------------------------------


def test_a_tenant_delete_holds_against_the_retry_of_an_earlier_write(writer: Service) -> None:
    token = writer_token(writer)
    upsert(writer, doc(id="d", version=1000), doc(id="other", record_id="opp-2", version=10))
    done = delete_fully(writer, {"tenantId": TENANT_A, "scope": "tenant"}, token)
    assert done["deleted"] == 2
    assert statuses(writer, doc(id="d", version=999)) == [("stale", None)]  # the retry, sent before the delete
    assert statuses(writer, doc(id="new", record_id="opp-3", version=1000)) == [("stale", None)]
    assert highlights(writer) == []
    assert statuses(writer, doc(id="d", version=1001)) == [("written", 1001)]  # the next revision lands
    assert highlights(writer) == ["d"]


def test_a_purge_that_storage_failed_part_way_says_so_and_the_next_run_completes_it(
    writer: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that answers is complete: one whose document storage failed raises (the timer logs
    it, the command exits 2) and keeps that document's entry, so a second run purges it. (It
    answered 0, which read as "nothing left", and the document stayed until the next schedule.)"""
    from shared.storage import purge_expired
    from shared.storage._writer import Writer
    from shared.storage.errors import Unavailable

    soon = datetime.now(UTC) + timedelta(days=1)
    expires = soon.isoformat().replace("+00:00", "Z")
    upsert(
        writer, doc(id="d", version=5, expiresAt=expires), doc(id="e", record_id="opp-2", version=5, expiresAt=expires)
    )
    lookup = Writer._lookup
    calls = 0

    async def reset_once(self: Any, pk: str, keys: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Unavailable("connection reset by storage")
        return await lookup(self, pk, keys)

    monkeypatch.setattr(Writer, "_lookup", reset_once)
    with pytest.raises(Unavailable, match=r"1 expired document\(s\) not purged .*connection reset"):
        writer.run(purge_expired(writer.store, now=soon + timedelta(seconds=1)))
    assert len([text for text in ("Insight d", "Insight e") if holding(writer, text)]) == 1  # the other went
    assert writer.run(purge_expired(writer.store, now=soon + timedelta(seconds=1))) == 1
    assert holding(writer, "Insight d") == holding(writer, "Insight e") == []
    assert writer.run(purge_expired(writer.store, now=soon + timedelta(seconds=1))) == 0


def test_a_purge_whose_name_refresh_failed_completes_it_when_run_again(
    writer: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record's last document is purged but its name entry could not be refreshed: the next
    run finds the document already purged and still refreshes the entry (it refreshed only what it
    purged itself, so the record kept the name of a document no longer there). Found by the write
    model's long run."""
    import shared.storage._names
    from shared.storage import names_partition, purge_expired
    from shared.storage.errors import Unavailable

    soon = datetime.now(UTC) + timedelta(days=1)
    upsert(writer, doc(id="d", recordName="Fabrikam expansion", expiresAt=soon.isoformat().replace("+00:00", "Z")))
    assert holding(writer, "Fabrikam expansion")  # its row and the record's name entry
    refresh = shared.storage._names.refresh
    calls = 0

    async def fails_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Unavailable("connection reset by storage")
        return await refresh(*args, **kwargs)

    monkeypatch.setattr(shared.storage._names, "refresh", fails_once)
    with pytest.raises(Unavailable, match="name index not updated"):
        writer.run(purge_expired(writer.store, now=soon + timedelta(seconds=1)))
    left = holding(writer, "Fabrikam expansion")
    assert left and {pk for pk, _ in left} == {names_partition(TENANT_A)}, left  # only the name entry
    assert writer.run(purge_expired(writer.store, now=soon + timedelta(seconds=1))) == 0  # purged before
    assert holding(writer, "Fabrikam expansion") == []


def test_a_versioned_tenant_and_contact_delete_refuse_every_write_at_or_below_them(writer: Service) -> None:
    token = writer_token(writer)
    upsert(writer, mail("m1", "Call notes of the week", version=5))
    done = delete_fully(writer, {"tenantId": TENANT_A, "scope": "contact", "contactEmail": MEGAN, "version": 50}, token)
    assert done["deleted"] == 1
    # the one trace of the person is a watermark keyed by a salted hash: nothing names the address
    assert holding(writer, MEGAN) == [] and holding(writer, MEGAN.replace("@", "%40")) == []
    assert holding(writer, "Call notes of the week") == []
    assert statuses(writer, mail("m1", "late", version=50), mail("m2", "late too", version=7)) == [
        ("stale", None),
        ("stale", None),
    ]
    assert insights_of(writer, related=True) == []
    assert statuses(writer, mail("m2", "after", version=51)) == [("written", 51)]
    assert insights_of(writer, related=True) == ["after"]
    delete_fully(writer, {"tenantId": TENANT_A, "scope": "tenant", "version": 100}, token)
    assert statuses(writer, doc(id="x", version=100), doc(id="y", version=101)) == [("stale", None), ("written", 101)]
    assert statuses(writer, doc(id="b", tenant=TENANT_B, version=1)) == [("written", 1)]  # another tenant: not covered


def test_an_unversioned_tenant_delete_is_marked_at_the_highest_document_version(writer: Service) -> None:
    """A name line without a version counts as written now (milliseconds): its time is not a
    document's version, and the tenant's mark does not take it (found by the write model)."""
    token = writer_token(writer)
    upsert(writer, doc(id="d", version=3))
    line = {"tenantId": TENANT_A, "recordType": "opportunity", "recordId": "opp-1", "recordName": "Contoso renewal"}
    assert upsert(writer, line)[0]["status"] == "written"
    delete_fully(writer, {"tenantId": TENANT_A, "scope": "tenant"}, token)
    assert statuses(writer, doc(id="d", version=3)) == [("stale", None)]
    assert statuses(writer, doc(id="d", version=4)) == [("written", 4)]


# ---- seen 3: one version, one text ---------------------------------------------------------------


def expected_winner(id: str, *texts: str) -> str:
    """The rule for one version written twice: the greater digest of the canonical content."""
    from shared.documents import validate_document
    from shared.storage._entities import digest_of

    def digest(text: str) -> str:
        document, errors = validate_document(mail(id, text, version=5))
        assert document is not None, errors
        return digest_of(document)

    return max(texts, key=digest)


@pytest.mark.parametrize("id", ["m1", "m2", "m3"])
def test_two_writes_of_one_version_end_as_the_same_text_in_either_order(writer: Service, id: str) -> None:
    a, b = "Renewal at risk", "Renewal on track"
    for first, second, name in ((a, b, id), (b, a, f"{id}-reversed")):
        winner = expected_winner(name, a, b)
        assert statuses(writer, mail(name, first, version=5)) == [("written", 5)]
        answer = statuses(writer, mail(name, second, version=5))
        assert answer == ([("written", 5)] if winner == second else [("stale", 5)]), (name, winner)
        assert side_texts(writer, name) == {"r": winner, "c": winner}
        # the loser, re-sent, stays stale; the winner re-sent is a re-send
        assert statuses(writer, mail(name, a if winner == b else b, version=5)) == [("stale", 5)]
        assert statuses(writer, mail(name, winner, version=5)) == [("written", 5)]
        assert side_texts(writer, name) == {"r": winner, "c": winner}


def test_a_second_writer_of_the_same_version_never_leaves_the_sides_disagreeing(
    writer: Service, flaky: LoopbackProxy
) -> None:
    reset_nth_batch(flaky, 2)  # the first writer's home commits, its copy does not
    cut = writer.post(UPSERT, {"documents": [mail("m", "Text A", version=5)]}, token=writer_token(writer))
    assert cut.status_code == 503
    flaky.reset = None
    writer.post(UPSERT, {"documents": [mail("m", "Text B", version=5)]}, token=writer_token(writer))
    stored = side_texts(writer, "m")
    assert len(set(stored.values())) == 1  # one text, wherever it is stored
    # the first writer sends again, as its 503 said: both sides now hold the one text
    writer.post(UPSERT, {"documents": [mail("m", "Text A", version=5)]}, token=writer_token(writer))
    stored = side_texts(writer, "m")
    assert set(stored) == {"r", "c"} and stored["r"] == stored["c"]
    assert insights_of(writer, related=False) == insights_of(writer, related=True) == [stored["r"]]


# ---- seen 4: the purge and an unversioned delete leave room for the next revision ----------------


def test_the_partners_next_revision_lands_after_a_purge(writer: Service) -> None:
    from shared.storage import purge_expired

    soon = datetime.now(UTC) + timedelta(days=1)
    upsert(writer, doc(id="d", version=5, expiresAt=soon.isoformat().replace("+00:00", "Z")))
    assert writer.run(purge_expired(writer.store, now=soon + timedelta(seconds=1))) == 1
    assert holding(writer, "Insight d") == []
    assert statuses(writer, doc(id="d", version=6)) == [("written", 6)]
    assert statuses(writer, doc(id="d", version=5)) == [("stale", 6)]
    assert highlights(writer) == ["d"]


def test_the_next_revision_lands_after_an_unversioned_delete(writer: Service) -> None:
    upsert(writer, doc(id="d", version=5))
    assert writer.post(DELETE, document_delete("d"), token=writer_token(writer)).json()["deleted"] == 1
    assert statuses(writer, doc(id="d", version=5)) == [("stale", None)]  # the deleted revision, re-sent
    assert statuses(writer, doc(id="d", version=6)) == [("written", 6)]
    assert highlights(writer) == ["d"]


# ---- seen 5: a stale write does not move retention ----------------------------------------------


def test_a_stale_write_with_an_earlier_expiry_neither_shortens_nor_extends_retention(writer: Service) -> None:
    from shared.storage import purge_expired

    # both within one day of the expiry index, hours apart
    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    hour = lambda n: (now + timedelta(hours=n)).isoformat().replace("+00:00", "Z")  # noqa: E731
    upsert(writer, doc(id="d", version=5, expiresAt=hour(9)))
    assert statuses(writer, doc(id="d", version=4, expiresAt=hour(2), fields={"title": "t", "description": "old"})) == [
        ("stale", 5)
    ]
    assert writer.run(purge_expired(writer.store, now=now + timedelta(hours=3))) == 0
    assert highlights(writer) == ["d"]
    assert writer.run(purge_expired(writer.store, now=now + timedelta(hours=10))) == 1
    assert holding(writer, "Insight d") == []
    assert not [r for r in rows(writer) if r["PartitionKey"] == "~expiry" or r["RowKey"].startswith("x|")]


# ---- seen 6: transactions fit the service, by bytes as well as count ------------------------------


def related(id: str, fill: str, localized: str | None = None) -> dict[str, Any]:
    """A related record (recordDetails) of opp-1 carrying `fill` in its additional properties."""
    data = doc("recordDetails", id=id)
    data["fields"]["additionalProperties"] = {f"Note {n}": fill for n in range(20)}
    if localized:
        data["localized"] = {"fr": {"additionalProperties": {f"Note {n}": localized for n in range(20)}}}
    return data


def test_thirty_large_documents_of_one_record_are_all_written(writer: Service) -> None:
    # each about 340 KB as the SDK sends it (non-ASCII escaped): 30 of them are 10 MB, one record
    documents = [related(f"big-{n}", "é" * 1400, localized="è" * 1400) for n in range(30)]
    response = writer.post(UPSERT, {"documents": documents}, token=writer_token(writer))
    assert response.status_code == 200, response.text[:500]
    summary = response.json()["summary"]
    assert summary["written"] == 30 and summary["transactions"] >= 3
    assert len([e for e in rows(writer) if e["RowKey"].startswith("e|")]) == 30


def test_a_document_too_large_for_the_table_is_invalid_naming_its_largest_field(writer: Service) -> None:
    too_big = related("huge", "x" * 100)
    too_big["fields"]["additionalProperties"]["Long note"] = "y" * 40_000
    results = upsert(writer, too_big, related("fine", "z"))
    assert results[0]["status"] == "invalid"
    assert results[0]["error"].startswith("fields.additionalProperties:"), results[0]["error"]
    assert results[1]["status"] == "written"


# ---- seen 7: migrate keeps the newest side of a diverged pair ------------------------------------


def test_migrate_keeps_the_most_recently_written_first_form_row(writer: Service) -> None:
    older = mail("m", "Written first")
    newer = mail("m", "Written last")
    store_first_form(writer, older)
    time.sleep(1.1)  # the table's Timestamp has a second's grain on some emulators
    [record_side] = [e for e in first_form(newer) if "|r|" in e["PartitionKey"]]
    writer.table.upsert_entity(record_side)  # the old form wrote its two sides without a transaction
    assert cli("migrate").returncode == 0
    assert side_texts(writer, "m") == {"r": "Written last", "c": "Written last"}
    # and the other way round: the contact's side is the newer
    store_first_form(writer, mail("n", "Written first"))
    time.sleep(1.1)
    [contact_side] = [e for e in first_form(mail("n", "Written last")) if "|c|" in e["PartitionKey"]]
    writer.table.upsert_entity(contact_side)
    assert cli("migrate").returncode == 0
    assert side_texts(writer, "n") == {"r": "Written last", "c": "Written last"}


# ---- seen 8: a tenant's delete runs in bounded steps and leaves no address -------------------------


def test_a_tenant_delete_runs_in_steps_and_leaves_nothing_naming_its_contacts(writer: Service) -> None:
    from shared.storage import offboard_tenant

    soon = (datetime.now(UTC) + timedelta(days=30)).isoformat().replace("+00:00", "Z")
    documents = [
        mail(f"m{n}", f"Note {n}", expiresAt=soon) | {"contactEmail": f"person{n % 7}@contoso.example"}
        for n in range(200)
    ]
    upsert(writer, *documents)
    kept = [dict(e) for e in writer.table.list_entities() if e["PartitionKey"].startswith(TENANT_B)]
    assert holding(writer, "person3@contoso.example") or holding(writer, "person3%40contoso.example")

    async def offboard() -> int:
        steps, continuation = 0, None
        while True:
            report = await offboard_tenant(writer.store, TENANT_A, None, continuation, max_pages=1)
            steps += 1
            if report.complete:
                return steps
            assert steps < 200
            continuation = report.continuation
            await asyncio.sleep(report.retry_after)

    assert writer.run(offboard()) > 2  # a page at a time
    for n in range(7):
        assert holding(writer, f"person{n}@contoso.example") == []
        assert holding(writer, f"person{n}%40contoso.example") == []
    assert holding(writer, "Note 1") == []
    assert [dict(e) for e in writer.table.list_entities() if e["PartitionKey"].startswith(TENANT_B)] == kept


# ---- seen 9: the name index names a record after live documents only -----------------------------


def test_a_slow_name_refresh_does_not_name_a_record_after_a_deleted_document(
    writer: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.documents import validate_document
    from shared.storage import _names, delete, write
    from shared.storage.keys import home_of

    def named(id: str, name: str, version: int) -> Any:
        document, errors = validate_document(doc(id=id, recordName=name, version=version))
        assert document is not None, errors
        return document

    original = _names._record_documents
    reached, go = asyncio.Event(), asyncio.Event()
    calls = 0

    async def slow(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        found = await original(*args, **kwargs)
        calls += 1
        if calls == 1:  # the first refresh read the documents: it waits before it writes
            reached.set()
            await go.wait()
        return found

    async def race() -> None:
        await write(writer.store, [named("d1", "Contoso renewal", 1)])
        monkeypatch.setattr(_names, "_record_documents", slow)
        slow_write = asyncio.create_task(write(writer.store, [named("d2", "Contoso upsell", 2)]))
        await reached.wait()  # d2 is stored; its refresh read [d1, d2] and wants "Contoso upsell"
        await delete(writer.store, [home_of(named("d2", "Contoso upsell", 2))], None)  # its refresh: entry right
        go.set()
        await slow_write

    writer.run(race())
    entries = [e for e in writer.table.list_entities() if e["RowKey"].startswith("n|")]
    assert [e["Name"] for e in entries] == ["Contoso renewal"]


# ---- seen 10: inside one batch, versions order the duplicates ------------------------------------


def test_duplicates_in_one_batch_apply_as_if_sent_one_by_one(writer: Service) -> None:
    upsert(writer, doc(id="d", version=3, fields={"title": "t", "description": "three"}))
    answer = statuses(
        writer,
        doc(id="d", version=7, fields={"title": "t", "description": "seven"}),
        doc(id="d", version=5, fields={"title": "t", "description": "five"}),
    )
    assert answer == [("written", 7), ("stale", 7)]
    [row] = [e for e in rows(writer) if e["RowKey"].startswith("e|")]
    assert row["Ver"].value == 7 if hasattr(row["Ver"], "value") else row["Ver"] == 7
    assert json.loads(row["Fields"])["description"] == "seven"


# ---- seen 11: a read is bounded ------------------------------------------------------------------


@pytest.mark.parametrize("skip", [1001, 2**31 - 1])
def test_a_skip_past_the_limit_is_400_naming_it(writer: Service, skip: int) -> None:
    upsert(writer, doc(id="d"))
    response = writer.get(
        "/api/enhanceskills/sales-highlights", {"recordType": "opportunity", "recordId": "opp-1", "skip": skip}
    )
    assert response.status_code == 400
    assert response.json()["details"] == {"parameter": "skip"}
    email = writer.post(EMAIL, {"resourceData": {"from": MEGAN}, "skip": skip})
    assert email.status_code == 400 and email.json()["details"] == {"parameter": "skip"}


# ---- seen 12: keys are exact, name lines are checked, identities are unambiguous, scope is one rule


def test_a_tenant_id_with_a_trailing_newline_is_invalid_even_for_a_star_grant(writer: Service) -> None:
    writer.set(AUTH_WRITER_TENANT_GRANTS=f"{WRITER}=*")
    [result] = upsert(writer, doc(id="d", tenant=TENANT_A + "\n"))
    assert result["status"] == "invalid" and result["error"].startswith("tenantId:")
    assert [e for e in writer.table.list_entities() if "\n" in e["PartitionKey"] or "%0A" in e["PartitionKey"]] == []


def test_a_name_line_whose_keys_would_not_fit_is_invalid(writer: Service) -> None:
    line = {"tenantId": TENANT_A, "recordType": "opportunity", "recordId": "é" * 100, "recordName": "Far too long"}
    [result] = upsert(writer, line)
    assert result["status"] == "invalid" and result["error"].startswith("recordId:")


def test_documents_of_records_whose_parts_join_alike_are_two_documents() -> None:
    from extensions import POINTS
    from shared.contract import install_points
    from shared.documents import validate_document
    from shared.storage import data_entity
    from shared.storage._entities import StoredDocument
    from shared.storage.keys import home_of, twin_of

    install_points(POINTS)
    identities = set()
    for record_type, record_id in (("a|b", "c"), ("a", "b|c")):
        data = {**mail("same", "text"), "recordType": record_type, "recordId": record_id}
        document, errors = validate_document(data)
        assert document is not None, errors
        key = home_of(document)
        copy = data_entity(document, key, twin_of(document), 1, key.home)  # the copy, at the contact
        identities.add(StoredDocument.from_entity(copy).identity)
    assert len(identities) == 2


def test_crm_type_scopes_like_the_org(writer: Service) -> None:
    upsert(
        writer,
        doc(id="salesforce-only", crmType="Salesforce"),
        doc(id="dynamics-only", crmType="Dynamics 365"),
        doc(id="any-crm"),
    )
    assert sorted(highlights(writer)) == ["any-crm"]  # a request naming no CRM: only what names none
    body = writer.get(
        "/api/enhanceskills/sales-highlights",
        {"recordType": "opportunity", "recordId": "opp-1", "top": 100, "crmType": "Salesforce"},
    ).json()
    assert sorted(i["description"].removeprefix("Insight ") for i in body["value"]) == ["any-crm", "salesforce-only"]


# ---- seen 13: re-deleting deletes nothing; a bogus point on the command line is an error ----------


def test_re_deleting_a_deleted_document_deletes_nothing(writer: Service) -> None:
    upsert(writer, doc(id="d"))
    token = writer_token(writer)
    assert writer.post(DELETE, document_delete("d"), token=token).json()["deleted"] == 1
    assert writer.post(DELETE, document_delete("d"), token=token).json()["deleted"] == 0
    assert writer.post(DELETE, RECORD, token=token).json()["deleted"] == 0


def test_the_cli_refuses_an_unknown_extension_point_and_re_deletes_nothing(writer: Service) -> None:
    upsert(writer, doc(id="d"))
    bogus = cli(
        "delete",
        *("--tenant", TENANT_A, "--extension-point", "bogus", "--id", "d"),
        *("--record-type", "opportunity", "--record-id", "opp-1", "--yes"),
    )
    assert bogus.returncode == 2
    assert bogus.stderr.strip().count("\n") == 0 and "bogus" in bogus.stderr
    point = ("--tenant", TENANT_A, "--extension-point", "opportunityInsights", "--id", "d")
    record = ("--record-type", "opportunity", "--record-id", "opp-1", "--yes")
    assert "deleted 1 document(s)" in cli("delete", *point, *record).stdout
    assert "deleted 0 document(s)" in cli("delete", *point, *record).stdout


def test_a_contacts_own_document_is_deleted_by_its_address(writer: Service) -> None:
    upsert(writer, attached("emailSummary", id="own", contact=MEGAN) | {"fields": {"insight": "Prefers calls"}})
    target = {"tenantId": TENANT_A, "scope": "document", "extensionPoint": "emailSummary", "id": "own"}
    answer = writer.post(DELETE, {**target, "contactEmail": MEGAN.upper()}, token=writer_token(writer))
    assert answer.status_code == 200, answer.text
    assert answer.json()["deleted"] == 1
    assert insights_of(writer, related=False) == []
    assert holding(writer, "Prefers calls") == []
