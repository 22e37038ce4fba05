"""Batches of documents and of record names, for the loader CLI and the ingestion API alike.

Both come here after `shared.documents` has validated every document with the same rules; the
rules of the write itself are in `_writer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from shared.storage._names import RecordWork, refresh_many
from shared.storage._writer import Change, Outcome, Writer, WriteReport, refresh_names
from shared.storage.keys import DocKey, home_of, twin_of

if TYPE_CHECKING:
    from shared.storage._protocols import Document, NameLine
    from shared.storage._store import InsightsStore

__all__ = ["changes_of", "write", "write_documents", "write_names"]


def changes_of(documents: Sequence[Document]) -> tuple[list[Change], list[int]]:
    """One change a document, the last occurrence of a document winning as if sent alone;
    `positions[i]` is the change that decides document i."""
    last: dict[DocKey, int] = {}
    keys = [home_of(doc) for doc in documents]
    for i, key in enumerate(keys):
        last[key] = i
    order = sorted(set(last.values()))
    index_of = {i: n for n, i in enumerate(order)}
    changes = [Change(keys[i], documents[i], documents[i].version) for i in order]
    return changes, [index_of[last[key]] for key in keys]


async def write(
    store: InsightsStore, documents: Sequence[Document], concurrency: int = 16, optimistic: bool = False
) -> WriteReport:
    """Write validated documents; one outcome per document, in order."""
    changes, positions = changes_of(documents)
    writer = Writer(store, concurrency, optimistic)
    await writer.apply(changes)
    await refresh_names(store, changes, concurrency)
    outcomes = [changes[p].outcome or Outcome("failed", None, "not attempted") for p in positions]
    partitions = len({c.key.home for c in changes} | {twin_of(c.doc) for c in changes if c.doc and twin_of(c.doc)})
    return WriteReport(outcomes, partitions, writer.transactions, writer.conflicts)


LOAD_CHUNK = 2000
"""Documents a loader hands to the write path at once: big enough for the partitions of a chunk
to be written concurrently, small enough for steady progress."""


async def write_documents(
    store: InsightsStore,
    documents: Sequence[Document | NameLine],
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
    insights: list[tuple[int, Document]] = []
    names: list[tuple[int, NameLine]] = []
    for i, d in enumerate(documents):
        if _is_name_line(d):
            names.append((i, d))  # type: ignore[arg-type]
        else:
            insights.append((i, d))  # type: ignore[arg-type]
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


def _is_name_line(item: Document | NameLine) -> bool:
    """A line that only names a record carries no extension point."""
    return getattr(item, "extensionPoint", None) is None


async def write_names(store: InsightsStore, lines: Sequence[NameLine], concurrency: int = 16) -> dict[int, Outcome]:
    """Store names given on their own (the last line of a record in the batch wins): written,
    stale (an equal or newer name is stored), or failed (send it again)."""
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
