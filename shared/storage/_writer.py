"""The write path: whatever the interleaving of writers and retries, one current version per
document. All of its rules are here.

1. **Versions.** Every document has one. A writer may send `version` (an integer that only
   grows); a write or delete older than the stored version is `stale` and changes nothing; the
   same version again is a re-send: it changes nothing at home and completes the copy. Without
   `version`, the home assigns the next one as the write commits.
2. **Home: one entity group transaction per document change.** The home partition (the
   record's, or the contact's when there is no record) holds the document's row and its index
   entity (`i|{id}`: which row, which version, where the copy is). The old row's delete, the new
   row and the index entity go in one transaction, conditioned on the index entity's ETag (or on
   its absence): a concurrent writer's transaction fails and is retried against the new state,
   so exactly one row remains. A delete leaves the index entity as a tombstone at its version.
3. **Copies converge.** A document with a record and a contact is also stored in the contact's
   partition, which cannot share the home's transaction. The copy has its own index entity
   carrying the version and is written only over an older one, also ETag-conditioned; a
   partition the copy left (the contact changed, the document was deleted) gets a tombstone at
   the new version. The home remembers such partitions (`Gone`) until a writer has cleaned them,
   so retries and concurrent writers converge on the highest version on both sides.
4. **Lookups per partition.** A batch reads each partition it touches once (a RowKey range of
   index entities inside it, with any first-form rows), never a range across partitions.
5. **First-form rows** (`d|`, V=1) of a document are deleted in the transaction that writes its
   current form, wherever they are found.
6. **Expiry index.** A document with `expiresAt` is listed under `~expiry|{day}` before its
   write commits; `purge_expired` walks the days that have passed and deletes a listed document
   only if its index entity still says it has expired.
7. **Honest failures.** A transaction that fails is reported with the documents it held, and
   only those; nothing is retried blindly except ETag conflicts. Re-sending completes it.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from shared.contract import format_stored
from shared.runtime import current_deadline
from shared.storage._entities import (
    IndexState,
    data_entity,
    digest_of,
    index_entity,
    is_legacy_row,
    legacy_key,
    parse_stored_time,
)
from shared.storage._expiry import list_expiry
from shared.storage._names import RecordWork, records_of, refresh_many
from shared.storage._table import (
    MAX_TRANSACTION,
    attempts,
    delete,
    describe,
    prefix_range,
    put_if_unchanged,
    upsert,
)
from shared.storage.errors import Conflict, StorageError, Unavailable
from shared.storage.keys import LEGACY, DocKey, twin_of

if TYPE_CHECKING:
    from shared.storage._protocols import Document
    from shared.storage._store import InsightsStore

__all__ = ["Change", "Outcome", "WriteReport", "Writer", "refresh_names"]

RESERVE_SECONDS = 2.0
"""Time kept back from the request's budget: no new storage call starts with less left, so the
caller still gets the per-item report."""
POINT_READS = 8
"""A partition's lookup for up to this many documents is point reads (the cheapest request on
Azure, and on Azurite, which answers a query by scanning); for more, one RowKey range query."""

Status = Literal["written", "stale", "failed", "absent", "kept"]


@dataclass
class Outcome:
    status: Status
    version: int | None = None
    error: str | None = None
    transaction: int | None = None


@dataclass
class Change:
    """One document's write (`doc`) or delete (`doc` None) at its home."""

    key: DocKey
    doc: Document | None = None
    version: int | None = None
    expired_by: datetime | None = None
    """A purge: delete only if the stored document has expired by this instant."""
    outcome: Outcome | None = None
    # what the home committed, for the copies
    committed: int = 0
    twin: str = ""
    gone: list[str] = field(default_factory=list)
    home_index: dict[str, Any] | None = None
    home_etag: str | None = None


@dataclass
class WriteReport:
    outcomes: list[Outcome]
    partitions: int = 0
    transactions: int = 0
    conflicts: int = 0

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


@dataclass
class _PartitionState:
    index: dict[str, IndexState]
    legacy: dict[DocKey, list[dict[str, Any]]]

    def of(self, key: DocKey, pk: str) -> IndexState:
        state = self.index.get(key.index_row(pk)) or IndexState()
        rows = self.legacy.get(key, [])
        state.legacy_rows = [row["RowKey"] for row in rows]
        state.legacy_twin = next((row.get("Twin") or "" for row in rows if row.get("Twin")), "")
        return state


class Writer:
    """Applies changes to the table with the rules above; `concurrency` partitions at once."""

    def __init__(self, store: InsightsStore, concurrency: int = 16, optimistic: bool = False) -> None:
        self.store = store
        self.table = store.table
        self.optimistic = optimistic
        """Write first, look up only on a conflict: for loads of documents the table does not hold
        yet (a create fails if the document exists, and is then planned again on what is there)."""
        self.conflicts = 0
        self.turns = asyncio.Semaphore(max(1, concurrency))
        self.transactions = 0
        self._labels = 0
        self._prefetched: dict[str, _PartitionState] = {}

    # ---- the batch ---------------------------------------------------------------------------

    async def apply(self, changes: Sequence[Change]) -> None:
        """Apply changes that each name a distinct document (the caller keeps the last of
        duplicates). Sets every change's `outcome`."""
        await self._list_expiry([c for c in changes if c.doc is not None and c.doc.expiresAt is not None])
        homes: dict[str, list[Change]] = defaultdict(list)
        for change in changes:
            if change.outcome is None:
                homes[change.key.home].append(change)
        if self.optimistic:
            try:
                self.optimistic = not await self.store.first_form_possible()  # else they must be looked for
            except StorageError:  # the lookups will meet the same trouble and report it
                self.optimistic = False
        if not self.optimistic:
            # One lookup per partition touched. Each partition's step looks its own partition
            # up right before its transaction (so work cut short by the deadline is not looked
            # up for nothing); a partition that is both a home and a copy's is looked up once,
            # for both, before either step.
            wanted: dict[str, set[DocKey]] = defaultdict(set)
            twins: set[str] = set()
            for change in changes:
                wanted[change.key.home].add(change.key)
                if change.doc is not None and (twin := twin_of(change.doc)):
                    wanted[twin].add(change.key)
                    twins.add(twin)
            both = twins & homes.keys()
            await self._gather(self._prefetch(pk, wanted[pk]) for pk in both)
        await self._gather(self._home(pk, group) for pk, group in homes.items())
        await self._copies([c for c in changes if c.outcome is not None and c.outcome.status == "written"])

    async def _gather(self, work: Iterable[Any]) -> None:
        async def one(coroutine: Any) -> None:
            async with self.turns:
                await coroutine

        await asyncio.gather(*(one(c) for c in work))

    async def _prefetch(self, pk: str, keys: set[DocKey]) -> None:
        try:
            self._prefetched[pk] = await self._lookup(pk, keys)
        except StorageError:
            pass  # the partition's own step looks again and reports

    # ---- lookups -----------------------------------------------------------------------------

    async def _lookup(self, pk: str, keys: Iterable[DocKey]) -> _PartitionState:
        """Index entities of `keys` in partition `pk` (and its first-form rows while the table may
        hold some): one request, a point read for one document, else a RowKey range."""
        rows = sorted(key.index_row(pk) for key in keys)
        self._check_time()
        index: dict[str, IndexState] = {}
        legacy: dict[DocKey, list[dict[str, Any]]] = defaultdict(list)
        if await self.store.first_form_possible():
            query = "PartitionKey eq @pk and ( ( RowKey ge @dlo and RowKey lt @dhi ) or ( RowKey ge @ilo and RowKey le @ihi ) )"
        elif len(rows) <= POINT_READS:
            for row, entity in zip(rows, await asyncio.gather(*(self.table.get(pk, r) for r in rows)), strict=True):
                if entity is not None:
                    index[row] = IndexState.from_entity(entity)
            return _PartitionState(index, legacy)
        else:
            query = "PartitionKey eq @pk and RowKey ge @ilo and RowKey le @ihi"
        dlo, dhi = prefix_range(LEGACY)
        async for entity in self.table.query(
            query, {"pk": pk, "dlo": dlo, "dhi": dhi, "ilo": rows[0], "ihi": rows[-1]}
        ):
            if is_legacy_row(entity["RowKey"]):
                legacy[legacy_key(entity)].append(entity)
            else:
                index[entity["RowKey"]] = IndexState.from_entity(entity)
        return _PartitionState(index, legacy)

    async def _state(self, pk: str, keys: Iterable[DocKey], fresh: bool) -> _PartitionState:
        if not fresh and self.optimistic:
            return _PartitionState({}, {})
        if not fresh and (known := self._prefetched.get(pk)) is not None:
            # the snapshot serves the first try of both the home's and the copies' step (their
            # index entities differ); a conflict makes any later try look again
            return known
        return await self._lookup(pk, keys)

    # ---- the home step -------------------------------------------------------------------------

    async def _home(self, pk: str, changes: list[Change]) -> None:
        pending = changes
        async for attempt in attempts():
            try:
                state = await self._state(pk, [c.key for c in pending], fresh=attempt > 0)
            except StorageError as exc:
                _fail(pending, describe(exc))
                return
            batch: list[tuple[Change, list[tuple[Any, ...]], dict[str, Any]]] = []
            for change in pending:
                planned = self._plan_home(pk, change, state.of(change.key, pk))
                if planned is not None:
                    batch.append((change, *planned))
            pending = await self._submit(pk, batch, home=True)
            if not pending:
                return
        _fail(pending, "the document changed under this write too many times in a row; send it again")

    def _plan_home(
        self, pk: str, change: Change, state: IndexState
    ) -> tuple[list[tuple[Any, ...]], dict[str, Any]] | None:
        """The operations of a change at home, or None when it needs none (its outcome set)."""
        key, doc = change.key, change.doc
        current = state.version if state.exists else 0
        digest = digest_of(doc) if doc is not None else ""
        resent = change.version is None and bool(state.row) and state.digest == digest
        if resent or (change.version is not None and state.exists and change.version <= current):
            if resent or (change.version == current and (doc is not None) == bool(state.row)):
                # a re-send of the stored revision (a write or a delete): nothing changes at
                # home; what it left undone elsewhere is completed
                change.committed, change.twin, change.gone = current, state.twin, list(state.gone)
                change.outcome = Outcome("written", current)
            else:
                change.outcome = Outcome("stale", current)
            return None
        if doc is None and not state.exists and not state.legacy_rows and change.version is None:
            change.outcome = Outcome("absent")
            return None
        if change.expired_by is not None:
            expires = parse_stored_time(state.expires) if state.exists else None
            if not (state.row and expires is not None and expires <= change.expired_by):
                change.outcome = Outcome("kept", current)
                return None
        version = change.version if change.version is not None else current + 1
        twin = twin_of(doc) if doc is not None else ""
        gone = {*state.gone, state.twin, state.legacy_twin} - {twin, ""}
        ops: list[tuple[Any, ...]] = []
        row = key.data_row(pk, doc.dateTime) if doc is not None else ""
        if state.row and state.row != row:
            ops.append(delete(pk, state.row))
        ops += [delete(pk, old) for old in state.legacy_rows]
        if doc is not None:
            ops.append(upsert(data_entity(doc, key, pk, version, twin)))
        expiry = format_stored(doc.expiresAt) if doc is not None and doc.expiresAt else ""
        index = index_entity(key, pk, row=row, version=version, twin=twin, gone=gone, expires=expiry, digest=digest)
        ops.append(put_if_unchanged(index, state.etag))
        change.committed, change.twin, change.gone = version, twin, sorted(gone)
        return ops, index

    async def _submit(
        self, pk: str, batch: list[tuple[Change, list[tuple[Any, ...]], dict[str, Any]]], home: bool
    ) -> list[Change]:
        """Submit the planned operations in transactions of whole changes; returns the changes
        whose transaction met a conflict (to be planned again on fresh state)."""
        conflicted: list[Change] = []
        for members in _transactions(batch):
            label = self._label()
            ops = [op for _, change_ops, _ in members for op in change_ops]
            try:
                self._check_time()
                results = await self.table.submit(ops)
            except Conflict:  # retried on fresh state
                conflicted += [change for change, _, _ in members]
                self.conflicts += len(members)
                continue
            except StorageError as exc:  # reported
                for change, _, _ in members:
                    where = "at home" if home else "in its copy's partition"
                    change.outcome = Outcome("failed", None, f"not written {where}: {describe(exc)}", label)
                continue
            self.transactions += 1
            position = 0
            for change, change_ops, index in members:
                position += len(change_ops)
                if home:
                    change.home_index, change.home_etag = index, _etag(results, position - 1)
                    change.outcome = Outcome("written", change.committed, None, label)
        return conflicted

    # ---- copies --------------------------------------------------------------------------------

    async def _copies(self, changes: list[Change]) -> None:
        """Write each committed change's copy and tombstone the partitions its copy left."""
        tasks: dict[str, list[tuple[Change, bool]]] = defaultdict(list)
        for change in changes:
            if change.twin and change.doc is not None and twin_of(change.doc) == change.twin:
                tasks[change.twin].append((change, True))
            for pk in change.gone:
                tasks[pk].append((change, False))
        await self._gather(self._copy_partition(pk, group) for pk, group in tasks.items())
        cleaned = [c for c in changes if c.gone and c.home_etag and c.outcome and c.outcome.status == "written"]
        await self._gather(self._forget_gone(change) for change in cleaned)

    async def _copy_partition(self, pk: str, tasks: list[tuple[Change, bool]]) -> None:
        pending = tasks
        async for attempt in attempts():
            try:
                state = await self._state(pk, [c.key for c, _ in pending], fresh=attempt > 0)
            except StorageError as exc:
                _fail([c for c, _ in pending], f"its copy was not written: {describe(exc)}")
                return
            batch: list[tuple[Change, list[tuple[Any, ...]], dict[str, Any]]] = []
            for change, put in pending:
                planned = _plan_copy(pk, change, put, state.of(change.key, pk))
                if planned:
                    batch.append((change, planned, {}))
            conflicted = await self._submit(pk, batch, home=False)
            retry = {id(c) for c in conflicted}
            pending = [(c, put) for c, put in pending if id(c) in retry]
            if not pending:
                return
        _fail([c for c, _ in pending], "its copy changed under this write too many times in a row; send it again")

    async def _forget_gone(self, change: Change) -> None:
        """Once the partitions a copy left hold tombstones, the home stops listing them (only if
        nothing has been written there since: else the later writer carries them on)."""
        if change.home_index is None or change.outcome is None or change.outcome.status != "written":
            return
        if change.home_etag is None:
            return
        try:
            await self.table.replace_if_unchanged({**change.home_index, "Gone": "[]"}, change.home_etag)
        except StorageError:  # a later writer (or a re-send) cleans them again
            return

    # ---- expiry index ----------------------------------------------------------------------

    async def _list_expiry(self, changes: list[Change]) -> None:
        """List each expiring document under its day before its write commits; a change whose
        entry could not be listed is not written either (reported failed)."""
        failed = await list_expiry(
            self.table, [(c.key, c.doc.expiresAt) for c in changes if c.doc and c.doc.expiresAt], self._check_time
        )
        for change in changes:
            if change.key in failed and change.outcome is None:
                change.outcome = Outcome("failed", None, f"expiry index not written: {failed[change.key]}")

    # ---- helpers -------------------------------------------------------------------------------

    def _label(self) -> int:
        self._labels += 1
        return self._labels

    @staticmethod
    def _check_time() -> None:
        at = current_deadline()
        if at is not None and at - time.perf_counter() < RESERVE_SECONDS:
            raise Unavailable("not attempted: the request's time ran out")


def _plan_copy(pk: str, change: Change, put: bool, state: IndexState) -> list[tuple[Any, ...]]:
    version = change.committed
    if state.exists and state.version >= version:
        return [delete(pk, old) for old in state.legacy_rows]
    key, doc = change.key, change.doc
    ops: list[tuple[Any, ...]] = []
    row = key.data_row(pk, doc.dateTime) if put and doc is not None else ""
    if state.row and state.row != row:
        ops.append(delete(pk, state.row))
    ops += [delete(pk, old) for old in state.legacy_rows]
    if put and doc is not None:
        ops.append(upsert(data_entity(doc, key, pk, version, key.home)))
    ops.append(put_if_unchanged(index_entity(key, pk, row=row, version=version, twin=key.home), state.etag))
    return ops


def _transactions(batch: list[Any]) -> list[list[Any]]:
    groups: list[list[Any]] = [[]]
    size = 0
    for member in batch:
        n = len(member[1])
        if not n:
            continue
        if size + n > MAX_TRANSACTION and groups[-1]:
            groups.append([])
            size = 0
        groups[-1].append(member)
        size += n
    return [g for g in groups if g]


def _etag(results: Any, position: int) -> str | None:
    try:
        etag = results[position].get("etag")
    except (IndexError, AttributeError, TypeError):
        return None
    return str(etag) if etag else None


def _fail(changes: Iterable[Change], error: str) -> None:
    for change in changes:
        if change.outcome is None or change.outcome.status == "written":
            change.outcome = Outcome("failed", None, error, change.outcome.transaction if change.outcome else None)


async def refresh_names(
    store: InsightsStore,
    changes: Sequence[Change],
    concurrency: int,
    forget_claims: Sequence[tuple[str, str, str]] = (),
) -> None:
    """Bring the name index (`_names`) up to date for every record the changes touched.
    A record whose refresh fails has its written items reported failed: re-sent, they refresh it
    again (the index converges like a copy does)."""
    work: dict[tuple[str, str, str], RecordWork] = {}
    touched: dict[tuple[str, str, str], list[Change]] = defaultdict(list)
    for change in changes:
        for record in records_of([change.key.home]):
            job = work.setdefault(record, RecordWork())
            job.named = job.named or bool(change.doc is not None and change.doc.recordName)
            touched[record].append(change)
    for record in forget_claims:
        work.setdefault(record, RecordWork()).forget_claim = True
    if not work:
        return
    results = await refresh_many(store, work, concurrency)
    for record, result in results.items():
        if isinstance(result, Exception):
            error = f"name index not updated: {describe(result)}"
            for change in touched[record]:
                if change.outcome is not None and change.outcome.status in ("written", "kept"):
                    change.outcome = Outcome("failed", None, error, change.outcome.transaction)
