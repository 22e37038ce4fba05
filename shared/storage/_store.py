"""The insights store: the table (through its one door, `_table.Table`) and every read of it.

A reader serves every request from the partitions it names (Microsoft's table design guide: never
scan), newest first, by RowKey range; a request's reads run inside the one unit of work its
admission granted (`_gate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.contract import format_stored
from shared.runtime import PerLoop
from shared.storage._entities import StoredDocument, is_legacy_row
from shared.storage._gate import Admission
from shared.storage._table import Table, build_table_client, prefix_range
from shared.storage.errors import TableMissing
from shared.storage.keys import DATA, LEGACY, RecordRef, WindowBounds, enc, partition_key

if TYPE_CHECKING:
    from shared.settings import Settings

__all__ = ["DOCUMENT_ROWS", "SCHEMA_MARKER", "InsightsStore", "Scope", "get_store", "reset_store"]

log = logging.getLogger("c4s.store")
SCHEMA_MARKER = ("~meta", "schema")
"""An entity saying which storage forms the table may hold (outside every tenant's key range)."""
DOCUMENT_ROWS = (LEGACY, prefix_range(DATA)[1])
"""Every document row of a partition, both forms (`d|`..., `e|`...), and no index entity."""
_SELECT = [
    *("PartitionKey", "RowKey", "Id", "Ep", "DateTime", "Exp", "Lang", "Fields", "Localized", "Prompts", "V"),
    *("RecordType", "RecordId", "Contact"),
]


@dataclass(frozen=True)
class Scope:
    """Which documents of a partition a request may see: one rule for both scopes. A document
    scoped to a CRM org is served only to a request naming that org, one scoped to a CRM type only
    to a request naming that type; unscoped documents to every request. (A record id means a record
    of one CRM and org: a request that does not say which is not served another org's record of the
    same id.) `iter_documents` asks storage for exactly this."""

    org: str = ""
    crm: str = ""
    now: datetime | None = None

    def admits(self, org: str, crm: str) -> bool:
        """Whether a document scoped to `org` and `crm` ("" for none) is served to this request."""
        return (not org or org == self.org) and (not crm or crm == self.crm)


class InsightsStore:
    """The table and its reads (the write path is `shared.storage._writer`, through the same door)."""

    def __init__(
        self,
        table_client: Any,
        max_concurrent_reads: int = 0,
        settle_seconds: float = 30.0,
        grace_seconds: float = 10 * 86400.0,
    ) -> None:
        self.gate = Admission(max_concurrent_reads)
        """Admission of this instance's storage work (`_gate`): a reader's request as one unit,
        a writer's calls one by one."""
        self.table = Table(table_client, self.gate)
        self.settle_seconds = settle_seconds
        self.grace_seconds = grace_seconds
        """How long a tombstone or watermark is kept before the collection may remove it
        (`TOMBSTONE_GRACE_DAYS`): the rules hold for a late write that arrives within it."""
        self.marks_cache: dict[str, tuple[float, int, dict[str, int]]] = {}
        """Each tenant's watermarks as last read (`_marks.read_marks`): (when, tenant's, contacts')."""
        """How long after reading the watermarks a write may still commit (`WRITE_SETTLE_SECONDS`):
        a contact's or tenant's delete ends with a pass that starts this long after its mark."""
        self._first_form: bool | None = None
        self.salt: str | None = None
        """The salt of contact marks (`_marks.salt_of`), read once."""

    async def first_form_possible(self) -> bool:
        """Whether the table may still hold first-form rows (`d|`): unless the table was created
        by this code or `manage.py migrate` has finished, writers look for them too."""
        if self._first_form is None:
            # read once and kept (the first requests of an instance may each read it: one point
            # read, cancelled with its request at the deadline like any other storage call)
            self._first_form = await self._read_marker()
        return self._first_form

    async def _read_marker(self) -> bool:
        marker = await self.table.get(*SCHEMA_MARKER)
        return True if marker is None else bool(marker.get("FirstForm", True))

    async def mark_current_form_only(self) -> None:
        """Record that the table holds no first-form rows (a new table; a finished migration)."""
        await self.table.upsert(
            {"PartitionKey": SCHEMA_MARKER[0], "RowKey": SCHEMA_MARKER[1], "FirstForm": False, "V": 2}
        )
        self._first_form = False

    async def _pages(self, query: str, params: dict[str, Any], page_size: int) -> AsyncGenerator[dict[str, Any]]:
        # one round trip per page
        async for entity in self.table.query(query, params, select=_SELECT, page_size=max(1, min(page_size, 1000))):
            yield entity

    async def iter_documents(
        self,
        tenant: str,
        point: str,
        ref: RecordRef,
        scope: Scope,
        window: WindowBounds = WindowBounds(),
        page_size: int = 100,
    ) -> AsyncGenerator[StoredDocument]:
        """The partition's visible documents, newest first, fetched lazily page by page.

        First-form rows (`d|`, until `manage.py migrate` has run) sort before every current row,
        so they all arrive first: they are held, filtered by the window, and merged in by date."""
        now = scope.now or datetime.now(UTC)
        low, high = window.row_range()
        legacy_possible = self._first_form
        if legacy_possible is None:  # an instance's first reads: one point read
            legacy_possible = await self.first_form_possible()
        if legacy_possible:
            rows = ["RowKey ge @olo", "RowKey lt @hi", "( RowKey lt @ohi or RowKey ge @lo )"]
        else:
            rows = ["RowKey ge @lo", "RowKey lt @hi"]  # the window's range only
        clauses = ["PartitionKey eq @pk", *rows, "( Exp eq '' or Exp gt @now )"]
        params: dict[str, Any] = {
            "pk": partition_key(tenant, point, ref),
            "olo": DOCUMENT_ROWS[0],
            "ohi": prefix_range(LEGACY)[1],
            "lo": low,
            "hi": high,
            "now": format_stored(now),
        }
        if scope.org:
            clauses.append("( Org eq '' or Org eq @org )")
            params["org"] = scope.org
        else:
            clauses.append("Org eq ''")
        if scope.crm:
            clauses.append("( Crm eq '' or Crm eq @crm )")
            params["crm"] = scope.crm
        else:
            clauses.append("Crm eq ''")
        first_form: deque[StoredDocument] | None = None
        held: list[StoredDocument] = []
        async for entity in self._pages(" and ".join(clauses), params, page_size):
            doc = _readable(entity, now)
            if is_legacy_row(entity["RowKey"]):
                if doc is not None and window.holds(doc.date_time):
                    held.append(doc)
                continue
            if first_form is None:
                first_form = deque(sorted(held, key=lambda d: d.sort_key))
            if doc is None:
                continue
            while first_form and first_form[0].sort_key <= doc.sort_key:
                yield first_form.popleft()
            yield doc
        for doc in first_form if first_form is not None else sorted(held, key=lambda d: d.sort_key):
            yield doc

    async def first(
        self,
        tenant: str,
        point: str,
        ref: RecordRef,
        scope: Scope,
        limit: int,
        window: WindowBounds = WindowBounds(),
    ) -> list[StoredDocument]:
        """The partition's first `limit` visible documents."""
        found: list[StoredDocument] = []
        async with contextlib.aclosing(self.iter_documents(tenant, point, ref, scope, window, limit)) as docs:
            async for doc in docs:
                found.append(doc)
                if len(found) >= limit:
                    break
        return found

    async def read_page(
        self,
        tenant: str,
        point: str,
        ref: RecordRef,
        scope: Scope,
        skip: int,
        top: int,
        window: WindowBounds = WindowBounds(),
    ) -> tuple[list[StoredDocument], bool]:
        """One page and whether anything lies past it: reads at most skip + top + 1 documents."""
        found = await self.first(tenant, point, ref, scope, skip + top + 1, window)
        return found[skip : skip + top], len(found) > skip + top

    async def read_many(
        self, tenant: str, point: str, refs: Sequence[RecordRef], scope: Scope, limits: Sequence[int]
    ) -> list[list[StoredDocument]]:
        """The first `limits[i]` visible documents of each partition `refs[i]`, read concurrently."""

        reads = [self.first(tenant, point, ref, scope, limit) for ref, limit in zip(refs, limits, strict=True)]
        return list(await asyncio.gather(*reads))

    async def ping(self, timeout: float = 1.0) -> None:
        """One cheap round trip with no retry: proves the table answers within `timeout`."""
        async for _ in self.table.pages(
            "PartitionKey eq @pk",
            {"pk": "~ping"},
            page_size=1,
            connection_timeout=timeout,
            read_timeout=timeout,
            retry_total=0,
        ):
            break

    # ---- export and statistics ----------------------------------------------------------------

    async def iter_entities(
        self, tenant: str | None = None, partitions: Sequence[str] | None = None
    ) -> AsyncGenerator[dict[str, Any]]:
        """Document rows (both forms; no index entity) of the given partitions, of one tenant (a
        PartitionKey range), or of the whole table."""
        rows = "RowKey ge @rlo and RowKey lt @rhi"
        params: dict[str, Any] = {"rlo": DOCUMENT_ROWS[0], "rhi": DOCUMENT_ROWS[1]}
        if partitions is not None:
            for pk in partitions:
                async for entity in self.table.query(f"PartitionKey eq @pk and {rows}", {**params, "pk": pk}):
                    yield entity
            return
        if tenant is not None:
            params["lo"], params["hi"] = prefix_range(enc(tenant) + "|")
            async for entity in self.table.query(f"PartitionKey ge @lo and PartitionKey lt @hi and {rows}", params):
                yield entity
            return
        async for entity in self.table.query(f"PartitionKey lt @exp and {rows}", {**params, "exp": "~"}):
            yield entity

    async def close(self) -> None:
        await self.table.close()

    async def ensure_table(self) -> None:
        """The table as it is when it exists, created (with the marker) only when it is missing.

        A deployed table was created by the infrastructure, and whoever runs a data command may
        hold data rights on that one table and no right to create tables (which Azure checks
        before it would answer "exists"), so an existing table is never asked to be created. An
        existing table that holds nothing yet gets the marker, as a table created here does."""
        try:
            marker = await self.table.get(*SCHEMA_MARKER)
        except TableMissing:
            if await self.table.create_table():
                await self.mark_current_form_only()
                return
            marker = None  # created meanwhile by someone else: treated as an existing table
        if marker is None:
            if not await self.table.holds_rows():
                await self.mark_current_form_only()
            return
        self._first_form = bool(marker.get("FirstForm", True))

    async def __aenter__(self) -> InsightsStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _readable(entity: dict[str, Any], now: datetime) -> StoredDocument | None:
    """The row as a document, or None when it has expired (compared as instants) or cannot be
    read at all (logged by its key, never its content): one bad row never breaks a record."""
    try:
        doc = StoredDocument.from_entity(entity)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("skipped an unreadable stored row %s: %s", entity.get("RowKey", "?")[:40], type(exc).__name__)
        return None
    if doc.expires is not None and doc.expires <= now:
        return None
    return doc


_stores: PerLoop[InsightsStore] = PerLoop(
    lambda settings: InsightsStore(
        build_table_client(settings),
        settings.storage_max_concurrent_reads,
        settings.write_settle_seconds,
        settings.tombstone_grace_days * 86400,
    ),
    InsightsStore.close,
)


def get_store(settings: Settings) -> InsightsStore:
    """This event loop's store, created on first use and reused (client creation costs time);
    in the Functions worker, one per process."""
    return _stores.get(settings)


def reset_store() -> None:
    _stores.reset()
