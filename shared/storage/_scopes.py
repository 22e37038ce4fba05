"""Deletes wider than one partition: a contact's erasure and a tenant's offboarding.

Both walk key ranges in bounded steps, each inside the request's budget, and answer where to go on
(`Progress`, sent back as `continuation`) until they are done. Both keep one watermark (`_marks`)
that refuses a late write at or below it, and both converge the same way: a writer reads the
watermarks before it commits and commits within `settle_seconds` of that read (`_writer` reads
them again when they are older than half of it), so a pass that *starts* `settle_seconds` after the
watermark was last raised sees every write that read an older one. The delete answers `complete`
only after such a pass.

    tenant   walks the tenant's PartitionKey range (`{tenant}|...`): every entity at or below the
             mark goes (documents, copies, tombstones, index entities, record and contact marks),
             and the name index rows written before the pass began; each index entity's expiry
             entry with it. Kept: the tenant mark (`~tenants`, outside the range) and what a later
             write stored above it. Unversioned, the mark is the highest version the first pass
             removed.
    contact  reads the contact's partitions (documents homed there and copies of records'
             documents naming the contact), then walks the tenant's range for documents that name
             the contact at their record (`Contact eq`, filtered by storage). Documents homed at the
             contact go without a tombstone (their entities and their expiry entries), records'
             documents get a tombstone at their record (`_writer`), and the contact mark, keyed by
             a salted hash of the address, is what is left that refuses their late writes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from shared.contract import all_points
from shared.runtime import current_deadline
from shared.storage._entities import as_int, is_legacy_row, legacy_key, parse_stored_time
from shared.storage._expiry import drop_hints, expiry_entries, gc_entries
from shared.storage._marks import (
    RECORD_MARK,
    TENANT_MARKS,
    contact_hash,
    contact_marks_partition,
    flag_contacts,
    raise_mark,
    salt_of,
)
from shared.storage._names import RecordWork, refresh_many
from shared.storage._table import chunked, delete_if_unchanged, prefix_range
from shared.storage._writer import RESERVE_SECONDS, Change, Outcome, Writer, WriteReport, refresh_names
from shared.storage.errors import StorageError
from shared.storage.keys import INDEX, DocKey, RecordRef, enc, partition_key

if TYPE_CHECKING:
    from shared.storage._store import InsightsStore

__all__ = ["BadContinuation", "Progress", "erase_contact", "offboard_tenant"]

PAGE = 500
"""Entities a step reads at once (a page of the walk)."""


class BadContinuation(ValueError):
    """A `continuation` this service did not give for this delete."""


@dataclass
class Progress:
    """Where a contact's or tenant's delete stands, between requests (opaque to the caller)."""

    scope: str
    subject: str
    """A hash of what is deleted: a continuation serves only the delete it came from."""
    mark: int = 0
    """The watermark: fixed once the first pass is over (or given by the caller)."""
    round: int = 1
    """1: the first pass; 2 and later: passes that may end the delete."""
    began: float = 0.0
    """When the current pass began (seconds since the epoch)."""
    stage: int = 0
    after: list[str] | None = None
    """The walk resumes after this (PartitionKey, RowKey)."""
    clean: bool = True
    """Nothing in this pass failed or met a concurrent change."""
    survivors: list[list[str]] = field(default_factory=list)
    """Records with documents above the mark (a tenant's pass refreshes their names at its end)."""

    def token(self) -> str:
        return base64.urlsafe_b64encode(json.dumps(asdict(self), separators=(",", ":")).encode()).decode()

    @classmethod
    def parse(cls, token: str, scope: str, subject: str) -> Progress:
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
            progress = cls(**data)
        except (ValueError, TypeError, UnicodeError) as exc:
            raise BadContinuation("is not one this service gave") from exc
        if progress.scope != scope or progress.subject != subject:
            raise BadContinuation("belongs to another delete")
        return progress


@dataclass
class _Step:
    """What one request of a wide delete did."""

    outcomes: list[Outcome] = field(default_factory=list)
    transactions: int = 0


def _subject(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _out_of_time() -> bool:
    at = current_deadline()
    return at is not None and at - time.perf_counter() < RESERVE_SECONDS + 1.0


def _report(step: _Step, progress: Progress | None, retry_after: float = 0.0) -> WriteReport:
    report = WriteReport(step.outcomes, transactions=step.transactions)
    report.complete = progress is None
    report.continuation = progress.token() if progress is not None else None
    report.retry_after = max(0.0, retry_after)
    return report


async def _mark_raised_at(store: InsightsStore, pk: str, rk: str) -> float:
    found = await store.table.get(pk, rk)
    at = parse_stored_time(found.get("At") or "") if found else None
    return at.timestamp() if at else 0.0


def _finish_pass(store: InsightsStore, progress: Progress, raised_at: float) -> tuple[Progress | None, float]:
    """After a pass walked everything: done, or the next pass (and how long until it may begin)."""
    settle = store.settle_seconds
    if progress.clean and progress.round > 1 and progress.began >= raised_at + settle:
        return None, 0.0
    if progress.clean and progress.mark == 0:
        return None, 0.0  # nothing was there and no version was given: nothing to refuse
    following = Progress(progress.scope, progress.subject, progress.mark, progress.round + 1)
    return following, raised_at + settle - time.time()


def _version(entity: dict[str, Any]) -> int:
    return as_int(entity.get("Ver"))


def _written_before(entity: dict[str, Any], moment: float) -> bool:
    stamp = entity.get("Timestamp") or getattr(entity, "metadata", {}).get("timestamp")
    if isinstance(stamp, datetime):
        return stamp.timestamp() < moment
    return True


async def _remove(store: InsightsStore, pk: str, entities: Sequence[dict[str, Any]], step: _Step) -> bool:
    """Delete entities of one partition, each only if unchanged since it was read; False when a
    transaction failed or met a change (the next pass looks again)."""
    clean = True
    for chunk in chunked(entities):
        ops = [delete_if_unchanged(pk, e["RowKey"], e.metadata["etag"]) for e in chunk]  # type: ignore[attr-defined]
        try:
            await store.table.submit(ops)
            step.transactions += 1
        except StorageError:
            clean = False
    return clean


def _hints_of(pk: str, entity: dict[str, Any]) -> list[tuple[str, str]]:
    """The index entries that point at an entity going: a home index entity's document's expiry
    entries, and any entity's collection entries (`Gc`: tombstones, a copy's that left, watermarks)."""
    found = gc_entries(pk, entity["RowKey"], json.loads(entity.get("Gc") or "[]"))
    return sorted(found + expiry_entries(pk, entity))


def _resume(after: list[str] | None) -> tuple[str, dict[str, Any]]:
    if after is None:
        return "", {}
    return (
        " and ( PartitionKey gt @apk or ( PartitionKey eq @apk and RowKey gt @ark ) )",
        {"apk": after[0], "ark": after[1]},
    )


# ---- a tenant ----------------------------------------------------------------------------------------


async def offboard_tenant(
    store: InsightsStore,
    tenant: str,
    version: int | None = None,
    continuation: str | None = None,
    max_pages: int | None = None,
) -> WriteReport:
    """One step of a tenant's delete (see the module): as much as the budget allows."""
    subject = _subject("tenant", tenant)
    if continuation:
        progress = Progress.parse(continuation, "tenant", subject)
    else:
        progress = Progress("tenant", subject, mark=version or 0, began=time.time())
    if version is not None:
        progress.mark = max(progress.mark, version)
    fixed = version is not None or progress.round > 1
    if progress.began == 0.0:
        progress.began = time.time()
    step = _Step()
    mark_rk = enc(tenant)
    if progress.mark:
        await raise_mark(store, TENANT_MARKS, mark_rk, progress.mark)
        store.marks_cache.pop(tenant, None)  # this instance's writers see it at once
    lo, hi = prefix_range(enc(tenant) + "|")
    survivors = {tuple(record) for record in progress.survivors}
    pages = 0
    while True:
        if _out_of_time() or (max_pages is not None and pages >= max_pages):
            progress.survivors = sorted(list(r) for r in survivors)
            return _report(step, progress)
        resume, params = _resume(progress.after)
        page = await anext(
            store.table.pages(
                f"PartitionKey ge @lo and PartitionKey lt @hi{resume}", {"lo": lo, "hi": hi, **params}, page_size=PAGE
            ),
            None,
        )
        pages += 1
        if not page:
            break
        if not fixed:  # the mark follows documents' versions (a name line's is a time, not theirs)
            highest = max((_version(e) for e in page if _versioned(e)), default=0)
            if highest > progress.mark:
                progress.mark = highest
                await raise_mark(store, TENANT_MARKS, mark_rk, highest)
                store.marks_cache.pop(tenant, None)
        gone: dict[str, list[dict[str, Any]]] = defaultdict(list)
        hints: list[tuple[str, str]] = []
        for entity in page:
            pk, rk = entity["PartitionKey"], entity["RowKey"]
            versioned = _versioned(entity)
            if versioned and _version(entity) > progress.mark:
                if (record := _record_of(pk)) is not None:
                    survivors.add((tenant, *record))
                continue
            if not versioned and not _written_before(entity, progress.began):
                continue
            gone[pk].append(entity)
            hints += _hints_of(pk, entity)
            if _is_home_index(pk, entity):
                if entity.get("Row"):
                    step.outcomes.append(Outcome("written", _version(entity), existed=True))
            elif is_legacy_row(rk) and legacy_key(entity).home == pk:
                step.outcomes.append(Outcome("written", 0, existed=True))
        # the entries that point at an entity go first: removed after it, a fault between would
        # leave them with nothing listing them (a contact's address in a collection entry)
        clean = await drop_hints(store.table, hints)
        for pk, entities in gone.items() if clean else ():
            clean = await _remove(store, pk, entities, step) and clean
        progress.clean = progress.clean and clean
        progress.after = [page[-1]["PartitionKey"], page[-1]["RowKey"]]
    if survivors:  # documents written above the mark keep their names
        results = await refresh_many(store, {record: RecordWork(named=True) for record in survivors})  # type: ignore[misc]
        progress.clean = progress.clean and not any(isinstance(r, Exception) for r in results.values())
    raised_at = await _mark_raised_at(store, TENANT_MARKS, mark_rk)
    following, wait = _finish_pass(store, progress, raised_at)
    return _report(step, following, wait)


def _copy_tombstone(pk: str, entity: dict[str, Any]) -> bool:
    """The index entity of a record's document in a contact's partition with no copy here."""
    return entity["RowKey"][:2] == "i|" and not _is_home_index(pk, entity) and not entity.get("Row")


def _versioned(entity: dict[str, Any]) -> bool:
    """An entity that carries a document's version: rows, index entities, watermarks."""
    rk = entity["RowKey"]
    return bool(rk[:2] in ("e|", "i|", "d|") or rk == RECORD_MARK or entity["PartitionKey"].endswith("|~w"))


def _record_of(pk: str) -> tuple[str, str] | None:
    """(recordType, recordId) of a record's partition; None for any other partition."""
    parts = pk.split("|")
    return (unquote(parts[3]), unquote(parts[4])) if len(parts) == 5 and parts[2] == "r" else None


def _is_home_index(pk: str, entity: dict[str, Any]) -> bool:
    return bool(entity["RowKey"] == INDEX + enc(entity.get("Id") or ""))


# ---- a contact ---------------------------------------------------------------------------------------


async def erase_contact(
    store: InsightsStore,
    tenant: str,
    address: str,
    version: int | None = None,
    continuation: str | None = None,
    max_pages: int | None = None,
) -> WriteReport:
    """One step of a contact's erasure (see the module): as much as the budget allows."""
    salt = await salt_of(store)
    hashed = contact_hash(salt, address)
    subject = _subject("contact", tenant, hashed)
    if continuation:
        progress = Progress.parse(continuation, "contact", subject)
    else:
        progress = Progress("contact", subject, mark=version or 0)
    if version is not None:
        progress.mark = max(progress.mark, version)
    if progress.began == 0.0:
        progress.began = time.time()
    erasure = _Erasure(store, address, version, (contact_marks_partition(tenant), f"c|{hashed}"), progress, tenant)
    if progress.stage == 0:
        await erasure.contact_partitions(tenant)
        progress.stage, progress.after = 1, None
    pages = 0
    lo, hi = prefix_range(enc(tenant) + "|")
    while True:
        if _out_of_time() or (max_pages is not None and pages >= max_pages):
            return _report(erasure.step, progress)
        resume, params = _resume(progress.after)
        page = await anext(
            store.table.pages(
                f"PartitionKey ge @lo and PartitionKey lt @hi and Contact eq @contact{resume}",
                {"lo": lo, "hi": hi, "contact": address, **params},
                select=["PartitionKey", "RowKey", "Id", "Ver", "Twin", "RecordType", "RecordId", "Ep", "Tenant"],
                page_size=PAGE,
            ),
            None,
        )
        pages += 1
        if not page:
            break
        homes: dict[DocKey, int] = {}
        for entity in page:
            pk = entity["PartitionKey"]
            if _record_of(pk) is None:
                continue  # the contact's own partitions: the first stage's
            key = legacy_key(entity) if is_legacy_row(entity["RowKey"]) else DocKey(pk, entity["Id"])
            if key.home == pk:
                homes[key] = max(homes.get(key, 0), _version(entity))
        await erasure.records(homes)
        progress.after = [page[-1]["PartitionKey"], page[-1]["RowKey"]]
    raised_at = await _mark_raised_at(store, *erasure.mark)
    following, wait = _finish_pass(store, progress, raised_at)
    return _report(erasure.step, following, wait)


@dataclass
class _Erasure:
    store: InsightsStore
    address: str
    version: int | None
    """The version the caller gave (None: each document's own)."""
    mark: tuple[str, str]
    progress: Progress
    tenant: str
    step: _Step = field(default_factory=_Step)

    @property
    def rising(self) -> bool:
        """The mark still follows what is found: an unversioned erasure's first pass."""
        return self.version is None and self.progress.round == 1

    async def raise_to(self, version: int) -> None:
        if self.rising and version > self.progress.mark:
            self.progress.mark = version
        if self.progress.mark:
            await flag_contacts(self.store.table, self.tenant)  # before the mark: writers look for it
            await raise_mark(self.store, *self.mark, self.progress.mark)
            self.store.marks_cache.pop(self.tenant, None)  # the erasure's own writer sees it at once

    async def contact_partitions(self, tenant: str) -> None:
        """The contact's own partitions: records' documents that name the contact get their
        tombstone at home, then everything here at or below the mark goes, documents homed here
        with their expiry entries and no tombstone."""
        found: dict[str, list[dict[str, Any]]] = {}
        for point in all_points():
            pk = partition_key(tenant, point, RecordRef.contact(self.address))
            found[pk] = [e async for e in self.store.table.query("PartitionKey eq @pk", {"pk": pk})]
        records: dict[DocKey, int] = {}
        for pk, entities in found.items():
            for entity in entities:
                rk = entity["RowKey"]
                if rk[:2] == "i|" and not _is_home_index(pk, entity) and entity.get("Twin"):
                    records[DocKey(entity["Twin"], entity["Id"])] = _version(entity)
                elif is_legacy_row(rk) and (key := legacy_key(entity)).home != pk:
                    records[key] = 0
        await self.raise_to(max((_version(e) for entities in found.values() for e in entities), default=0))
        await self.records(records)
        hints: list[tuple[str, str]] = []
        final = self.progress.round > 1  # begun once every write in flight at the raise is over
        going: dict[str, list[dict[str, Any]]] = {}
        for pk, entities in found.items():
            # at or below the mark; and in a final pass a records' documents' tombstone here at any
            # version (it only guarded against a late copy, and none is in flight any more)
            going[pk] = [e for e in entities if _version(e) <= self.progress.mark or (final and _copy_tombstone(pk, e))]
            for entity in going[pk]:
                hints += _hints_of(pk, entity)
                if _is_home_index(pk, entity):
                    if entity.get("Row"):
                        self.step.outcomes.append(Outcome("written", _version(entity), existed=True))
                elif is_legacy_row(entity["RowKey"]) and legacy_key(entity).home == pk:
                    self.step.outcomes.append(Outcome("written", 0, existed=True))
        # the entries first, as for a tenant: an entity removed before them could leave them behind
        clean = await drop_hints(self.store.table, hints)
        for pk, entities in going.items() if clean else ():
            clean = await _remove(self.store, pk, entities, self.step) and clean
        self.progress.clean = self.progress.clean and clean

    async def records(self, homes: dict[DocKey, int]) -> None:
        """Records' documents that name the contact: a tombstone at their record (at the given
        version, or at their own), only while they still name it and are at or below the mark."""
        if not homes:
            return
        await self.raise_to(max(homes.values()))
        changes = [
            Change(
                key,
                None,
                self.version,
                by_scope=True,
                naming=_contact_partition(key.home, self.address),
                at_most=self.progress.mark,
            )
            for key in homes
        ]
        writer = Writer(self.store)
        await writer.apply(changes)
        await refresh_names(self.store, changes, 16)
        self.step.transactions += writer.transactions
        for change in changes:
            outcome = change.outcome or Outcome("failed")
            if outcome.status == "failed":
                self.progress.clean = False
            self.step.outcomes.append(outcome)


def _contact_partition(home: str, address: str) -> str:
    """The partition of `address` for the tenant and point of the partition `home`."""
    tenant, point = home.split("|", 2)[:2]
    return f"{tenant}|{point}|{RecordRef.contact(address).suffix}"
