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

from extensions import POINTS
from shared.contract import all_points, install_points
from shared.documents import AnyDocument, InsightDocument, parse_file, validate_document
from shared.settings import batch_settings, get_settings
from shared.storage import (
    InsightsStore,
    RecordRef,
    build_table_client,
    claims,
    collect_tombstones,
    document_of,
    is_copy,
    migrate_first_form,
    partition_key,
    refold,
    write_documents,
)
from shared.storage import purge_expired as purge

__all__ = ["export", "load", "migrate", "open_store", "purge_expired", "stats", "with_store"]


@contextlib.asynccontextmanager
async def open_store() -> AsyncIterator[InsightsStore]:
    """A store for batch work on this event loop, its table created if missing; closed after."""
    settings = batch_settings(get_settings())
    async with InsightsStore(
        build_table_client(settings),
        settle_seconds=settings.write_settle_seconds,
        grace_seconds=settings.tombstone_grace_days * 86400,
    ) as store:
        await store.ensure_table()
        yield store


def with_store[T](work: Callable[[InsightsStore], Awaitable[T]]) -> T:
    """`work(store)` to completion, from synchronous code (a command)."""

    async def run() -> T:
        async with open_store() as store:
            return await work(store)

    install_points(POINTS)  # what documents may name, and the partitions a record has
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
    install_points(POINTS)  # validation reads the extension points
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
    install_points(POINTS)  # a record's partitions are one an extension point
    partitions = None
    if record is not None:
        assert tenant is not None
        partitions = _record_partitions(tenant, record)

    async def write_out(store: InsightsStore) -> tuple[int, int]:
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


def migrate(out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Rewrite every first-form row (`d|`, V=1) in the current form, through the write path
    (`shared.storage.migrate_first_form`: resumable and idempotent), and re-fold record names
    indexed by older folding rules."""

    def validated(data: dict[str, Any]) -> tuple[InsightDocument | None, str]:
        document, errors = validate_document(data)
        if not isinstance(document, InsightDocument):  # a stored row is always a document
            return None, str(errors[0]) if errors else "not a document"
        return document.model_copy(update={"version": 0}), ""

    async def run(store: InsightsStore) -> Any:
        with tqdm(unit="row", desc="migrating", disable=None, file=err) as bar:
            return await migrate_first_form(store, validated, bar.update)

    migration = with_store(run)
    for problem in migration.problems:
        print(problem, file=err)
    totals = migration.totals
    refolded, refold_failed = with_store(refold)
    totals["failed"] += refold_failed
    if not totals["failed"] and not migration.finished:
        print("first-form rows remain (the invalid ones above): writers keep looking for them", file=err)
    print(
        f"migrated {totals['migrated']} document(s); deleted {totals['leftovers deleted']} leftover row(s); "
        f"left {totals['invalid']} invalid row(s)"
        + (f"; {totals['failed']} failed, run again" if totals["failed"] else ""),
        file=out,
    )
    print(f"re-folded {refolded} record name(s) for search (names stored by older folding rules)", file=out)
    return 1 if totals["failed"] else 0


def purge_expired() -> tuple[int, int]:
    """The housekeeping run by hand: expired documents purged, then tombstones and watermarks
    past their grace collected (the timer's two steps); how many of each."""

    async def both(store: InsightsStore) -> tuple[int, int]:
        return await purge(store), await collect_tombstones(store)

    return with_store(both)


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
