"""Batches of documents and deletes, for the loader CLI and the ingestion API alike.

Both come here after `shared.documents` has validated every document with the same rules; the
rules of the write itself are in `shared.writes`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from shared import normalize
from shared.keys import DocKey, RecordRef, partition_key
from shared.points import all_points
from shared.writes import Outcome, WriteReport, delete, documents_in, write

if TYPE_CHECKING:
    from shared.documents import AnyDocument, RecordName
    from shared.store import InsightsStore

__all__ = ["WriteReport", "delete_documents", "write_documents", "write_names"]

LOAD_CHUNK = 2000
"""Documents a loader hands to the write path at once: big enough for the partitions of a chunk
to be written concurrently, small enough for steady progress."""


async def write_documents(
    store: InsightsStore,
    documents: Sequence[AnyDocument],
    progress: Callable[[int], None] | None = None,
    concurrency: int = 16,
    optimistic: bool = False,
) -> WriteReport:
    """Write documents (idempotent: the same documents again leave the table as it is). One
    outcome a document, in order. A later document of the same identity wins over an earlier
    one only inside one chunk; across chunks they are written in order, which ends the same.
    Lines that only name a record (`RecordName`) are written after the documents beside them.

    `optimistic` (a bulk load): write without looking first, while that pays: after a chunk in
    which more than a tenth of the documents already existed, look first."""
    from shared.documents import RecordName

    insights = [(i, d) for i, d in enumerate(documents) if not isinstance(d, RecordName)]
    names = [(i, d) for i, d in enumerate(documents) if isinstance(d, RecordName)]
    outcomes: list[Outcome] = [Outcome("failed", None, "not attempted")] * len(documents)
    partitions = transactions = conflicts = 0
    for start in range(0, len(insights), LOAD_CHUNK):
        chunk = insights[start : start + LOAD_CHUNK]
        report = await write(store, [d for _, d in chunk], concurrency, optimistic)
        optimistic = optimistic and report.conflicts * 10 <= len(chunk)
        for (i, _), outcome in zip(chunk, report.outcomes, strict=True):
            outcomes[i] = outcome
        partitions += report.partitions
        transactions += report.transactions
        conflicts += report.conflicts
        if progress:
            progress(len(chunk))
    if names:
        for i, outcome in (await write_names(store, [d for _, d in names], concurrency)).items():
            outcomes[names[i][0]] = outcome
        if progress:
            progress(len(names))
    return WriteReport(outcomes, partitions, transactions, conflicts)


async def write_names(store: InsightsStore, lines: Sequence[RecordName], concurrency: int = 16) -> dict[int, Outcome]:
    """Store names given on their own (the last line of a record in the batch wins): written,
    stale (an equal or newer name is stored), or failed (send it again)."""
    from shared.names import RecordWork, refresh_many

    last: dict[tuple[str, str, str], int] = {}
    for i, line in enumerate(lines):
        last[(line.tenantId, line.recordType, line.recordId)] = i
    work = {record: RecordWork(named=True, claim=lines[i]) for record, i in last.items()}
    results = await refresh_many(store, work, concurrency)
    outcomes: dict[int, Outcome] = {}
    for i, line in enumerate(lines):
        result = results[(line.tenantId, line.recordType, line.recordId)]
        if isinstance(result, Exception):
            outcomes[i] = Outcome("failed", None, f"name not stored: {type(result).__name__}")
        else:
            outcomes[i] = Outcome("stale" if result.claim == "stale" else "written", line.version)
    return outcomes


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
    from shared.entities import is_copy
    from shared.keys import enc
    from shared.writes import MAX_TRANSACTION

    by_partition: dict[str, list[str]] = {}
    documents = 0
    async for entity in store.table.query_entities(
        "PartitionKey ge @lo and PartitionKey lt @hi",
        parameters={"lo": enc(tenant) + "|", "hi": enc(tenant) + "}"},
        select=["PartitionKey", "RowKey", "RecordType"],
    ):
        by_partition.setdefault(entity["PartitionKey"], []).append(entity["RowKey"])
        documents += entity["RowKey"][:2] in ("d|", "e|") and not is_copy(entity)
    for pk, rows in by_partition.items():
        for start in range(0, len(rows), MAX_TRANSACTION):
            await store.table.submit_transaction(
                [("delete", {"PartitionKey": pk, "RowKey": row}) for row in rows[start : start + MAX_TRANSACTION]]
            )
    return documents
