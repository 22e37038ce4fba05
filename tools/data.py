"""The data commands: load, export, delete, purge-expired, stats.

They write through the same validation (`shared.documents`) and the same async store the
ingestion API uses, each command in one `asyncio.run` with a store (and client) of its own. Long
operations show a progress bar (on a terminal) and end with a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from shared.documents import AnyDocument, InsightDocument, parse_file
from shared.entities import document_of, is_copy
from shared.ingest import write_documents
from shared.keys import RecordRef, partition_key
from shared.points import all_points
from shared.settings import batch_settings, get_settings
from shared.store import InsightsStore, build_table_client

__all__ = ["export", "load", "migrate", "open_store", "purge_expired", "stats", "with_store"]


@contextlib.asynccontextmanager
async def open_store() -> AsyncIterator[InsightsStore]:
    """A store for batch work on this event loop, its table created if missing; closed after."""
    import extensions  # noqa: F401 - registers the extension points documents name

    async with InsightsStore(build_table_client(batch_settings(get_settings()))) as store:
        await store.ensure_table()
        yield store


def with_store[T](work: Callable[[InsightsStore], Awaitable[T]]) -> T:
    """`work(store)` to completion, from synchronous code (a command)."""

    async def run() -> T:
        async with open_store() as store:
            return await work(store)

    return asyncio.run(run())


def load(
    path: Path,
    *,
    skip_bad: bool = False,
    dry_run: bool = False,
    workers: int = 4,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Validate every line first; an invalid file writes nothing unless `skip_bad`. Idempotent, so
    an interrupted load is simply run again."""
    import extensions  # noqa: F401

    good: list[AnyDocument] = []
    bad = 0
    for parsed in parse_file(path):
        if parsed.errors:
            bad += 1
            where = f"{path}:{parsed.line}" + (f" (id {parsed.raw_id})" if parsed.raw_id else "")
            for error in parsed.errors:
                print(f"{where}: {error}", file=err)
        elif parsed.document is not None:
            good.append(parsed.document)
    if dry_run:
        print(f"dry run: {len(good)} valid document(s), {bad} invalid line(s); nothing written", file=out)
        return 1 if bad else 0
    if bad and not skip_bad:
        print(
            f"{bad} invalid line(s), {len(good)} valid; nothing written (use --skip-bad to load the valid ones)",
            file=err,
        )
        return 1
    if not good:
        print(
            f"nothing to load: {path} holds no documents" + (f" ({bad} invalid line(s) skipped)" if bad else ""),
            file=out,
        )
        return 1 if bad else 0
    with tqdm(total=len(good), unit="doc", desc="loading", disable=None, file=err) as bar:
        report = with_store(
            lambda store: write_documents(
                store, good, progress=bar.update, concurrency=max(1, workers) * 4, optimistic=True
            )
        )
    failed = 0
    for document, outcome in zip(good, report.outcomes, strict=True):
        if outcome.status == "failed":
            failed += 1
            print(f"failed: document {document.id}: {outcome.error}", file=err)
    stale = report.count("stale")
    print(
        f"loaded {len(good)} document(s) into {report.partitions} partition(s) in {report.transactions} transaction(s); "
        f"skipped {bad} invalid line(s)"
        + (f"; {stale} stale (a newer version is stored)" if stale else "")
        + (f"; {failed} failed, run again" if failed else ""),
        file=out,
    )
    return 1 if failed else 0


def _record_partitions(tenant: str, record: tuple[str, str]) -> list[str]:
    return [partition_key(tenant, point, RecordRef.record(*record)) for point in all_points()]


def export(
    destination: TextIO,
    *,
    tenant: str | None = None,
    record: tuple[str, str] | None = None,
    err: TextIO = sys.stderr,
) -> int:
    """JSONL that `load` accepts back unchanged. A document attached to a record and a contact
    is stored twice and exported once (from its record)."""
    import extensions  # noqa: F401 - registers the extension points a record's partitions are of

    partitions = None
    if record is not None:
        assert tenant is not None
        partitions = _record_partitions(tenant, record)

    async def write_out(store: InsightsStore) -> tuple[int, int]:
        from shared.names import claims

        count = 0
        with tqdm(unit="doc", desc="exporting", disable=None, file=err) as bar:
            async for entity in store.iter_entities(tenant=tenant, partitions=partitions):
                bar.update()
                if is_copy(entity):
                    continue
                destination.write(json.dumps(document_of(entity), ensure_ascii=False) + "\n")
                count += 1
        # names given on their own (after the documents, as a backfill is loaded)
        named = await claims(store, tenant, record)
        for line in named:
            destination.write(json.dumps(line, ensure_ascii=False) + "\n")
        return count, len(named)

    documents, names = with_store(write_out)
    print(f"exported {documents} document(s)" + (f" and {names} record name(s)" if names else ""), file=err)
    return 0


MIGRATE_PAGE = 1000


def migrate(out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Rewrite every first-form row (`d|`, V=1) in the current form, through the write path.

    A migrated document gets version 0, older than any write: a writer's concurrent write of the
    same document wins whatever the order, and where the document already exists in the current
    form its first-form leftovers are simply deleted. Resumable and idempotent: the first-form
    rows are the work list, and each leaves it as it is migrated; run it again after an
    interruption, and a second run finds nothing to do."""
    import extensions  # noqa: F401 - registers the extension points documents name
    from shared.documents import DocumentError, validate_document
    from shared.entities import legacy_key
    from shared.keys import LEGACY
    from shared.names import refold
    from shared.writes import write

    totals: Counter[str] = Counter()

    async def run(store: InsightsStore) -> None:
        with tqdm(unit="row", desc="migrating", disable=None, file=err) as bar:
            pages = store.table.query_entities(
                "RowKey ge @lo and RowKey lt @hi",
                parameters={"lo": LEGACY, "hi": LEGACY[:-1] + "}"},
                results_per_page=MIGRATE_PAGE,
            ).by_page()
            async for page in pages:
                rows = [entity async for entity in page]
                if rows:
                    await migrate_page(store, rows)
                    bar.update(len(rows))

    async def migrate_page(store: InsightsStore, page: list[dict[str, Any]]) -> None:
        documents = []
        seen: dict[object, list[dict[str, Any]]] = {}
        for entity in page:
            try:
                document, errors = validate_document(document_of(entity))
            except (ValueError, KeyError, TypeError) as exc:
                document, errors = None, [DocumentError("row", f"unreadable ({type(exc).__name__})")]
            if not isinstance(document, InsightDocument):  # a stored row is always a document
                totals["invalid"] += 1
                print(f"left as it is: row {entity['RowKey']} of {entity['PartitionKey']}: {errors[0]}", file=err)
                continue
            key = legacy_key(entity)
            if key not in seen:
                documents.append(document.model_copy(update={"version": 0}))
            seen.setdefault(key, []).append(entity)
        report = await write(store, documents)
        from shared.keys import home_of

        for document, outcome in zip(documents, report.outcomes, strict=True):
            rows = seen[home_of(document)]
            if outcome.status == "stale":  # the current form exists: these rows are leftovers
                for entity in rows:
                    with contextlib.suppress(Exception):
                        await store.table.delete_entity(entity["PartitionKey"], entity["RowKey"])
                totals["leftovers deleted"] += len(rows)
            elif outcome.status == "failed":
                totals["failed"] += 1
                print(f"failed: document {document.id}: {outcome.error}", file=err)
            else:
                totals["migrated"] += 1

    async def finish(store: InsightsStore) -> bool:
        """Once no first-form row is left, writers stop looking for them."""
        async for _ in store.table.query_entities(
            "RowKey ge @lo and RowKey lt @hi", parameters={"lo": LEGACY, "hi": LEGACY[:-1] + "}"}, results_per_page=1
        ):
            return False
        await store.mark_current_form_only()
        return True

    with_store(run)
    refolded, refold_failed = with_store(refold)
    totals["failed"] += refold_failed
    if not totals["failed"] and not with_store(finish):
        print("first-form rows remain (the invalid ones above): writers keep looking for them", file=err)
    print(
        f"migrated {totals['migrated']} document(s); deleted {totals['leftovers deleted']} leftover row(s); "
        f"left {totals['invalid']} invalid row(s)"
        + (f"; {totals['failed']} failed, run again" if totals["failed"] else ""),
        file=out,
    )
    print(f"re-folded {refolded} record name(s) for search (names stored by older folding rules)", file=out)
    return 1 if totals["failed"] else 0


def purge_expired() -> int:
    from shared.writes import purge_expired as purge

    return with_store(purge)


def stats(out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> Counter[tuple[str, str]]:
    """Documents per tenant and extension point (each document once)."""
    counts: Counter[tuple[str, str]] = Counter()

    async def count(store: InsightsStore) -> None:
        with tqdm(unit="doc", desc="counting", disable=None, file=err) as bar:
            async for entity in store.iter_entities():
                bar.update()
                if is_copy(entity):
                    continue
                counts[(entity["Tenant"], entity["Ep"])] += 1

    with_store(count)
    points = sorted(all_points())
    tenants = sorted({t for t, _ in counts})
    print(f"{'tenant':38}" + "".join(f"{p:>20}" for p in points) + f"{'total':>10}", file=out)
    for tenant in tenants:
        row = [counts[(tenant, p)] for p in points]
        print(f"{tenant:38}" + "".join(f"{n:>20}" for n in row) + f"{sum(row):>10}", file=out)
    totals = [sum(counts[(t, p)] for t in tenants) for p in points]
    print(f"{'all tenants':38}" + "".join(f"{n:>20}" for n in totals) + f"{sum(totals):>10}", file=out)
    return counts
