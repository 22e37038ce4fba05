"""Housekeeping's two indexes, partitioned by day so that the timer reads the days that have passed
instead of scanning the table. An entry is a hint: what it points at is checked before anything
is deleted.

    ~expiry|YYYY-MM-DD   every document that carries `expiresAt`, listed under its day before its
                         write commits (the purge, `_deletes.purge_expired`)
    ~gc|YYYY-MM-DD       every tombstone and raised watermark, listed under the day its grace
                         period ends before it is written (the collection, `_collect`)

The entity an entry points at lists the times of its entries (`Hints` for expiry, `Gc` for
collection), so a contact's or tenant's delete that removes it removes its entries too."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.contract import format_stored
from shared.storage._entities import parse_stored_time
from shared.storage._table import Table, chunked, describe, upsert
from shared.storage.errors import StorageError
from shared.storage.keys import EXPIRY, INDEX, DocKey, enc, expiry_partition, gc_partition

__all__ = [
    "drop_entries",
    "drop_hints",
    "due_pages",
    "expiry_entries",
    "expiry_row",
    "expiry_times",
    "gc_entries",
    "gc_row",
    "kept_hints",
    "list_expiry",
    "list_gc",
]


def expiry_row(key: DocKey, expires: datetime) -> str:
    """An entry per document and expiry: a write that loses (stale) adds a hint of its own and never
    moves the stored document's."""
    return f"{hashlib.sha256(f'{key.home}\n{key.id}'.encode()).hexdigest()}|{format_stored(expires)}"


async def list_expiry(
    table: Table, expiring: Sequence[tuple[DocKey, datetime]], check_time: Callable[[], None]
) -> dict[DocKey, str]:
    """List each (document, expiresAt) under its day; returns the documents whose entry could not
    be listed, with why (their writes must not go ahead)."""
    entries = [
        (
            key,
            {
                "PartitionKey": expiry_partition(expires),
                "RowKey": expiry_row(key, expires),
                "Home": key.home,
                "Id": key.id,
                "Exp": format_stored(expires),
            },
        )
        for key, expires in expiring
    ]
    return await _list(table, entries, check_time)


def expiry_times(pk: str, entity: dict[str, Any]) -> list[datetime]:
    """The expiries a home index entity's document may have entries under: its current one and
    each earlier one it lists (`Hints`). None for any other entity (a copy's, a watermark)."""
    if entity["RowKey"] != INDEX + enc(entity.get("Id") or ""):
        return []
    texts = {entity.get("Exp") or "", *json.loads(entity.get("Hints") or "[]")} - {""}
    return sorted(when for text in texts if (when := parse_stored_time(text)) is not None)


def expiry_entries(pk: str, entity: dict[str, Any]) -> list[tuple[str, str]]:
    """(day, row) of those entries."""
    key = DocKey(pk, entity.get("Id") or "")
    return sorted((expiry_partition(when), expiry_row(key, when)) for when in expiry_times(pk, entity))


HINTS_KEPT_DAYS = 30
"""How long past its time an expiry entry is still counted as possibly there: the purge (daily by
default) removes entries whose time has passed."""


def kept_hints(expiries: Iterable[str]) -> list[str]:
    """The expiries whose entries a document may still have, as its home index lists them."""
    horizon = datetime.now(UTC) - timedelta(days=HINTS_KEPT_DAYS)
    kept = set()
    for expiry in expiries:
        when = parse_stored_time(expiry) if expiry else None
        if when is not None and when >= horizon:
            kept.add(expiry)
    return sorted(kept)


def gc_row(pk: str, rk: str, due: datetime) -> str:
    """An entry per entity and grace period: a tombstone written again lists an entry of its own."""
    return f"{hashlib.sha256(f'{pk}\n{rk}'.encode()).hexdigest()}|{format_stored(due)}"


def gc_entries(pk: str, rk: str, dues: Sequence[str]) -> list[tuple[str, str]]:
    """(day, row) of the collection entries an entity lists (`Gc`)."""
    found = []
    for text in set(dues) - {""}:
        due = parse_stored_time(text)
        if due is not None:
            found.append((gc_partition(due), gc_row(pk, rk, due)))
    return sorted(found)


async def list_gc[K](
    table: Table, wanted: Sequence[tuple[K, str, str, datetime]], check_time: Callable[[], None]
) -> dict[K, str]:
    """List each (owner, partition, row, due) for collection under the day its grace ends; returns
    the owners whose entry could not be listed, with why (their tombstones must not be written)."""
    entries = [
        (
            owner,
            {
                "PartitionKey": gc_partition(due),
                "RowKey": gc_row(pk, rk, due),
                "Pk": pk,
                "Rk": rk,
                "Exp": format_stored(due),
            },
        )
        for owner, pk, rk, due in wanted
    ]
    return await _list(table, entries, check_time)


async def _list[K](
    table: Table, entries: Sequence[tuple[K, dict[str, Any]]], check_time: Callable[[], None]
) -> dict[K, str]:
    days: dict[str, list[tuple[K, dict[str, Any]]]] = defaultdict(list)
    for owner, entry in entries:
        days[entry["PartitionKey"]].append((owner, entry))
    failed: dict[K, str] = {}
    for entries in days.values():
        for chunk in chunked(entries):
            try:
                check_time()
                await table.submit([upsert(entry) for _, entry in chunk])
            except StorageError as exc:  # what they were listed for is not written either
                for owner, _ in chunk:
                    failed[owner] = describe(exc)
    return failed


async def due_pages(table: Table, now: datetime, index: str = EXPIRY) -> AsyncIterator[list[dict[str, Any]]]:
    """The entries of an index (`EXPIRY` or `GC`) for the days up to `now` whose time has passed, a
    page (at most 1000) at a time: a backlog never sits in memory whole."""
    last = expiry_partition(now) if index == EXPIRY else gc_partition(now)
    async for page in table.pages(
        "PartitionKey ge @lo and PartitionKey le @hi and Exp le @cutoff",
        {"lo": index, "hi": last, "cutoff": format_stored(now)},
        page_size=1000,
    ):
        yield page


async def drop_entries(table: Table, entries: Sequence[dict[str, Any]]) -> None:
    """Remove index entries; the first storage error, if any, is raised once all were tried."""
    failure = await _drop(table, [(entry["PartitionKey"], entry["RowKey"]) for entry in entries])
    if failure is not None:
        raise failure


async def drop_hints(table: Table, hints: Sequence[tuple[str, str]]) -> bool:
    """Remove index entries (day, row) of what went; False if some could not be removed."""
    return await _drop(table, hints) is None


async def _drop(table: Table, hints: Sequence[tuple[str, str]]) -> StorageError | None:
    by_day: dict[str, list[str]] = defaultdict(list)
    for day, row in hints:
        by_day[day].append(row)
    failure = None
    for day, rows in by_day.items():
        try:
            await table.delete_rows(day, rows)
        except StorageError as exc:
            failure = failure or exc
    return failure
