"""The collection of tombstones and watermarks once their grace period is over (Cassandra's
`gc_grace_seconds`; here `TOMBSTONE_GRACE_DAYS`, kept on the store as `grace_seconds`).

A tombstone (an index entity with no row: a deleted or purged document, or in a contact's partition
the copy that left) and a raised watermark (a record's `~w`, a contact's, a tenant's) exist so that
a late write at or below them is refused. Each is listed for collection (`~gc|{day}`, `_expiry`)
before it is written, under the day its grace ends, so the housekeeping timer reads the days that
have passed instead of scanning the table. An entry is a hint, checked against the entity:

- gone, or written again since (a live document, a newer tombstone or a raise: its own entry is
  due later): the entry goes;
- a tombstone at home whose copies are still pending (`Gone`): the copies are completed first (as a
  re-sent delete would), and the entry stays for the next run: it is never collected before then;
- otherwise the entity is deleted, only if unchanged since it was read. A tenant's mark that says
  the tenant has contact marks keeps that flag at version 0.

After collection a write of any version lands again, as it would for a document never written.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from shared.storage._entities import IndexState, int64, parse_stored_time
from shared.storage._expiry import drop_entries, drop_hints, due_pages, expiry_entries, expiry_times, list_expiry
from shared.storage._marks import RECORD_MARK, TENANT_MARKS
from shared.storage._table import delete_if_unchanged, put_if_unchanged
from shared.storage._writer import Change, Writer
from shared.storage.errors import Conflict, StorageError
from shared.storage.keys import GC, INDEX, DocKey

if TYPE_CHECKING:
    from shared.storage._store import InsightsStore

__all__ = ["collect_tombstones"]

CONCURRENCY = 16


async def collect_tombstones(store: InsightsStore, now: datetime | None = None) -> int:
    """Collect every tombstone and watermark whose grace ended by `now`; returns how many went.
    Safe to run again after a fault: an entry goes only once what it points at is dealt with."""
    now = now or datetime.now(UTC)
    grace = timedelta(seconds=store.grace_seconds)
    turns = asyncio.Semaphore(CONCURRENCY)
    collected = 0

    async def one(pk: str, rk: str) -> bool | None:
        """True: collected; False: nothing to collect (its entries go); None: they stay."""
        async with turns:
            try:
                return await _collect(store, pk, rk, now, grace)
            except StorageError:
                return None

    async for page in due_pages(store.table, now, GC):
        # an entity listed more than once (a tombstone written again) is looked at once
        targets = list(dict.fromkeys((e["Pk"], e["Rk"]) for e in page))
        results = dict(zip(targets, await asyncio.gather(*(one(*t) for t in targets)), strict=True))
        collected += sum(result is True for result in results.values())
        await drop_entries(store.table, [e for e in page if results[(e["Pk"], e["Rk"])] is not None])
    return collected


async def _collect(store: InsightsStore, pk: str, rk: str, now: datetime, grace: timedelta) -> bool | None:
    entity = await store.table.get(pk, rk)
    if entity is None:
        return False
    etag = entity.metadata["etag"]  # type: ignore[attr-defined]
    if rk.startswith(INDEX):
        state = IndexState.from_entity(entity)
        since = parse_stored_time(state.deleted_at)
        if state.row:  # live again: its expiry entries are listed (again, if a run cut here dropped them)
            return False if await _relist(store, pk, entity) else None
        if since is None or since + grace > now:
            return False  # a later tombstone (listed under its own day)
        if state.gone:  # its copies first, as a re-sent delete completes them
            await Writer(store).apply([Change(DocKey(pk, entity["Id"]), None, None, expired_by=now)])
            return None
        # its expiry entries go first (at home, they name its partition: a contact's address); a
        # write that revives it meanwhile fails on the ETag it read, or commits first: then this
        # delete conflicts and its entries are listed again
        if not await drop_hints(store.table, expiry_entries(pk, entity)):
            return None
        collected = await _delete(store, pk, rk, etag)
        if collected is None:
            revived = await store.table.get(pk, rk)
            if revived is not None:
                await _relist(store, pk, revived)
        return collected
    since = parse_stored_time(entity.get("At") or "")
    if since is None or since + grace > now:
        return False
    if rk != RECORD_MARK:  # a tenant's or contact's: this instance's writers read them again
        store.marks_cache.pop(_tenant_of(pk, rk), None)
    if pk == TENANT_MARKS and entity.get("Contacts"):
        kept = {k: v for k, v in entity.items() if k not in ("Timestamp", "etag", "At")}
        try:
            await store.table.submit([put_if_unchanged({**kept, "Ver": int64(0), "Gc": "[]"}, etag)])
        except Conflict:
            return None  # changed meanwhile: looked at again on the next run
        return True
    if rk != RECORD_MARK and not pk.endswith("|~w") and pk != TENANT_MARKS:
        return False  # not something this index lists
    return await _delete(store, pk, rk, etag)


async def _delete(store: InsightsStore, pk: str, rk: str, etag: str) -> bool | None:
    try:
        await store.table.submit([delete_if_unchanged(pk, rk, etag)])
    except Conflict:
        return None  # changed since it was read (a write's guard rewrites a record's mark as it
        # was): looked at again on the next run, when a newer state is left to its own entry
    return True


async def _relist(store: InsightsStore, pk: str, entity: dict[str, Any]) -> bool:
    """List a live home index entity's expiry entries again (upserts: a no-op when they are there)."""
    times = expiry_times(pk, entity) if entity.get("Row") else []
    key = DocKey(pk, entity.get("Id") or "")
    return not times or not await list_expiry(store.table, [(key, when) for when in times], lambda: None)


def _tenant_of(pk: str, rk: str) -> str:
    return unquote(rk if pk == TENANT_MARKS else pk.split("|", 1)[0])
