"""The insights store on Azure Table Storage.

Layout (Microsoft's table design guide: serve every request from one partition, never scan):

    PartitionKey  {tenant}|{extensionPoint}|r|{recordType}|{recordId}     record-attached
                  {tenant}|{extensionPoint}|c|{contact email}             contact-attached
    RowKey        d|{inverted ms timestamp, 13 digits}|{id}                the document

Every key component is percent-encoded, so `/ \\ # ?`, `|`, control characters and quotes in ids
are safe. Rows sort by RowKey, so the inverted timestamp gives newest-first for free and a time
window is a RowKey range. A writer reads the partition's keys first, so when a document's
`dateTime` changes, its old row's delete and its new row go in the same entity group transaction:
it is never seen twice or not at all. A document attached to a record and a contact is stored in
both partitions; each copy names the other (`Twin`), so updates and deletes reach both.

Each entity carries `V` (schema version). Compatibility rule: a reader accepts every version up
to its own; writers only write the current one.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import math
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shared.deadline import current_deadline
from shared.errors import ServiceUnavailable
from shared.loopbound import PerLoop
from shared.models import format_utc

if TYPE_CHECKING:
    from shared.documents import InsightDocument
    from shared.settings import Settings

__all__ = [
    "MAX_KEY_LENGTH",
    "SCHEMA_VERSION",
    "InsightsStore",
    "ReadGate",
    "RecordRef",
    "StoredDocument",
    "get_store",
    "oversized_keys",
    "partition_key",
    "reset_store",
]

SCHEMA_VERSION = 1
_MAX_MS = 9_999_999_999_999
_MAX_TRANSACTION = 100
MAX_KEY_LENGTH = 512
"""The longest PartitionKey or RowKey, in characters once encoded: Azurite's limit (Azure's is
1 KiB). A document whose keys would be longer is refused as invalid, naming its field, rather
than failing the whole transaction it would travel in."""


def _enc(value: str) -> str:
    return quote(value, safe="")


@dataclass(frozen=True)
class RecordRef:
    """Where a document is attached: a CRM record (`kind` "r") or a contact address ("c")."""

    kind: str
    parts: tuple[str, ...]

    @classmethod
    def record(cls, record_type: str, record_id: str) -> RecordRef:
        return cls("r", (record_type, record_id))

    @classmethod
    def contact(cls, email: str) -> RecordRef:
        return cls("c", (email,))


def partition_key(tenant: str, point: str, ref: RecordRef) -> str:
    return "|".join([_enc(tenant), _enc(point), ref.kind, *(_enc(p) for p in ref.parts)])


def _inverted(when: datetime | None) -> int:
    if when is None:
        return _MAX_MS
    return _MAX_MS - int(when.timestamp() * 1000)


def _data_row(when: datetime | None, doc_id: str) -> str:
    return f"d|{_inverted(when):013d}|{_enc(doc_id)}"


@dataclass(frozen=True)
class ChunkResult:
    """One entity group transaction: the documents it held and its error, if it failed."""

    partition: str
    ids: list[str]
    error: str | None


@dataclass(frozen=True)
class IndexEntry:
    sk: str
    twin: str


def refs_of(doc: InsightDocument) -> list[RecordRef]:
    """Every partition a document is reachable through: its record and/or its contact."""
    refs = []
    if doc.recordType and doc.recordId:
        refs.append(RecordRef.record(doc.recordType, doc.recordId))
    if doc.contactEmail:
        refs.append(RecordRef.contact(doc.contactEmail))
    return refs


def oversized_keys(doc: InsightDocument) -> list[tuple[str, int]]:
    """(field, encoded length) of each key of the document that is longer than MAX_KEY_LENGTH:
    the RowKey holds the id; a PartitionKey the record or the contact address."""
    found = []
    row = len(_data_row(doc.dateTime, doc.id))
    if row > MAX_KEY_LENGTH:
        found.append(("id", row))
    for ref in refs_of(doc):
        length = len(partition_key(doc.tenantId, doc.extensionPoint, ref))
        if length > MAX_KEY_LENGTH:
            found.append(("recordId" if ref.kind == "r" else "contactEmail", length))
    return found


def partition_keys(doc: InsightDocument) -> list[str]:
    return [partition_key(doc.tenantId, doc.extensionPoint, ref) for ref in refs_of(doc)]


def twin_of(doc: InsightDocument, pk: str) -> str:
    """The other partition a document attached to both a record and a contact lives in."""
    return next((other for other in partition_keys(doc) if other != pk), "")


def document_of(entity: dict[str, Any]) -> dict[str, Any]:
    """A stored document row as the JSON document `load` accepts (normalised spellings)."""
    data: dict[str, Any] = {"tenantId": entity["Tenant"], "extensionPoint": entity["Ep"], "id": entity["Id"]}
    if entity.get("RecordType"):
        data["recordType"] = entity["RecordType"]
        data["recordId"] = entity["RecordId"]
    for key, name in (
        ("Contact", "contactEmail"),
        ("Crm", "crmType"),
        ("Org", "crmOrgUrl"),
        ("DateTime", "dateTime"),
        ("Exp", "expiresAt"),
    ):
        if entity.get(key):
            data[name] = entity[key]
    data["language"] = entity.get("Lang") or "en"
    data["fields"] = json.loads(entity["Fields"])
    localized = json.loads(entity.get("Localized") or "{}")
    if localized:
        data["localized"] = localized
    prompts = json.loads(entity.get("Prompts") or "[]")
    if prompts:
        data["prompts"] = prompts
    return data


@dataclass(frozen=True)
class StoredDocument:
    """A document as a reader gets it back: enough to build any item model."""

    id: str
    point: str
    date_time: datetime | None
    language: str
    fields: dict[str, Any]
    localized: dict[str, dict[str, Any]]
    prompts: tuple[str, ...]
    attached_to_record: bool
    home: str = ""
    """With `id`, which document this is: its record (`r|type|id`) or, when it has none, its
    contact (`c|address`). Its copy in its other partition has the same home; a document of the
    same id on another record or contact does not."""

    @property
    def identity(self) -> tuple[str, str]:
        return self.home, self.id

    @property
    def sort_key(self) -> tuple[int, str]:
        """Newest first; undated last; ties by id (the RowKey order within a partition)."""
        return _inverted(self.date_time), self.id

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> StoredDocument:
        version = int(entity.get("V", 1))
        if version > SCHEMA_VERSION:
            raise ValueError(f"entity schema version {version} is newer than this reader")
        raw_dt = entity.get("DateTime") or ""
        return cls(
            id=entity["Id"],
            point=entity["Ep"],
            date_time=datetime.fromisoformat(raw_dt.replace("Z", "+00:00")) if raw_dt else None,
            language=entity.get("Lang") or "en",
            fields=json.loads(entity["Fields"]),
            localized=json.loads(entity.get("Localized") or "{}"),
            prompts=tuple(json.loads(entity.get("Prompts") or "[]")),
            attached_to_record=entity["PartitionKey"].split("|")[2] == "r",
            home=(
                f"r|{entity['RecordType']}|{entity['RecordId']}"
                if entity.get("RecordType")
                else f"c|{entity.get('Contact') or ''}"
            ),
        )


@dataclass(frozen=True)
class WindowBounds:
    """A time window: `start` inclusive, `end` exclusive (either may be absent)."""

    start: datetime | None = None
    end: datetime | None = None

    def row_range(self) -> tuple[str, str]:
        low = "d|"
        high = "d}"
        if self.end is not None:
            # dateTime < end  <=>  inverted > inverted(end)
            low = f"d|{_inverted(self.end) + 1:013d}|"
        if self.start is not None:
            # dateTime >= start  <=>  inverted <= inverted(start)
            high = f"d|{_inverted(self.start) + 1:013d}|"
        return low, high


@dataclass(frozen=True)
class Scope:
    """Which documents of a partition a request may see."""

    org: str = ""
    crm: str = ""
    now: datetime | None = None


class ReadGate:
    """At most `limit` storage reads in flight from this process's event loop (0: no limit); the
    others wait, earliest request deadline first (arrival order among equals).

    A saturated store serves concurrent requests unevenly: some wait many times the average while
    others pass, and those miss the answer budget. Queued here instead, every request waits about
    the average and the oldest goes next. A read whose deadline has passed is never admitted: it
    is answered 503 at once, and a waiter whose request is cancelled at its deadline leaves the
    queue (or passes on a slot it was just handed) without reaching the store."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._busy = 0
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.limit <= 0:
            _admit_only_in_time()
            yield
            return
        await self._acquire()
        try:
            yield
        finally:
            self._hand_over()

    @property
    def in_flight(self) -> int:
        return self._busy

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def _acquire(self) -> None:
        _admit_only_in_time()
        if self._busy < self.limit and not self._waiting:
            self._busy += 1
            return
        at = current_deadline()
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (math.inf if at is None else at, next(self._seq), granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._hand_over()  # handed a slot as it was cancelled: pass it on, unused
            else:
                self._waiting = [w for w in self._waiting if w[2] is not granted]
                heapq.heapify(self._waiting)
            raise
        _admit_only_in_time(release=self)

    def _hand_over(self) -> None:
        while self._waiting:
            _, _, granted = heapq.heappop(self._waiting)
            if not granted.done():
                granted.set_result(None)  # the slot changes hands; _busy stays
                return
        self._busy -= 1


def _admit_only_in_time(release: ReadGate | None = None) -> None:
    """A read whose request is past its deadline never starts (its slot, if it holds one, goes on)."""
    at = current_deadline()
    if at is not None and time.perf_counter() >= at:
        if release is not None:
            release._hand_over()
        raise ServiceUnavailable(
            "The service could not answer in time; retry shortly.",
            retry_after=2,
            log_detail="the request budget ran out before a storage read could start",
        )


class InsightsStore:
    """Reads and writes of insight documents, through one async table client."""

    def __init__(self, table_client: Any, max_concurrent_reads: int = 0) -> None:
        self._table = table_client
        self.gate = ReadGate(max_concurrent_reads)

    # ---- reads -------------------------------------------------------------------------------

    async def iter_documents(
        self,
        tenant: str,
        point: str,
        ref: RecordRef,
        scope: Scope,
        window: WindowBounds = WindowBounds(),
        page_size: int = 100,
    ) -> AsyncGenerator[StoredDocument]:
        """The partition's visible documents, newest first, fetched lazily page by page."""
        low, high = window.row_range()
        now = format_utc(scope.now or datetime.now(UTC))
        clauses = [
            "PartitionKey eq @pk",
            "RowKey ge @lo",
            "RowKey lt @hi",
            "( Exp eq '' or Exp gt @now )",
        ]
        params: dict[str, Any] = {"pk": partition_key(tenant, point, ref), "lo": low, "hi": high, "now": now}
        if scope.org:
            clauses.append("( Org eq '' or Org eq @org )")
            params["org"] = scope.org
        else:
            clauses.append("Org eq ''")
        if scope.crm:
            clauses.append("( Crm eq '' or Crm eq @crm )")
            params["crm"] = scope.crm
        query = " and ".join(clauses)
        pages = self._table.query_entities(
            query,
            parameters=params,
            results_per_page=max(1, min(page_size, 1000)),
            select=[
                *("PartitionKey", "Id", "Ep", "DateTime", "Lang", "Fields", "Localized", "Prompts", "V"),
                *("RecordType", "RecordId", "Contact"),
            ],
        ).by_page()
        while True:
            # one round trip per page, each inside a read slot
            async with self.gate.slot():
                try:
                    page = await anext(pages)
                    entities = [entity async for entity in page]
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    raise _unavailable(exc) from exc
            for entity in entities:
                yield StoredDocument.from_entity(entity)

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
        try:
            pages = self._table.query_entities(
                "PartitionKey eq @pk",
                parameters={"pk": "~ping"},
                results_per_page=1,
                connection_timeout=timeout,
                read_timeout=timeout,
                retry_total=0,
            )
            async for _ in pages:
                break
        except Exception as exc:
            raise _unavailable(exc) from exc

    # ---- writes ------------------------------------------------------------------------------

    async def existing(self, pk: str) -> dict[str, IndexEntry]:
        """Where each document of a partition sits now (its RowKey) and its copy elsewhere."""
        found: dict[str, IndexEntry] = {}
        async for entity in self._table.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
            parameters={"pk": pk, "lo": "d|", "hi": "d}"},
            select=["RowKey", "Id", "Twin"],
        ):
            found[entity["Id"]] = IndexEntry(entity["RowKey"], entity.get("Twin") or "")
        return found

    async def existing_between(self, first_pk: str, last_pk: str) -> dict[str, dict[str, IndexEntry]]:
        """`existing` for every partition from `first_pk` to `last_pk` in one range query: a bulk
        load of neighbouring partitions asks once instead of once a partition."""
        found: dict[str, dict[str, IndexEntry]] = {}
        async for entity in self._table.query_entities(
            "PartitionKey ge @first and PartitionKey le @last and RowKey ge @lo and RowKey lt @hi",
            parameters={"first": first_pk, "last": last_pk, "lo": "d|", "hi": "d}"},
            select=["PartitionKey", "RowKey", "Id", "Twin"],
        ):
            found.setdefault(entity["PartitionKey"], {})[entity["Id"]] = IndexEntry(
                entity["RowKey"], entity.get("Twin") or ""
            )
        return found

    async def write_partition(
        self, pk: str, documents: Sequence[InsightDocument], current: dict[str, IndexEntry] | None = None
    ) -> list[ChunkResult]:
        """Upsert documents that share one partition (`current`: what `existing` says of it).

        Each transaction holds whole documents (a moved document's delete and its new row travel
        together, so a reader never sees it twice or not at all) and at most 100 operations; a
        partition's documents are all or nothing per transaction. A failed transaction is
        reported and the next one still tried."""
        latest: dict[str, InsightDocument] = {}
        for doc in documents:
            latest[doc.id] = doc  # the last of duplicates in one batch wins, like a re-run would
        if current is None:
            current = await self.existing(pk)
        chunks: list[tuple[list[str], list[tuple[Any, ...]]]] = [([], [])]
        stale_twins: dict[str, list[str]] = {}
        for doc_id, doc in latest.items():
            twin = twin_of(doc, pk)
            old = current.get(doc_id)
            ops = self._operations(pk, doc, twin, old.sk if old else None)
            if old and old.twin and old.twin != twin:
                stale_twins.setdefault(old.twin, []).append(doc_id)
            if len(chunks[-1][1]) + len(ops) > _MAX_TRANSACTION:
                chunks.append(([], []))
            chunks[-1][0].append(doc_id)
            chunks[-1][1].extend(ops)
        results = []
        for ids, ops in chunks:
            if not ops:
                continue
            try:
                await self._table.submit_transaction(ops)
                results.append(ChunkResult(pk, ids, None))
            except Exception as exc:  # noqa: BLE001 - reported per chunk, the rest still written
                results.append(ChunkResult(pk, ids, f"{type(exc).__name__}: {str(exc)[:200]}"))
        for twin_pk, ids in stale_twins.items():
            await self.delete_ids(twin_pk, ids, cascade=False)
        return results

    @staticmethod
    def _operations(pk: str, doc: InsightDocument, twin: str, old_row: str | None) -> list[tuple[Any, ...]]:
        row = _data_row(doc.dateTime, doc.id)
        entity = {
            "PartitionKey": pk,
            "RowKey": row,
            "V": SCHEMA_VERSION,
            "Id": doc.id,
            "Ep": doc.extensionPoint,
            "Tenant": doc.tenantId,
            "RecordType": doc.recordType or "",
            "RecordId": doc.recordId or "",
            "Contact": doc.contactEmail or "",
            "Twin": twin,
            "Crm": doc.crmType or "",
            "Org": doc.crmOrgUrl or "",
            "DateTime": format_utc(doc.dateTime) if doc.dateTime else "",
            "Exp": format_utc(doc.expiresAt) if doc.expiresAt else "",
            "Lang": doc.language,
            "Fields": json.dumps(doc.fields, ensure_ascii=False, separators=(",", ":")),
            "Localized": json.dumps(doc.localized, ensure_ascii=False, separators=(",", ":")),
            "Prompts": json.dumps(doc.prompts, ensure_ascii=False, separators=(",", ":")),
        }
        ops: list[tuple[Any, ...]] = []
        if old_row and old_row != row:
            ops.append(("delete", {"PartitionKey": pk, "RowKey": old_row}))
        ops.append(("upsert", entity, {"mode": "replace"}))
        return ops

    # ---- deletes -----------------------------------------------------------------------------

    async def delete_ids(self, pk: str, ids: Sequence[str], cascade: bool = True) -> int:
        """Delete documents by id from one partition (and, with `cascade`, their copy in the
        partition of their other attachment). Returns how many were found and deleted here."""
        wanted = set(ids)
        found = {doc_id: entry for doc_id, entry in (await self.existing(pk)).items() if doc_id in wanted}
        await self._delete_rows(pk, [entry.sk for entry in found.values()])
        if cascade:
            await self._delete_twins(found)
        return len(found)

    async def delete_partition(self, pk: str) -> int:
        """Delete every document of one partition, and their copies elsewhere."""
        found = await self.existing(pk)
        await self._delete_rows(pk, [entry.sk for entry in found.values()])
        await self._delete_twins(found)
        return len(found)

    async def _delete_twins(self, found: dict[str, IndexEntry]) -> None:
        twins: dict[str, list[str]] = {}
        for doc_id, entry in found.items():
            if entry.twin:
                twins.setdefault(entry.twin, []).append(doc_id)
        for twin_pk, ids in twins.items():
            await self.delete_ids(twin_pk, ids, cascade=False)

    async def delete_tenant(self, tenant: str) -> int:
        """Delete everything stored for a tenant: every partition whose key starts with it (a
        PartitionKey range, not a table scan). Returns the number of documents deleted."""
        prefix = _enc(tenant) + "|"
        by_partition: dict[str, list[str]] = {}
        documents = 0
        async for entity in self._table.query_entities(
            "PartitionKey ge @lo and PartitionKey lt @hi",
            parameters={"lo": prefix, "hi": _enc(tenant) + "}"},
            select=["PartitionKey", "RowKey"],
        ):
            by_partition.setdefault(entity["PartitionKey"], []).append(entity["RowKey"])
            documents += entity["RowKey"].startswith("d|")
        for pk, rows in by_partition.items():
            await self._delete_rows(pk, rows)
        return documents

    async def purge_expired(self, now: datetime | None = None) -> int:
        """Delete every document whose `expiresAt` has passed (a maintenance scan of the table;
        readers never see expired documents in the meantime)."""
        cutoff = format_utc(now or datetime.now(UTC))
        by_partition: dict[str, list[str]] = {}
        documents = 0
        async for entity in self._table.query_entities(
            "Exp gt @empty and Exp le @cutoff",
            parameters={"empty": "", "cutoff": cutoff},
            select=["PartitionKey", "RowKey"],
        ):
            by_partition.setdefault(entity["PartitionKey"], []).append(entity["RowKey"])
            documents += 1
        for pk, rows in by_partition.items():
            await self._delete_rows(pk, rows)
        return documents

    async def _delete_rows(self, pk: str, rows: Sequence[str]) -> None:
        unique = list(dict.fromkeys(rows))
        for start in range(0, len(unique), _MAX_TRANSACTION):
            ops = [("delete", {"PartitionKey": pk, "RowKey": row}) for row in unique[start : start + _MAX_TRANSACTION]]
            await self._table.submit_transaction(ops)

    # ---- export and statistics ----------------------------------------------------------------

    async def iter_entities(
        self, tenant: str | None = None, partitions: Sequence[str] | None = None
    ) -> AsyncGenerator[dict[str, Any]]:
        """Document rows of the given partitions, of one tenant (a PartitionKey range), or of
        the whole table."""
        rows = "RowKey ge @rlo and RowKey lt @rhi"
        params: dict[str, Any] = {"rlo": "d|", "rhi": "d}"}
        if partitions is not None:
            for pk in partitions:
                async for entity in self._table.query_entities(
                    f"PartitionKey eq @pk and {rows}", parameters={**params, "pk": pk}
                ):
                    yield entity
            return
        if tenant is not None:
            params.update(lo=_enc(tenant) + "|", hi=_enc(tenant) + "}")
            async for entity in self._table.query_entities(
                f"PartitionKey ge @lo and PartitionKey lt @hi and {rows}", parameters=params
            ):
                yield entity
            return
        async for entity in self._table.query_entities(rows, parameters=params):
            yield entity

    async def close(self) -> None:
        await self._table.close()

    async def ensure_table(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        try:
            await self._table.create_table()
        except ResourceExistsError:
            pass

    async def __aenter__(self) -> InsightsStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _unavailable(exc: Exception) -> ServiceUnavailable:
    return ServiceUnavailable(log_detail=f"insights store failed: {type(exc).__name__}: {str(exc)[:300]}")


def build_table_client(settings: Settings) -> Any:
    """An async TableClient (aiohttp) from a connection string (Azurite, keys) or an account URL
    with DefaultAzureCredential (managed identity in Azure).

    One try and one retry by default, each bounded (1 s to connect, 1.5 s to read: the
    STORAGE_* settings), so a slow or absent store is over within the request budget's reach; the
    pipeline's deadline answers 503 at the budget whatever is still running."""
    from azure.core.pipeline.transport import AioHttpTransport
    from azure.data.tables.aio import TableClient

    # Proxy settings from the environment only when a proxy is actually configured.
    proxied = any(
        os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")
    )
    connect, read = settings.storage_connect_timeout_seconds, settings.storage_read_timeout_seconds
    options: dict[str, Any] = {
        "connection_timeout": connect,
        "read_timeout": read,
        "retry_total": settings.storage_retries,
        "retry_backoff_factor": 0.1,
        "transport": AioHttpTransport(use_env_settings=proxied, connection_timeout=connect, read_timeout=read),
    }
    if settings.insights_storage_connection_string:
        return TableClient.from_connection_string(
            settings.insights_storage_connection_string, table_name=settings.insights_table_name, **options
        )
    from azure.identity.aio import DefaultAzureCredential

    return TableClient(
        endpoint=settings.insights_storage_account_url,
        table_name=settings.insights_table_name,
        credential=DefaultAzureCredential(),
        **options,
    )


_stores: PerLoop[InsightsStore] = PerLoop(
    lambda settings: InsightsStore(build_table_client(settings), settings.storage_max_concurrent_reads),
    InsightsStore.close,
)


def get_store(settings: Settings) -> InsightsStore:
    """This event loop's store, created on first use and reused (client creation costs time);
    in the Functions worker, one per process."""
    return _stores.get(settings)


def reset_store() -> None:
    _stores.reset()
