"""The expiry index: every document that carries `expiresAt` is listed under its day
(`~expiry|YYYY-MM-DD`, an entry per document) before its write commits, so the purge reads the
days that have passed instead of scanning the table. An entry is a hint: the purge checks it
against the stored document before it deletes anything."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any

from shared.contract import format_stored
from shared.storage._table import Table, chunked, delete, describe, upsert
from shared.storage.errors import StorageError
from shared.storage.keys import EXPIRY, DocKey, expiry_partition

__all__ = ["drop_entries", "due_pages", "expiry_row", "list_expiry"]


def expiry_row(key: DocKey, expires: datetime) -> str:
    """An entry per document and expiry: a write that loses (stale) adds a hint of its own and never
    moves the stored document's."""
    return f"{hashlib.sha256(f'{key.home}\n{key.id}'.encode()).hexdigest()}|{format_stored(expires)}"


async def list_expiry(
    table: Table, expiring: Sequence[tuple[DocKey, datetime]], check_time: Callable[[], None]
) -> dict[DocKey, str]:
    """List each (document, expiresAt) under its day; returns the documents whose entry could not
    be listed, with why (their writes must not go ahead)."""
    days: dict[str, list[tuple[DocKey, dict[str, Any]]]] = defaultdict(list)
    for key, expires in expiring:
        day = expiry_partition(expires)
        entry = {
            "PartitionKey": day,
            "RowKey": expiry_row(key, expires),
            "Home": key.home,
            "Id": key.id,
            "Exp": format_stored(expires),
        }
        days[day].append((key, entry))
    failed: dict[DocKey, str] = {}
    for entries in days.values():
        for chunk in chunked(entries):
            try:
                check_time()
                await table.submit([upsert(entry) for _, entry in chunk])
            except StorageError as exc:  # those documents are not written either
                for key, _ in chunk:
                    failed[key] = describe(exc)
    return failed


async def due_pages(table: Table, now: datetime) -> AsyncIterator[list[dict[str, Any]]]:
    """The entries of the days up to `now` whose time has passed, a page (at most 1000) at a time:
    a backlog never sits in memory whole."""
    async for page in table.pages(
        "PartitionKey ge @lo and PartitionKey le @hi and Exp le @cutoff",
        {"lo": EXPIRY, "hi": expiry_partition(now), "cutoff": format_stored(now)},
        page_size=1000,
    ):
        yield page


async def drop_entries(table: Table, entries: Sequence[dict[str, Any]]) -> None:
    by_day: dict[str, list[str]] = defaultdict(list)
    for entry in entries:
        by_day[entry["PartitionKey"]].append(entry["RowKey"])
    for day, rows in by_day.items():
        await table.submit_all([delete(day, row) for row in rows])
