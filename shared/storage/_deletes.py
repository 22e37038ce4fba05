"""Deletes of every scope: a document, a record's or a contact's documents (every extension
point, their copies included), a whole tenant's, and the purge of expired documents. Each
document's delete goes through the write path (`_writer`): a tombstone stays at its version, so an
older write that arrives later is stale."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from shared.contract import all_points, normalize
from shared.storage._entities import is_copy, is_legacy_row, legacy_key
from shared.storage._expiry import drop_entries, due_pages, expiry_row
from shared.storage._table import delete as delete_op
from shared.storage._table import prefix_range
from shared.storage._writer import Change, Outcome, Writer, WriteReport, refresh_names
from shared.storage.keys import INDEX, LEGACY, DocKey, RecordRef, enc, partition_key

if TYPE_CHECKING:
    from shared.storage._store import InsightsStore

__all__ = ["delete", "delete_documents", "delete_tenant", "documents_in", "purge_expired"]


async def delete(
    store: InsightsStore,
    keys: Sequence[DocKey],
    version: int | None = None,
    forget_claims: Sequence[tuple[str, str, str]] = (),
) -> WriteReport:
    """Delete documents by identity (each a versioned change: a tombstone stays behind).
    `forget_claims`: records whose name given on its own goes too (a record's delete)."""
    changes = [Change(key, None, version) for key in dict.fromkeys(keys)]
    writer = Writer(store)
    await writer.apply(changes)
    await refresh_names(store, changes, 16, forget_claims)
    return WriteReport(
        [c.outcome or Outcome("failed") for c in changes], len({k.home for k in keys}), writer.transactions
    )


async def documents_in(store: InsightsStore, pk: str) -> list[DocKey]:
    """Every live document reachable through a partition: its own, and (in a contact's) the
    records' documents whose copy is there."""
    found: dict[DocKey, None] = {}
    dlo, dhi = prefix_range(LEGACY)
    ilo, ihi = prefix_range(INDEX)
    async for entity in store.table.query(
        "PartitionKey eq @pk and ( ( RowKey ge @dlo and RowKey lt @dhi ) or ( RowKey ge @ilo and RowKey lt @ihi ) )",
        {"pk": pk, "dlo": dlo, "dhi": dhi, "ilo": ilo, "ihi": ihi},
        select=["PartitionKey", "RowKey", "Id", "Row", "Twin", "RecordType", "RecordId"],
    ):
        if is_legacy_row(entity["RowKey"]):
            found[legacy_key(entity)] = None
        elif entity.get("Row"):
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
) -> WriteReport:
    """Delete a document, a record's or a contact's documents (every extension point, and their
    copies), or everything of a tenant. `record` is (recordType, recordId) in any spelling;
    `contact` an address in any case. A document delete may carry the version it deletes."""
    tenant = tenant.lower()
    if scope == "tenant":
        return WriteReport([Outcome("written")] * await delete_tenant(store, tenant))
    ref = (
        RecordRef.record(normalize.record_type(record[0]), normalize.record_id(record[1]))
        if record
        else RecordRef.contact(normalize.email_address(contact or ""))
    )
    if scope == "document":
        if not (extension_point and doc_id):
            raise ValueError("deleting a document needs its extension point and id")
        return await delete(store, [DocKey(partition_key(tenant, extension_point, ref), doc_id)], version)
    keys: list[DocKey] = []
    for point in all_points():
        keys += await documents_in(store, partition_key(tenant, point, ref))
    # a record's delete takes its name with it, also one given on its own
    forget = [(tenant, *ref.parts)] if ref.kind == "r" else []
    return await delete(store, keys, forget_claims=forget)  # type: ignore[arg-type]


async def delete_tenant(store: InsightsStore, tenant: str) -> int:
    """Everything stored for a tenant, index entities and tombstones included (a PartitionKey
    range, not a table scan). Returns how many documents went (each once, not its copy)."""
    by_partition: dict[str, list[str]] = {}
    documents = 0
    lo, hi = prefix_range(enc(tenant) + "|")
    async for entity in store.table.query(
        "PartitionKey ge @lo and PartitionKey lt @hi",
        {"lo": lo, "hi": hi},
        select=["PartitionKey", "RowKey", "RecordType"],
    ):
        by_partition.setdefault(entity["PartitionKey"], []).append(entity["RowKey"])
        documents += entity["RowKey"][:2] in ("d|", "e|") and not is_copy(entity)
    for pk, rows in by_partition.items():
        await store.table.submit_all([delete_op(pk, row) for row in rows])
    return documents


async def purge_expired(store: InsightsStore, now: datetime | None = None) -> int:
    """Delete the documents the expiry index lists for days up to `now` that have expired by
    then (re-checked against each document's index entity); returns how many went."""
    now = now or datetime.now(UTC)
    deleted = 0
    async for page in due_pages(store.table, now):
        work = [Change(key, None, None, expired_by=now) for key in {DocKey(e["Home"], e["Id"]): None for e in page}]
        await Writer(store).apply(work)
        await refresh_names(store, [c for c in work if c.outcome is not None and c.outcome.status == "written"], 16)
        deleted += sum(c.outcome is not None and c.outcome.status == "written" for c in work)
        done = {expiry_row(c.key) for c in work if c.outcome is not None and c.outcome.status != "failed"}
        await drop_entries(store.table, [entry for entry in page if entry["RowKey"] in done])
    return deleted
