"""The write path: whatever the interleaving of writers, retries and deletes, one current state per
document, the same on every side. Its rules (docs/write-rules.md has them as one table):

1. **Order.** A document's state is ordered by (version, a delete above a write, then the greater
   digest of the canonical content between two writes). A write or delete that does not rise
   above what is stored when it is applied (the document's own state, or a watermark covering
   it: `_marks`) is `stale` and changes nothing. The same state again is a re-send: nothing
   changes at home, and what it left undone elsewhere (the copy, the partitions a copy left) is
   completed.
2. **Versions.** A writer may send `version`. Without it, a write is numbered above the stored
   version and the covering watermark, and always lands; a delete is a tombstone at the stored
   version (which a delete outranks at an equal version), so the next revision still lands.
3. **Home: one entity group transaction per document change.** The home partition (the record's,
   or the contact's when there is no record) holds the document's row and its index entity
   (`i|{id}`: which row, which state, where the copy is). The old row's delete, the new row and the
   index entity go in one transaction, conditioned on the index entity's ETag (or on its absence)
   and, in a record's partition, on the record's watermark: a concurrent writer's or record
   delete's change makes it fail, and it is planned again on what is there now.
4. **Copies agree.** A document with a record and a contact is also stored in the contact's
   partition, which cannot share the home's transaction. The copy is written from the state the
   home committed (the same version, the same content), right after that commit in the same
   turn, and only over an older state; a partition the copy left gets a tombstone at the new
   state. The home lists such partitions (`Gone`) until they are clean, so a writer cut short is
   completed by the next write or by a re-send.
5. **Lookups per partition.** A batch reads each partition it touches once (point reads of its
   documents' index entities, or one RowKey range inside the partition), never across partitions.
6. **Limits.** Transactions are cut by count (100 operations) and by bytes (what the SDK sends).
7. **Honest failures.** A transaction that fails is reported with the documents it held, and only
   those; nothing is retried blindly except conflicts. Re-sending completes it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from shared.contract import format_stored
from shared.runtime import current_deadline
from shared.storage._entities import (
    IndexState,
    as_int,
    data_entity,
    digest_of,
    index_entity,
    int64,
    is_legacy_row,
    legacy_key,
    parse_stored_time,
)
from shared.storage._expiry import kept_hints, list_expiry, list_gc
from shared.storage._marks import RECORD_MARK, Marks, contact_mark, read_marks
from shared.storage._names import RecordWork, records_of, refresh_many
from shared.storage._table import (
    attempts,
    delete,
    describe,
    prefix_range,
    put_if_unchanged,
    upsert,
)
from shared.storage.errors import Conflict, StorageError, Unavailable
from shared.storage.keys import LEGACY, DocKey, is_contact_partition, twin_of
from shared.storage.limits import MAX_TRANSACTION, MAX_TRANSACTION_BYTES, OPERATION_OVERHEAD, wire_size

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
State = tuple[int, bool, str]
"""(version, deleted, digest): a document's state, in the order the rules compare states."""


@dataclass
class Outcome:
    status: Status
    version: int | None = None
    error: str | None = None
    transaction: int | None = None
    existed: bool = False
    """A delete or purge: the document was live before (what `deleted` counts)."""


@dataclass
class Change:
    """One document's write (`doc`) or delete (`doc` None) at its home."""

    key: DocKey
    doc: Document | None = None
    version: int | None = None
    expired_by: datetime | None = None
    """A purge: delete only if the stored document has expired by this instant."""
    by_scope: bool = False
    """A delete that a wider delete (record, contact) makes: its own watermark does not refuse it."""
    mark: int = 0
    """The tenant's and contact's watermark covering the document (`_marks`)."""
    naming: str = ""
    """A contact's erasure: delete only while the document's copy is in this partition."""
    at_most: int | None = None
    """A wide delete: delete only a document stored at or below this version."""
    outcome: Outcome | None = None
    # what the home committed (or holds, for a re-send), for the copies
    committed: State = (0, False, "")
    twin: str = ""
    gone: list[str] = field(default_factory=list)
    home_index: dict[str, Any] | None = None
    home_etag: str | None = None
    listed: bool = False
    """Its expiry entry is listed (`_expiry`)."""
    gc_due: dict[str, datetime] = field(default_factory=dict)
    """Per partition where this change writes a tombstone: when its grace ends (fixed once, so a
    conflict's retry writes the same)."""

    def tombstone_due(self, pk: str, grace: timedelta) -> datetime:
        """When the grace of this change's tombstone in `pk` ends: from the purge's clock for a
        purge, else from now."""
        if pk not in self.gc_due:
            self.gc_due[pk] = (self.expired_by or datetime.now(UTC)) + grace
        return self.gc_due[pk]

    @property
    def tenant(self) -> str:
        return unquote(self.key.home.split("|", 1)[0])

    @property
    def contact(self) -> str | None:
        """The contact whose mark covers the document: its own, or its home's."""
        if self.doc is not None:
            return self.doc.contactEmail
        return unquote(self.key.home.split("|", 3)[3]) if is_contact_partition(self.key.home) else None


@dataclass
class WriteReport:
    outcomes: list[Outcome]
    partitions: int = 0
    transactions: int = 0
    conflicts: int = 0
    complete: bool = True
    """A contact's or tenant's delete: False until a final pass is over (`_scopes`)."""
    continuation: str | None = None
    """Where that delete goes on: sent back with the same request."""
    retry_after: float = 0.0
    """Seconds before the continuation can finish the delete."""

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def existed(self) -> int:
        return sum(o.status in ("written", "kept") and o.existed for o in self.outcomes)


@dataclass
class _PartitionState:
    index: dict[str, IndexState]
    legacy: dict[DocKey, list[dict[str, Any]]]
    mark: IndexState | None = None
    """The record's watermark entity, in a record's partition (None: not looked up)."""

    def of(self, key: DocKey, pk: str) -> IndexState:
        state = self.index.get(key.index_row(pk)) or IndexState()
        rows = self.legacy.get(key, [])
        state.legacy_rows = [row["RowKey"] for row in rows]
        state.legacy_twin = next((row.get("Twin") or "" for row in rows if row.get("Twin")), "")
        return state


Planned = tuple[Change, list[tuple[Any, ...]], dict[str, Any]]


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
        self.marks = Marks()
        self._marks_read = 0.0
        self._tenants: set[str] = set()
        self._marks_lock = asyncio.Lock()
        self.grace = timedelta(seconds=store.grace_seconds)
        self._tombstones: list[tuple[Change, str, str, list[str]]] = []
        self._homes_left: Counter[str] = Counter()
        """Per copy's partition, the homes of the batch still to commit that have a copy for it."""
        self._copies_due: dict[str, list[tuple[Change, bool]]] = defaultdict(list)

    # ---- the batch ---------------------------------------------------------------------------

    async def apply(self, changes: Sequence[Change]) -> None:
        """Apply changes that each name a distinct document (a batch with several changes of one
        document applies them in rounds, `_batches.write`). Sets every change's `outcome`."""
        try:
            self._check_time()
            self._tenants = {c.tenant for c in changes}
            await self._fresh_marks(changes)
        except StorageError as exc:
            _fail(changes, f"not written: the scope's watermarks could not be read: {describe(exc)}")
            return
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
        # a copy's partition is written once its last home in this batch has committed (usually
        # its only one): one lookup and one transaction for all the copies it takes
        self._homes_left = Counter(twin for group in homes.values() for twin in _twins(group))
        self._copies_due = defaultdict(list)
        await self._gather(self._home_and_copies(pk, group) for pk, group in homes.items())
        await self._list_tombstones()

    async def _home_and_copies(self, pk: str, changes: list[Change]) -> None:
        """A home partition's step, then, in the same turn, its committed changes' copies: work
        the deadline cuts short is whole documents, not homes whose copies waited for a later
        phase (a re-send would look each such home up again only to find it done). A partition
        a copy left is cleaned at once; a copy's own partition once no other home of the batch
        still has a copy for it."""
        await self._home(pk, changes)
        await self._copies(changes)

    async def _copies(self, changes: list[Change]) -> None:
        """The copies of a home's changes that committed, and the partitions their copies left."""
        committed = [c for c in changes if c.outcome is not None and c.outcome.status in ("written", "kept")]
        ready: dict[str, list[tuple[Change, bool]]] = defaultdict(list)
        for change in committed:
            if change.twin and change.doc is not None and twin_of(change.doc) == change.twin:
                self._copies_due[change.twin].append((change, True))
            for left in change.gone:
                ready[left].append((change, False))
        for twin in _twins(changes):
            self._homes_left[twin] -= 1
            if self._homes_left[twin] == 0 and (due := self._copies_due.pop(twin, [])):
                ready[twin] += due
        await asyncio.gather(*(self._copy_partition(p, tasks) for p, tasks in ready.items()))
        cleaned = [c for c in committed if c.gone and c.home_etag]
        await asyncio.gather(*(self._forget_gone(change) for change in cleaned))

    async def _fresh_marks(self, changes: Iterable[Change]) -> None:
        """The tenant and contact watermarks, read again when older than half the settle time: a
        write commits within `settle_seconds` of reading them, which a contact's or tenant's
        delete counts on (`_scopes`)."""
        async with self._marks_lock:
            if time.monotonic() - self._marks_read > self.store.settle_seconds / 2:
                self.marks, self._marks_read = await read_marks(
                    self.store, self._tenants, self.store.settle_seconds / 2
                )
        for change in changes:
            change.mark = self.marks.of(change.tenant, change.contact)

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
        hold some), and a record's watermark: point reads for a few documents, else one RowKey
        range."""
        rows = sorted(key.index_row(pk) for key in keys)
        self._check_time()
        index: dict[str, IndexState] = {}
        legacy: dict[DocKey, list[dict[str, Any]]] = defaultdict(list)
        record = not is_contact_partition(pk)
        if await self.store.first_form_possible():
            query = "PartitionKey eq @pk and ( ( RowKey ge @dlo and RowKey lt @dhi ) or ( RowKey ge @ilo and RowKey le @ihi ) )"
        elif len(rows) <= POINT_READS:
            *found, mark = await asyncio.gather(*(self.table.get(pk, r) for r in rows), self._mark(pk, record))
            for row, entity in zip(rows, found, strict=True):
                if entity is not None:
                    index[row] = IndexState.from_entity(entity)
            return _PartitionState(index, legacy, _mark_state(mark) if record else None)
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
        mark = await self._mark(pk, record)
        return _PartitionState(index, legacy, _mark_state(mark) if record else None)

    async def _mark(self, pk: str, record: bool) -> dict[str, Any] | None:
        return await self.table.get(pk, RECORD_MARK) if record else None

    async def _state(self, pk: str, keys: Iterable[DocKey], fresh: bool) -> _PartitionState:
        if not fresh and self.optimistic:
            return _PartitionState({}, {}, IndexState() if not is_contact_partition(pk) else None)
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
                await self._fresh_marks(pending)
                state = await self._state(pk, [c.key for c in pending], fresh=attempt > 0)
            except StorageError as exc:
                _fail(pending, describe(exc))
                return
            record_mark = state.mark.version if state.mark is not None else 0
            batch: list[Planned] = []
            for change in pending:
                known = state.of(change.key, pk)
                planned = _plan_home(pk, change, known, record_mark, self.grace)
                if planned is not None:
                    batch.append((change, *planned))
                elif change.outcome is not None and change.outcome.status in ("written", "kept"):
                    self._tombstone_written(change, pk, known.entity)  # a re-send: listed again
            # each document that will commit is listed under its expiry day first (a write that is
            # stale lists nothing); one whose entry could not be listed is not written either
            batch = await self._list_expiry(batch)
            guard: list[tuple[Any, ...]] = []
            if state.mark is not None and any(c.version is not None and not c.by_scope for c, _, _ in batch):
                # the record's watermark, unchanged since it was read (or still absent): a record
                # delete that raises it in the meantime makes this transaction fail. Only a versioned
                # change needs it (the mark refuses those); an unversioned one always lands, numbered
                # above what it read, as it would after the delete
                guard = [put_if_unchanged(_mark_entity(pk, state.mark), state.mark.etag)]
            pending = await self._submit(pk, batch, home=True, guard=guard)
            if not pending:
                return
        _fail(pending, "the document changed under this write too many times in a row; send it again")

    async def _submit(
        self, pk: str, batch: list[Planned], home: bool, guard: Sequence[tuple[Any, ...]] = ()
    ) -> list[Change]:
        """Submit the planned operations in transactions of whole changes (each with the `guard`
        operations); returns the changes whose transaction met a conflict (to be planned again on
        fresh state)."""
        conflicted: list[Change] = []
        for members in _transactions(batch, reserved=len(guard), reserved_bytes=sum(map(_op_size, guard))):
            label = self._label()
            ops = [*guard, *(op for _, change_ops, _ in members for op in change_ops)]
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
            position = len(guard)
            for change, change_ops, index in members:
                self._tombstone_written(change, pk, index)
                position += len(change_ops)
                if home:
                    change.home_index, change.home_etag = index, _etag(results, position - 1)
                    assert change.outcome is not None
                    change.outcome.transaction = label
        return conflicted

    # ---- copies --------------------------------------------------------------------------------

    async def _copy_partition(self, pk: str, tasks: list[tuple[Change, bool]]) -> None:
        pending = tasks
        async for attempt in attempts():
            try:
                await self._fresh_marks([])
                erased = self.marks.contact(pending[0][0].tenant, _address_of(pk))
                if is_contact_partition(pk) and not all(put for _, put in pending):
                    # a tombstone goes to a contact's partition only while it was never erased, or
                    # over what is there: asked of storage now, not of the marks read for the batch
                    erased = max(erased, await contact_mark(self.store, pending[0][0].tenant, _address_of(pk)))
                state = await self._state(pk, [c.key for c, _ in pending], fresh=attempt > 0)
            except StorageError as exc:
                _fail([c for c, _ in pending], f"its copy was not written: {describe(exc)}")
                return
            batch: list[Planned] = []
            for change, put in pending:
                known = state.of(change.key, pk)
                planned = _plan_copy(pk, change, put, known, erased, self.grace)
                if planned and planned[-1][1].get("RowKey", "").startswith("i|"):
                    batch.append((change, planned, planned[-1][1]))
                elif planned:
                    batch.append((change, planned, {}))
                if known.exists and known.order == change.committed:
                    self._tombstone_written(change, pk, known.entity)  # a re-send: listed again
            conflicted = await self._submit(pk, batch, home=False)
            retry = {id(c) for c in conflicted}
            pending = [(c, put) for c, put in pending if id(c) in retry]
            if not pending:
                return
        _fail([c for c, _ in pending], "its copy changed under this write too many times in a row; send it again")

    async def _forget_gone(self, change: Change) -> None:
        """Once the partitions a copy left are clean, the home stops listing them (only if nothing
        has been written there since: else the later writer carries them on)."""
        if change.home_index is None or change.home_etag is None:
            return
        if change.outcome is None or change.outcome.status not in ("written", "kept"):
            return
        try:
            await self.table.replace_if_unchanged({**change.home_index, "Gone": "[]"}, change.home_etag)
        except StorageError:  # a later writer (or a re-send) cleans them again
            return

    # ---- expiry index ----------------------------------------------------------------------

    async def _list_expiry(self, batch: list[Planned]) -> list[Planned]:
        """List each expiring document of the batch under its day before its write commits (once
        a change, across conflict retries); a change whose entry could not be listed is reported
        failed and leaves the batch."""
        wanted = [c for c, _, _ in batch if c.doc is not None and c.doc.expiresAt is not None and not c.listed]
        failed: dict[DocKey, str] = {}
        if wanted:
            failed = await list_expiry(
                self.table,
                [(c.key, c.doc.expiresAt) for c in wanted if c.doc is not None and c.doc.expiresAt is not None],
                self._check_time,
            )
            for change in wanted:
                if change.key in failed:
                    change.outcome = Outcome("failed", None, f"expiry index not written: {failed[change.key]}")
                else:
                    change.listed = True
        return [member for member in batch if member[0].key not in failed]

    def _tombstone_written(self, change: Change, pk: str, entity: dict[str, Any] | None) -> None:
        """A tombstone this batch wrote in `pk`, or found there as its re-send: listed for
        collection once the batch is done (`_list_tombstones`)."""
        if entity and entity.get("RowKey", "").startswith("i|") and not entity.get("Row"):
            dues = json.loads(entity.get("Gc") or "[]")
            if dues:
                self._tombstones.append((change, pk, entity["RowKey"], dues))

    async def _list_tombstones(self) -> None:
        """List the tombstones written (or found by a re-send) for collection (`_collect`), under
        the days their grace ends. After the commit, from the dues the entity holds: so a fault
        between the two leaves no entry that nothing lists (a contact's erasure removes the
        entries its entities list), and the re-send lists them again. A change whose entries could
        not be listed is reported failed: the re-send lists them."""
        wanted, self._tombstones = self._tombstones, []
        failed = await list_gc(
            self.table,
            [
                (id(change), pk, rk, due)
                for change, pk, rk, dues in wanted
                for text in dues
                if (due := parse_stored_time(text))
            ],
            lambda: None,
        )
        for change, _, _, _ in wanted:
            if id(change) in failed and change.outcome is not None and change.outcome.status in ("written", "kept"):
                error = f"deleted, but not listed for collection: {failed[id(change)]}; send it again"
                change.outcome = Outcome("failed", None, error, change.outcome.transaction)

    # ---- helpers -------------------------------------------------------------------------------

    def _label(self) -> int:
        self._labels += 1
        return self._labels

    @staticmethod
    def _check_time() -> None:
        at = current_deadline()
        if at is not None and at - time.perf_counter() < RESERVE_SECONDS:
            raise Unavailable("not attempted: the request's time ran out")


# ---- planning: the rules, as pure functions of what was read ------------------------------------------


def _plan_home(
    pk: str, change: Change, state: IndexState, record_mark: int, grace: timedelta
) -> tuple[list[tuple[Any, ...]], dict[str, Any]] | None:
    """The operations of a change at home, or None when it needs none (its outcome set; a re-send
    of the stored state keeps what the home holds in `committed`, for the copies)."""
    key, doc = change.key, change.doc
    mark = max(change.mark, record_mark)
    stored: State | None = state.order if state.exists else None
    current = state.version if state.exists else 0
    live = bool(state.row) or bool(state.legacy_rows)
    if change.naming and change.naming not in (state.twin, state.legacy_twin):
        # the document no longer names the erased contact: only what it left there is completed
        if change.naming in state.gone:
            _resend(change, state, "kept", existed=False)
        else:
            change.outcome = Outcome("kept", current)
        return None
    if change.at_most is not None and state.exists and current > change.at_most:
        change.outcome = Outcome("stale", current)  # written after the wide delete's mark: it stays
        return None
    if change.expired_by is not None:  # the purge: only a document whose own expiry has passed
        expires = parse_stored_time(state.expires) if state.exists else None
        if not (state.row and expires is not None and expires <= change.expired_by):
            if state.exists and not state.row:  # purged before, perhaps not everywhere: complete it
                _resend(change, state, "kept", existed=False)
            else:
                change.outcome = Outcome("kept", current)
            return None
        new: State = (current, True, "")
    elif doc is None:
        if change.version is None:
            if not state.exists and not state.legacy_rows:
                change.outcome = Outcome("absent")
                return None
            new = (current, True, "")  # a tombstone at the stored version: the next revision lands
        else:
            new = (change.version, True, "")
    else:
        digest = digest_of(doc)
        if change.version is None:
            if state.row and state.digest == digest:
                new = state.order  # the stored document again: a re-send
            else:
                new = (max(current, mark) + 1, False, digest)
        else:
            new = (change.version, False, digest)
    refused = mark > 0 and change.version is not None and not change.by_scope and change.version <= mark
    if stored is not None and new == stored:
        _resend(change, state, "written", existed=False)
        return None
    if refused or (stored is not None and new < stored):
        change.outcome = Outcome("stale", current if live else None)  # the version a reader is served
        return None
    version, dead, digest = new
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
    hints = kept_hints([*state.hints, state.expires, expiry])
    deleted_at, gc = _tombstone_times(change, pk, dead, state, grace)
    index = index_entity(
        key,
        pk,
        row=row,
        version=version,
        dead=dead,
        twin=twin,
        gone=gone,
        expires=expiry,
        digest=digest,
        hints=hints,
        deleted_at=deleted_at,
        gc=gc,
    )
    ops.append(put_if_unchanged(index, state.etag))
    change.committed, change.twin, change.gone = new, twin, sorted(gone)
    change.outcome = Outcome("written", version, existed=live and dead)
    return ops, index


def _tombstone_times(change: Change, pk: str, dead: bool, state: IndexState, grace: timedelta) -> tuple[str, list[str]]:
    """A tombstone's time (`DelAt`: its grace runs from then) and the collection entries its
    entity lists (`Gc`), the new one included; a live state carries the earlier ones on. (`dead`:
    no row here, a delete's or, in a copy's partition, the copy's that left.)"""
    if not dead:
        return "", kept_hints(state.gc)
    due = change.tombstone_due(pk, grace)
    return format_stored(due - grace), kept_hints([*state.gc, format_stored(due)])


def _resend(change: Change, state: IndexState, status: Status, existed: bool) -> None:
    """Nothing changes at home: what the stored state left undone elsewhere is completed (and the
    home then stops listing the partitions a copy left, if its entity is still as read)."""
    change.committed, change.twin, change.gone = state.order, state.twin, list(state.gone)
    change.outcome = Outcome(status, state.version, existed=existed)
    if state.gone and state.entity is not None:
        change.home_index = {k: v for k, v in state.entity.items() if k not in ("Timestamp", "etag")}
        change.home_etag = state.etag


def _plan_copy(
    pk: str, change: Change, put: bool, state: IndexState, erased: int, grace: timedelta
) -> list[tuple[Any, ...]]:
    """The copy's partition takes the state the home committed, only over an older one. An erased
    contact's partition takes no copy at or below its mark, and no tombstone where nothing is."""
    version, dead, digest = change.committed
    if state.exists and state.order >= change.committed:
        return [delete(pk, old) for old in state.legacy_rows]
    if erased and (version <= erased or (not put and not state.exists)):
        return [delete(pk, old) for old in state.legacy_rows]
    key, doc = change.key, change.doc
    ops: list[tuple[Any, ...]] = []
    row = key.data_row(pk, doc.dateTime) if put and doc is not None else ""
    if state.row and state.row != row:
        ops.append(delete(pk, state.row))
    ops += [delete(pk, old) for old in state.legacy_rows]
    if put and doc is not None:
        ops.append(upsert(data_entity(doc, key, pk, version, key.home)))
    deleted_at, gc = _tombstone_times(change, pk, dead or not put, state, grace)
    index = index_entity(
        key, pk, row=row, version=version, dead=dead, digest=digest, twin=key.home, deleted_at=deleted_at, gc=gc
    )
    ops.append(put_if_unchanged(index, state.etag))
    return ops


def _mark_state(entity: dict[str, Any] | None) -> IndexState:
    if entity is None:
        return IndexState()
    return IndexState(version=as_int(entity.get("Ver")), etag=entity.metadata.get("etag"), entity=dict(entity))  # type: ignore[attr-defined]


def _mark_entity(pk: str, mark: IndexState) -> dict[str, Any]:
    if mark.entity is not None:
        return {k: v for k, v in mark.entity.items() if k not in ("Timestamp", "etag")}
    return {"PartitionKey": pk, "RowKey": RECORD_MARK, "Ver": int64(0)}


def _twins(changes: Iterable[Change]) -> set[str]:
    """The partitions these changes' documents are copied to."""
    return {twin for c in changes if c.doc is not None and (twin := twin_of(c.doc))}


def _address_of(pk: str) -> str:
    return unquote(pk.split("|", 3)[3]) if is_contact_partition(pk) else ""


# ---- transactions by count and by bytes -------------------------------------------------------------


def _op_size(op: tuple[Any, ...]) -> int:
    return wire_size(op[1]) + OPERATION_OVERHEAD


def _transactions(batch: list[Planned], reserved: int = 0, reserved_bytes: int = 0) -> list[list[Planned]]:
    """Whole changes, grouped into transactions of at most MAX_TRANSACTION operations and
    MAX_TRANSACTION_BYTES bytes, each with room for `reserved` operations of `reserved_bytes`."""
    groups: list[list[Planned]] = [[]]
    count, size = reserved, reserved_bytes
    for member in batch:
        n, bytes_ = len(member[1]), sum(map(_op_size, member[1]))
        if not n:
            continue
        if groups[-1] and (count + n > MAX_TRANSACTION or size + bytes_ > MAX_TRANSACTION_BYTES):
            groups.append([])
            count, size = reserved, reserved_bytes
        groups[-1].append(member)
        count += n
        size += bytes_
    return [g for g in groups if g]


def _etag(results: Any, position: int) -> str | None:
    try:
        etag = results[position].get("etag")
    except (IndexError, AttributeError, TypeError):
        return None
    return str(etag) if etag else None


def _fail(changes: Iterable[Change], error: str) -> None:
    for change in changes:
        if change.outcome is None or change.outcome.status in ("written", "kept"):
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
