"""Tombstones and watermarks are collected once their grace period is over (docs/write-rules.md,
"Collection"): within it a late write is refused as the delete's rule says, after it the write
lands; a tombstone whose copies are pending is completed first; the collection reads its own index,
re-runs safely, and leaves nothing of a document or an erased contact behind."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.storage import collect_tombstones, purge_expired
from tests.conftest import TENANT_A, Service
from tests.test_ingestion import DELETE, delete_fully, writer, writer_token
from tests.test_write_rules import MEGAN, RECORD, flaky, holding, insights_of, mail, reset_nth_batch, statuses, upsert

__all__ = ["flaky", "writer"]


def collect(service: Service, after: timedelta) -> int:
    """The collection run at `after` from now, on the grace the store was given."""
    grace = timedelta(seconds=service.store.grace_seconds)
    return int(service.run(collect_tombstones(service.store, now=datetime.now(UTC) + grace + after)))


def tombstones(service: Service) -> list[tuple[str, str]]:
    """Index entities with no row and raised watermarks, in TENANT_A's range and the tenants' marks."""
    found = []
    for entity in service.table.list_entities():
        pk, rk = entity["PartitionKey"], entity["RowKey"]
        ver = getattr(entity.get("Ver"), "value", entity.get("Ver")) or 0
        if pk.startswith(TENANT_A) and rk.startswith("i|") and not entity.get("Row"):
            found.append((pk, rk))
        elif (rk == "~w" or pk.endswith("|~w") or pk == "~tenants") and ver:
            found.append((pk, rk))
    return found


def entries(service: Service) -> list[dict[str, Any]]:
    return list(service.table.query_entities("PartitionKey ge '~gc|' and PartitionKey lt '~gc}'"))


def test_a_tombstone_refuses_the_late_write_within_its_grace_and_goes_after_it(writer: Service) -> None:
    upsert(writer, mail("m1", "Budget approved", version=5))
    answer = writer.post(
        DELETE,
        {**RECORD, "scope": "document", "extensionPoint": "emailSummary", "id": "m1"},
        token=writer_token(writer),
    )
    assert answer.json()["deleted"] == 1
    assert len(tombstones(writer)) == 2  # at the record, and at Megan where the copy was
    assert len(entries(writer)) == 2

    assert collect(writer, after=-timedelta(hours=1)) == 0  # an hour before the grace ends
    assert statuses(writer, mail("m1", "Late retry", version=4)) == [("stale", None)]
    assert len(tombstones(writer)) == 2

    assert collect(writer, after=timedelta(hours=1)) == 2
    assert tombstones(writer) == [] and entries(writer) == []
    assert statuses(writer, mail("m1", "Late retry", version=4)) == [("written", 4)]  # as if never written
    assert insights_of(writer, related=False) == ["Late retry"]
    assert collect(writer, after=timedelta(hours=1)) == 0  # a second run finds nothing


def test_a_record_delete_watermark_is_collected_after_its_grace(writer: Service) -> None:
    upsert(writer, mail("m1", "Budget approved", version=5))
    reply = delete_fully(writer, {**RECORD, "version": 100}, writer_token(writer))
    assert reply["deleted"] == 1
    assert statuses(writer, mail("m2", "Another", version=50)) == [("stale", None)]  # under the watermark
    marks = [t for t in tombstones(writer) if t[1] == "~w"]
    assert marks  # one in each of the record's partitions
    assert collect(writer, after=timedelta(hours=1)) >= len(marks) + 2
    assert tombstones(writer) == []
    assert statuses(writer, mail("m2", "Another", version=50)) == [("written", 50)]


def test_a_tenant_and_a_contact_watermark_are_collected_and_the_contacts_flag_stays(writer: Service) -> None:
    upsert(writer, mail("m1", "Budget approved", version=5))
    token = writer_token(writer)
    delete_fully(writer, {"tenantId": TENANT_A, "scope": "contact", "contactEmail": MEGAN, "version": 20}, token)
    delete_fully(writer, {"tenantId": TENANT_A, "scope": "tenant", "version": 30}, token)
    assert statuses(writer, mail("m1", "After", version=25)) == [("stale", None)]
    collect(writer, after=timedelta(hours=1))
    assert tombstones(writer) == [] and entries(writer) == []
    flag = writer.table.get_entity("~tenants", TENANT_A)
    assert flag["Contacts"] is True  # writers still look for contact marks: cheap, and never wrong
    time.sleep(float(os.environ["WRITE_SETTLE_SECONDS"]))  # the service's instance reads the marks again
    assert statuses(writer, mail("m1", "After", version=25)) == [("written", 25)]
    assert sorted(insights_of(writer, related=True)) == ["After"]


def test_a_tombstone_whose_copy_is_pending_is_completed_before_it_is_collected(writer: Service, flaky: Any) -> None:
    upsert(writer, mail("m1", "Budget approved", version=5))
    reset_nth_batch(flaky, 2)  # the record's tombstone commits, the contact's does not
    cut = writer.post(DELETE, RECORD, token=writer_token(writer))
    assert cut.status_code == 503
    flaky.reset = None
    assert insights_of(writer, related=False) == ["Budget approved"]  # the copy is still served
    assert collect(writer, after=timedelta(hours=1)) == 0  # not collected: its copy is completed first
    assert insights_of(writer, related=False) == []
    assert holding(writer, "Budget approved") == []
    assert collect(writer, after=timedelta(hours=1)) == 1  # then the home's tombstone goes
    # the copy's tombstone was written by that completion: it is kept for its own grace
    assert collect(writer, after=timedelta(hours=1)) == 0
    grace = timedelta(seconds=writer.store.grace_seconds)
    assert collect(writer, after=grace + timedelta(hours=2)) == 1
    assert tombstones(writer) == []


def test_an_erasure_after_the_purge_completes_and_names_the_contact_nowhere(writer: Service) -> None:
    """The purge drops a document's expiry entry while its tombstone still lists it and lists the
    tombstone for collection; the erasure removes the tombstone and every entry naming it."""
    soon = datetime.now(UTC) + timedelta(days=1)
    own = {**mail("c1", "Megan's own", version=3), "recordType": None, "recordId": None}
    own["expiresAt"] = soon.isoformat().replace("+00:00", "Z")
    upsert(writer, own)
    assert writer.run(purge_expired(writer.store, now=soon + timedelta(seconds=1))) == 1
    reply = delete_fully(
        writer, {"tenantId": TENANT_A, "scope": "contact", "contactEmail": MEGAN}, writer_token(writer)
    )
    assert reply["failed"] == 0
    assert holding(writer, MEGAN) == [] and holding(writer, MEGAN.replace("@", "%40")) == []


def test_a_collected_tombstone_takes_its_expiry_entries_and_a_later_erasure_names_the_contact_nowhere(
    writer: Service,
) -> None:
    """Found by the long model run: a contact-homed document with an expiry, deleted, its tombstone
    collected before the expiry's day: the expiry entry (naming the contact's partition) was left
    with nothing listing it, so the contact's later erasure could not find it."""
    later = datetime.now(UTC) + timedelta(days=90)  # past the grace: the purge has not reached it
    own = {**mail("c1", "Megan's own", version=3), "recordType": None, "recordId": None}
    own["expiresAt"] = later.isoformat().replace("+00:00", "Z")
    upsert(writer, own)
    token = writer_token(writer)
    doc = {"tenantId": TENANT_A, "scope": "document", "extensionPoint": "emailSummary", "id": "c1"}
    assert writer.post(DELETE, {**doc, "contactEmail": MEGAN}, token=token).json()["deleted"] == 1
    assert holding(writer, MEGAN.replace("@", "%40")) != []  # the expiry entry and the tombstone
    assert collect(writer, after=timedelta(hours=1)) == 1
    assert holding(writer, MEGAN.replace("@", "%40")) == []  # nothing names her partition any more
    reply = delete_fully(writer, {"tenantId": TENANT_A, "scope": "contact", "contactEmail": MEGAN}, token)
    assert reply["failed"] == 0
    assert holding(writer, MEGAN) == [] and holding(writer, MEGAN.replace("@", "%40")) == []


@pytest.mark.parametrize("scope", ["tenant", "contact"])
def test_a_wide_delete_cut_at_any_transaction_and_resent_names_the_contact_nowhere(
    writer: Service, flaky: Any, scope: str
) -> None:
    """Found by the model: the tenant's delete removed entities whose collection entries it had
    failed to remove (the contact's erasure removed them before trying), so the entries (naming a
    contact's partition) outlived everything that listed them. Each of its transactions in turn is
    cut; the re-sent delete leaves nothing of Megan."""
    token = writer_token(writer)
    wide = {"tenantId": TENANT_A, "scope": scope, **({"contactEmail": MEGAN} if scope == "contact" else {})}
    for n in range(1, 7):
        upsert(writer, mail("m1", f"Budget {n}", version=10 * n))
        assert delete_fully(writer, RECORD, token)["failed"] == 0  # tombstones, listed for collection
        reset_nth_batch(flaky, n)
        cut = writer.post(DELETE, wide, token=token)
        flaky.reset = None
        assert cut.status_code in (200, 503), cut.text
        delete_fully(writer, wide, token)
        assert holding(writer, MEGAN.replace("@", "%40")) == [], n
        assert holding(writer, f"Budget {n}") == [], n
