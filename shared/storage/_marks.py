"""Watermarks: what a delete of a scope wider than one document leaves behind, so that a late write
of that scope at or below its version is refused (answered `stale`), whatever order they arrive in.

    record   `~w` in each of the record's partitions (its RowKey sorts after every row and index
             entity, so no read of documents meets it): `Ver`. Every write of a document homed
             there conditions its home transaction on it (creating it at 0 when absent), so a
             record delete that raises it refuses every write at or below it, however they
             interleave.
    contact  partition `{tenant}|~w`, RowKey `c|{salted hash of the address}`: `Ver`, `At` (when it
             was last raised). Nothing else of an erased contact names the address.
    tenant   partition `~tenants`, RowKey `{tenant}`: `Ver`, `At`: outside the tenant's key range,
             which its delete walks.

A write reads its contact's and tenant's marks before it commits (one point read and one query of
a small partition per tenant in a batch); a contact or tenant delete converges by a final pass that
starts one write budget after its mark was raised (`shared.storage._deletes`).

The salt is made once per table (`~meta`/`salt`) and never leaves it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from shared.contract import format_stored
from shared.storage._entities import as_int, int64
from shared.storage._expiry import kept_hints, list_gc
from shared.storage._table import Table, attempts, create, put_if_unchanged
from shared.storage.errors import Conflict, Unavailable
from shared.storage.keys import enc

if TYPE_CHECKING:
    from shared.storage._store import InsightsStore

__all__ = [
    "RECORD_MARK",
    "TENANT_MARKS",
    "Marks",
    "contact_hash",
    "contact_marks_partition",
    "raise_mark",
    "read_marks",
    "salt_of",
]

RECORD_MARK = "~w"
TENANT_MARKS = "~tenants"
SALT = ("~meta", "salt")


def contact_marks_partition(tenant: str) -> str:
    return f"{enc(tenant)}|~w"


def contact_hash(salt: str, address: str) -> str:
    return hashlib.sha256(f"{salt}\n{address}".encode()).hexdigest()


async def salt_of(store: InsightsStore) -> str:
    """The table's salt for contact marks, made on first use (one point read per store)."""
    if store.salt is None:
        found = await store.table.get(*SALT)
        if found is None:
            made = {"PartitionKey": SALT[0], "RowKey": SALT[1], "Salt": secrets.token_hex(32)}
            try:
                await store.table.submit([create(made)])
                found = made
            except Conflict:  # made meanwhile by another writer: theirs
                found = await store.table.get(*SALT)
        assert found is not None
        store.salt = str(found["Salt"])
    return store.salt


@dataclass
class Marks:
    """The tenant and contact marks of a batch's tenants."""

    tenants: dict[str, int] = field(default_factory=dict)
    hashed: dict[str, dict[str, int]] = field(default_factory=dict)
    """tenant -> RowKey of a contact mark -> its version (few: one an erased contact)."""
    salt: str = ""

    def contact(self, tenant: str, address: str | None) -> int:
        rows = self.hashed.get(tenant)
        if not address or not rows:
            return 0
        return rows.get(f"c|{contact_hash(self.salt, address)}", 0)

    def of(self, tenant: str, contact: str | None) -> int:
        return max(self.tenants.get(tenant, 0), self.contact(tenant, contact))


async def read_marks(store: InsightsStore, tenants: Iterable[str], max_age: float) -> tuple[Marks, float]:
    """The marks of these tenants (per tenant, a point read, and a query of its small contact
    marks partition when the tenant's says it has one; tenants at once), each read again only when its copy in the store is older
    than `max_age` seconds: an instance reads a tenant's marks about once per `max_age`, not once
    per request. Returns them and when the oldest of them was read (`time.monotonic()`)."""
    cache = store.marks_cache
    turns = asyncio.Semaphore(16)

    async def one(tenant: str) -> None:
        async with turns:
            started = time.monotonic()
            found = await store.table.get(TENANT_MARKS, enc(tenant))
            rows = await _contact_marks(store, tenant) if found is not None and found.get("Contacts") else {}
            cache[tenant] = (started, as_int(found.get("Ver")) if found else 0, rows)

    wanted = sorted(set(tenants))
    now = time.monotonic()
    await asyncio.gather(*(one(t) for t in wanted if t not in cache or now - cache[t][0] > max_age))
    marks = Marks()
    for tenant in wanted:
        _, marks.tenants[tenant], rows = cache[tenant]
        if rows:
            marks.hashed[tenant] = rows
    if marks.hashed:
        marks.salt = await salt_of(store)
    return marks, min((cache[t][0] for t in wanted), default=time.monotonic())


async def flag_contacts(table: Table, tenant: str) -> None:
    """Say on the tenant's mark entity that it has contact marks, so that writers query its contact
    marks partition (a query, where the tenant's mark is a point read) only when it has one."""
    async for _ in attempts():
        found = await table.get(TENANT_MARKS, enc(tenant))
        if found is not None and found.get("Contacts"):
            return
        entity = {k: v for k, v in found.items() if k not in ("Timestamp", "etag")} if found else {}
        entity |= {"PartitionKey": TENANT_MARKS, "RowKey": enc(tenant), "Contacts": True}
        entity.setdefault("Ver", int64(0))
        try:
            await table.submit([put_if_unchanged(entity, found.metadata["etag"] if found else None)])  # type: ignore[attr-defined]
        except Conflict:
            continue
        return
    raise Conflict(f"the mark of tenant {tenant} kept changing")


async def contact_mark(store: InsightsStore, tenant: str, address: str) -> int:
    """One contact's watermark as stored now (a point read): 0 when it was never erased."""
    found = await store.table.get(contact_marks_partition(tenant), f"c|{contact_hash(await salt_of(store), address)}")
    return as_int(found.get("Ver")) if found else 0


async def _contact_marks(store: InsightsStore, tenant: str) -> dict[str, int]:
    return {
        row["RowKey"]: as_int(row.get("Ver"))
        async for row in store.table.query("PartitionKey eq @pk", {"pk": contact_marks_partition(tenant)})
    }


async def raise_mark(store: InsightsStore, pk: str, rk: str, version: int) -> int:
    """Raise a mark to at least `version` (a mark never goes down until it is collected); returns
    the mark now. `At` says when it was last raised; the mark is listed for collection when that
    time's grace ends (`Gc`, `_collect`) before it is written."""
    table = store.table
    grace = timedelta(seconds=store.grace_seconds)
    due: datetime | None = None
    async for _ in attempts():
        found = await table.get(pk, rk)
        current = as_int(found.get("Ver")) if found else 0
        if found is not None and current >= version:
            return current
        if due is None:
            due = datetime.now(UTC) + grace
            failed = await list_gc(table, [(rk, pk, rk, due)], lambda: None)
            if failed:
                raise Unavailable(f"the mark could not be listed for collection: {failed[rk]}")
        kept = {k: v for k, v in found.items() if k not in ("Timestamp", "etag")} if found else {}
        entity = {
            **kept,  # a tenant's mark keeps its `Contacts` flag
            "PartitionKey": pk,
            "RowKey": rk,
            "Ver": int64(version),
            "At": format_stored(due - grace),
            "Gc": json.dumps(kept_hints([*json.loads(kept.get("Gc") or "[]"), format_stored(due)])),
        }
        try:
            await table.submit([put_if_unchanged(entity, found.metadata["etag"] if found else None)])  # type: ignore[attr-defined]
        except Conflict:
            continue
        return version
    raise Conflict(f"the mark {pk}/{rk} kept changing")
