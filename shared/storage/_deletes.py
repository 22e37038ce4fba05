"""Deletes of every scope: a document, a record's or a contact's documents (every extension
point, their copies included), a whole tenant's, and the purge of expired documents. Each
document's delete goes through the write path (`_writer`): a tombstone stays at its version, so an
older write that arrives later is stale."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from shared.contract import all_points, normalize
from shared.storage._entities import is_legacy_row, legacy_key
from shared.storage._expiry import drop_entries, due_pages
from shared.storage._marks import RECORD_MARK, raise_mark
from shared.storage._table import prefix_range
from shared.storage._writer import Change, Outcome, Writer, WriteReport, refresh_names
from shared.storage.errors import Unavailable
from shared.storage.keys import INDEX, LEGACY, DocKey, RecordRef, enc, partition_key

if TYPE_CHECKING:
    from shared.storage._store import InsightsStore

__all__ = ["delete", "delete_documents", "delete_record", "documents_in", "purge_expired"]


async def delete(
    store: InsightsStore,
    keys: Sequence[DocKey],
    version: int | None = None,
    forget_claims: Sequence[tuple[str, str, str]] = (),
    by_scope: bool = False,
) -> WriteReport:
    """Delete documents by identity (each a versioned change: a tombstone stays behind).
    `forget_claims`: records whose name given on its own goes too (a record's delete)."""
    changes = [Change(key, None, version, by_scope=by_scope) for key in dict.fromkeys(keys)]
    writer = Writer(store)
    await writer.apply(changes)
    await refresh_names(store, changes, 16, forget_claims)
    return WriteReport(
        [c.outcome or Outcome("failed") for c in changes], len({k.home for k in keys}), writer.transactions
    )


async def documents_in(store: InsightsStore, pk: str) -> list[DocKey]:
    """Every document reachable through a partition that a delete has work on: its own, and (in a
    contact's) the records' documents whose copy is there; live, or deleted but not yet
    everywhere."""
    found: dict[DocKey, None] = {}
    dlo, dhi = prefix_range(LEGACY)
    ilo, ihi = prefix_range(INDEX)
    async for entity in store.table.query(
        "PartitionKey eq @pk and ( ( RowKey ge @dlo and RowKey lt @dhi ) or ( RowKey ge @ilo and RowKey lt @ihi ) )",
        {"pk": pk, "dlo": dlo, "dhi": dhi, "ilo": ilo, "ihi": ihi},
        select=["PartitionKey", "RowKey", "Id", "Row", "Twin", "Gone", "RecordType", "RecordId"],
    ):
        if is_legacy_row(entity["RowKey"]):
            found[legacy_key(entity)] = None
        elif entity.get("Row") or (entity.get("Gone") or "[]") != "[]":
            # live, or a tombstone whose copies may not all be gone: a re-sent delete completes it
            copy = entity["RowKey"] != INDEX + enc(entity["Id"])
            found[DocKey(entity["Twin"] if copy else pk, entity["Id"])] = None
    return list(found)


async def delete_documents(
    store: InsightsStore,
    *,
    tenant: str,
    scope: str,
    extension_point: str | None = None,
    record: tuple[str, str] | None = None,
    contact: str | None = None,
    doc_id: str | None = None,
    version: int | None = None,
    continuation: str | None = None,
) -> WriteReport:
    """Delete a document, a record's documents (every extension point, their copies included), a
    contact's (its erasure) or a tenant's (its offboarding), with the version the delete is, if
    given (docs/write-rules.md). `record` is (recordType, recordId) in any spelling; `contact` an
    address in any case. A contact's and a tenant's delete run in steps: the report says whether
    it is `complete`, else the `continuation` to send back."""
    from shared.storage._scopes import erase_contact, offboard_tenant  # wide deletes: with the first

    tenant = tenant.lower()
    if scope == "tenant":
        return await offboard_tenant(store, tenant, version, continuation)
    if scope == "contact":
        return await erase_contact(store, tenant, normalize.email_address(contact or ""), version, continuation)
    if scope == "document":
        if not (extension_point and doc_id and (record or contact)):
            raise ValueError("deleting a document needs its extension point, id, and record or contact")
        ref = (
            RecordRef.record(normalize.record_type(record[0]), normalize.record_id(record[1]))
            if record
            else RecordRef.contact(normalize.email_address(contact or ""))
        )
        return await delete(store, [DocKey(partition_key(tenant, extension_point, ref), doc_id)], version)
    if record is None:
        raise ValueError("a record's delete names its record")
    ref = RecordRef.record(normalize.record_type(record[0]), normalize.record_id(record[1]))
    return await delete_record(store, tenant, ref, version)


async def delete_record(store: InsightsStore, tenant: str, ref: RecordRef, version: int | None = None) -> WriteReport:
    """Every document of a record, at every extension point: each a tombstone at `version` (or at
    its own). With a version, the record's watermark is raised to it first in each of its
    partitions, where every write's home transaction checks it: a write of the record at or below
    it is stale however the two interleave."""
    keys: list[DocKey] = []
    for point in all_points():
        pk = partition_key(tenant, point, ref)
        if version is not None:
            await raise_mark(store, pk, RECORD_MARK, version)
        keys += await documents_in(store, pk)
    # a record's delete takes its name with it, also one given on its own
    record_type, record_id = ref.parts
    return await delete(store, keys, version, forget_claims=[(tenant, record_type, record_id)], by_scope=True)


async def purge_expired(store: InsightsStore, now: datetime | None = None) -> int:
    """Delete the documents the expiry index lists for days up to `now` whose own stored expiry
    has passed (an entry is a hint, checked against the stored document); each leaves a tombstone
    at its version. Returns how many went. An entry goes once its document is dealt with.

    A document whose purge failed (storage failed, or its name index could not be refreshed)
    keeps its entry, and once every listed day has been gone through the run raises `Unavailable`
    saying how many: a run that answers is complete, and running it again completes one that
    raised."""
    now = now or datetime.now(UTC)
    deleted = 0
    failed: list[str] = []
    async for page in due_pages(store.table, now):
        work = {
            DocKey(e["Home"], e["Id"]): Change(DocKey(e["Home"], e["Id"]), None, None, expired_by=now) for e in page
        }
        changes = list(work.values())
        await Writer(store).apply(changes)
        # a document purged now, or by an earlier run whose name refresh failed (its re-send finds
        # the tombstone): the record's name entry follows what is left of its documents
        await refresh_names(store, [c for c in changes if _purged(c)], 16)
        deleted += sum(c.outcome is not None and c.outcome.status == "written" and c.outcome.existed for c in changes)
        done = [e for e in page if not _failed(work[DocKey(e["Home"], e["Id"])])]
        failed += [(c.outcome.error if c.outcome else None) or "not attempted" for c in changes if _failed(c)]
        await drop_entries(store.table, done)
    if failed:
        raise Unavailable(
            f"{len(failed)} expired document(s) not purged (first: {failed[0]}); {deleted} purged. "
            "The next run completes them."
        )
    return deleted


def _failed(change: Change) -> bool:
    return change.outcome is None or change.outcome.status == "failed"


def _purged(change: Change) -> bool:
    outcome = change.outcome
    return outcome is not None and (outcome.status == "written" or (outcome.status == "kept" and change.committed[1]))
