"""Writing validated documents: grouping by partition, transactions, a summary.

The loader CLI and (later) the ingestion API both come through here, after `shared.documents`
has validated every document with the same rules.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared import normalize
from shared.points import all_points
from shared.store import ChunkResult, IndexEntry, InsightsStore, RecordRef, partition_key, partition_keys

if TYPE_CHECKING:
    from shared.documents import InsightDocument

__all__ = ["WriteSummary", "delete_documents", "partitions_of", "write_documents"]


@dataclass
class WriteSummary:
    documents: int = 0
    partitions: int = 0
    transactions: int = 0
    failed: list[ChunkResult] = field(default_factory=list)

    @property
    def failed_ids(self) -> set[str]:
        return {doc_id for chunk in self.failed for doc_id in chunk.ids}


def partitions_of(documents: Iterable[InsightDocument]) -> dict[str, list[InsightDocument]]:
    groups: dict[str, list[InsightDocument]] = defaultdict(list)
    for doc in documents:
        for pk in partition_keys(doc):
            groups[pk].append(doc)
    return groups


BULK_WINDOW = 100
DENSE = 10


async def write_documents(
    store: InsightsStore,
    documents: Iterable[InsightDocument],
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> WriteSummary:
    """Upsert documents, partition by partition, in key order. Idempotent: running it again with
    the same documents leaves the table as it is, so an interrupted load can simply be run again.

    Neighbouring partitions of one tenant and extension point (a bulk load: DENSE or more of
    them in a window) learn what they already hold from one range query; scattered ones from a
    query each. Windows hold different partitions, so `workers` of them are written at once."""
    docs = list(documents)
    summary = WriteSummary(documents=len(docs))
    groups = partitions_of(docs)
    summary.partitions = len(groups)
    ordered = sorted(groups)
    turns = asyncio.Semaphore(max(1, workers))

    async def write_window(window: list[str]) -> None:
        # neighbours of one tenant and point (DENSE or more in the window): one range query
        by_prefix: dict[str, list[str]] = defaultdict(list)
        for pk in window:
            by_prefix["|".join(pk.split("|")[:2])].append(pk)
        known: dict[str, dict[str, IndexEntry]] = {}
        async with turns:
            for members in by_prefix.values():
                if len(members) >= DENSE:
                    found = await store.existing_between(members[0], members[-1])
                    known.update({pk: found.get(pk, {}) for pk in members})
            for pk in window:
                chunks = await store.write_partition(pk, groups[pk], known.get(pk))
                summary.transactions += len(chunks)
                summary.failed += [chunk for chunk in chunks if chunk.error]
                if progress:
                    progress(len(groups[pk]))

    windows = [ordered[start : start + BULK_WINDOW] for start in range(0, len(ordered), BULK_WINDOW)]
    await asyncio.gather(*(write_window(window) for window in windows))
    return summary


async def delete_documents(
    store: InsightsStore,
    *,
    tenant: str,
    scope: str,
    extension_point: str | None = None,
    record: tuple[str, str] | None = None,
    contact: str | None = None,
    doc_id: str | None = None,
) -> int:
    """Delete a document, a record's or a contact's documents (every extension point, and their
    copies in the other partition), or everything of a tenant. Returns how many documents went.
    `record` is (recordType, recordId) in any spelling; `contact` an address in any case."""
    tenant = tenant.lower()
    if scope == "tenant":
        return await store.delete_tenant(tenant)
    ref = (
        RecordRef.record(normalize.record_type(record[0]), normalize.record_id(record[1]))
        if record
        else RecordRef.contact(normalize.email_address(contact or ""))
    )
    if scope == "document":
        if not (extension_point and doc_id):
            raise ValueError("deleting a document needs its extension point and id")
        return await store.delete_ids(partition_key(tenant, extension_point, ref), [doc_id])
    return sum([await store.delete_partition(partition_key(tenant, point, ref)) for point in all_points()])
