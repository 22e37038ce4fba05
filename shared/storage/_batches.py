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

__all__ = ["rounds_of", "write", "write_documents", "write_names"]


def rounds_of(documents: Sequence[Document]) -> list[list[tuple[int, Change]]]:
    """A batch as rounds of changes that each name a distinct document: the n-th occurrence of a
    document in the batch is in round n, so a document sent twice is applied in order, as if sent
    one by one (the second sees what the first left)."""
    rounds: list[list[tuple[int, Change]]] = []
    seen: dict[DocKey, int] = {}
    for i, doc in enumerate(documents):
        key = home_of(doc)
        n = seen[key] = seen.get(key, -1) + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append((i, Change(key, doc, doc.version)))
    return rounds


async def write(
    store: InsightsStore, documents: Sequence[Document], concurrency: int = 16, optimistic: bool = False
) -> WriteReport:
    """Write validated documents; one outcome per document, in order."""
    outcomes: list[Outcome] = [Outcome("failed", None, "not attempted")] * len(documents)
    transactions = conflicts = 0
    for changes in rounds_of(documents):
        writer = Writer(store, concurrency, optimistic)
        await writer.apply([change for _, change in changes])
        await refresh_names(store, [change for _, change in changes], concurrency)
        for i, change in changes:
            outcomes[i] = change.outcome or Outcome("failed", None, "not attempted")
        transactions += writer.transactions
        conflicts += writer.conflicts
        optimistic = False  # a later round's documents exist: look them up
    homes = {home_of(doc).home for doc in documents}
    partitions = len(homes | {twin for doc in documents if (twin := twin_of(doc))})
    return WriteReport(outcomes, partitions, transactions, conflicts)


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
    outcome a document, in order; documents of the same identity apply in order, as if sent one
    by one.
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
