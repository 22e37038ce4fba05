"""The one door to the insights table: every storage call of the product goes through `Table`,
which holds the `azure-data-tables` client, turns what the SDK raises into the storage error tree
(`shared.storage.errors`), and has a writer's calls admitted one by one (`_gate`: a reader's
request is admitted as one unit by the pipeline, before its first call).

Beside it, the mechanisms every writer shares, each written once: the entity group transaction's
limit and chunking, the operations of a transaction (conditional on an ETag, or not), the retry
after a conflict (jittered), and the RowKey range of a prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from shared.storage.errors import Conflict, StorageError, TableMissing, Unavailable
from shared.storage.limits import MAX_TRANSACTION

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.storage._gate import Admission

__all__ = [
    "CONFLICT_RETRIES",
    "MAX_TRANSACTION",
    "Table",
    "attempts",
    "build_table_client",
    "chunked",
    "create",
    "delete",
    "delete_if_unchanged",
    "describe",
    "prefix_range",
    "put_if_unchanged",
    "upsert",
]

CONFLICT_RETRIES = 10
CONFLICT_STATUSES = frozenset({404, 409, 412})
"""What a failed condition looks like: the entity changed (412), appeared (409) or went (404)."""

Operation = tuple[Any, ...]


# ---- transactions' operations --------------------------------------------------------------------


def upsert(entity: dict[str, Any]) -> Operation:
    return ("upsert", entity, {"mode": "replace"})


def create(entity: dict[str, Any]) -> Operation:
    """Fails (a conflict) if the entity exists."""
    return ("create", entity)


def delete(pk: str, rk: str) -> Operation:
    return ("delete", {"PartitionKey": pk, "RowKey": rk})


def put_if_unchanged(entity: dict[str, Any], etag: str | None) -> Operation:
    """Create the entity if there was none (`etag` None: fails if one appeared), else replace it
    only if unchanged since it was read (fails on a concurrent writer's change)."""
    if etag is None:
        return create(entity)
    from azure.core import MatchConditions  # azure-core with the first write: readers' start-up skips it

    return ("update", entity, {"mode": "replace", "etag": etag, "match_condition": MatchConditions.IfNotModified})


def delete_if_unchanged(pk: str, rk: str, etag: str) -> Operation:
    from azure.core import MatchConditions  # azure-core with the first write: readers' start-up skips it

    return (
        "delete",
        {"PartitionKey": pk, "RowKey": rk},
        {"etag": etag, "match_condition": MatchConditions.IfNotModified},
    )


def chunked[T](items: Sequence[T], size: int = MAX_TRANSACTION) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def prefix_range(prefix: str) -> tuple[str, str]:
    """The RowKey (or PartitionKey) range of every key that starts with `prefix`: [low, high)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


async def attempts(retries: int = CONFLICT_RETRIES) -> AsyncIterator[int]:
    """Attempt numbers for work that may meet a conflict: the first at once, each later one after
    a short jittered pause (concurrent writers of one partition do not retry in step)."""
    for attempt in range(retries):
        if attempt:
            await asyncio.sleep(random.uniform(0.005, 0.02) * attempt)  # noqa: S311 - jitter, not secrecy
        yield attempt


def describe(exc: BaseException) -> str:
    """A failure for a log line or a per-item report: its kind, status and first line."""
    if isinstance(exc, StorageError):
        return exc.detail
    text = str(getattr(exc, "message", "") or exc).splitlines()[0] if str(exc) else ""
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__}" + (f" {status}" if status else "") + (f": {text[:160]}" if text else "")


def _translated(exc: Exception, conditional: bool) -> StorageError:
    if isinstance(exc, StorageError):
        return exc
    if getattr(exc, "error_code", None) == "TableNotFound":
        return TableMissing(describe(exc))
    if conditional and getattr(exc, "status_code", None) in CONFLICT_STATUSES:
        return Conflict(describe(exc))
    return Unavailable(describe(exc))


# ---- the door ---------------------------------------------------------------------------------------


class Table:
    """The insights table. With an `admission`, each call of a writer's request waits its turn
    there (or is refused); other calls pass."""

    def __init__(self, client: Any, admission: Admission | None = None) -> None:
        self._client = client
        self._admission = admission

    def _turn(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._admission.call() if self._admission is not None else contextlib.nullcontext()

    async def get(self, pk: str, rk: str, *, select: list[str] | None = None) -> dict[str, Any] | None:
        """One entity, or None when there is none."""
        from azure.core.exceptions import ResourceNotFoundError  # azure-core with the first storage call

        try:
            async with self._turn():
                entity: dict[str, Any] = await self._client.get_entity(pk, rk, select=select)
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) == "TableNotFound":
                raise TableMissing(describe(exc)) from exc
            return None
        except StorageError:
            raise
        except Exception as exc:
            raise _translated(exc, conditional=False) from exc
        return entity

    async def pages(
        self,
        query: str,
        parameters: dict[str, Any],
        *,
        select: list[str] | None = None,
        page_size: int | None = None,
        **options: Any,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The query's results a page (one round trip) at a time."""
        pages = self._client.query_entities(
            query, parameters=parameters, select=select, results_per_page=page_size, **options
        ).by_page()
        while True:
            try:
                async with self._turn():
                    page = [entity async for entity in await anext(pages)]
            except StopAsyncIteration:
                return
            except StorageError:
                raise
            except Exception as exc:
                raise _translated(exc, conditional=False) from exc
            yield page

    async def query(
        self,
        query: str,
        parameters: dict[str, Any],
        *,
        select: list[str] | None = None,
        page_size: int | None = None,
        **options: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """The query's results, fetched a page at a time."""
        async for page in self.pages(query, parameters, select=select, page_size=page_size, **options):
            for entity in page:
                yield entity

    async def submit(self, operations: Sequence[Operation]) -> list[Any]:
        """One entity group transaction: all of it or none. A failed condition is a Conflict."""
        if not 0 < len(operations) <= MAX_TRANSACTION:
            raise ValueError(f"a transaction holds 1 to {MAX_TRANSACTION} operations, not {len(operations)}")
        try:
            async with self._turn():
                return list(await self._client.submit_transaction(list(operations)))
        except StorageError:
            raise
        except Exception as exc:
            raise _translated(exc, conditional=True) from exc

    async def delete_rows(self, pk: str, rows: Sequence[str]) -> None:
        """Delete entities of one partition, some perhaps gone already (an index entry dropped by
        the purge, say): in transactions of at most MAX_TRANSACTION, and one by one where a
        transaction met an entity that was gone (storage refuses the whole transaction then)."""
        for chunk in chunked(rows):
            try:
                await self.submit([delete(pk, rk) for rk in chunk])
            except Conflict:
                for rk in chunk:
                    await self.delete(pk, rk)

    async def replace_if_unchanged(self, entity: dict[str, Any], etag: str) -> None:
        from azure.core import MatchConditions  # azure-core with the first write: readers' start-up skips it

        try:
            async with self._turn():
                await self._client.update_entity(
                    entity, mode="replace", etag=etag, match_condition=MatchConditions.IfNotModified
                )
        except StorageError:
            raise
        except Exception as exc:
            raise _translated(exc, conditional=True) from exc

    async def upsert(self, entity: dict[str, Any]) -> None:
        try:
            async with self._turn():
                await self._client.upsert_entity(entity)
        except StorageError:
            raise
        except Exception as exc:
            raise _translated(exc, conditional=False) from exc

    async def delete(self, pk: str, rk: str) -> None:
        """Delete an entity (one that is already gone is no failure)."""
        try:
            async with self._turn():
                await self._client.delete_entity(pk, rk)
        except StorageError:
            raise
        except Exception as exc:
            raise _translated(exc, conditional=False) from exc

    async def create_table(self) -> bool:
        """Create the table; False when it existed already (someone else created it)."""
        from azure.core.exceptions import ResourceExistsError  # azure-core with the first storage call

        try:
            await self._client.create_table()
        except ResourceExistsError:
            return False
        except Exception as exc:
            raise _translated(exc, conditional=False) from exc
        return True

    async def holds_rows(self) -> bool:
        try:
            async for _ in self._client.list_entities(results_per_page=1, select=["PartitionKey"]):
                return True
        except Exception as exc:
            raise _translated(exc, conditional=False) from exc
        return False

    async def close(self) -> None:
        await self._client.close()


def build_table_client(settings: Settings) -> Any:
    """An async TableClient (aiohttp) from a connection string (Azurite, keys) or an account URL
    with DefaultAzureCredential (managed identity in Azure).

    One try and one retry by default, each bounded (1 s to connect, 1.5 s to read: the
    STORAGE_* settings), so a slow or absent store is over within the request budget's reach; the
    pipeline's deadline answers 503 at the budget whatever is still running."""
    from azure.core.pipeline.transport import AioHttpTransport  # the SDK and aiohttp with the first client,
    from azure.data.tables.aio import TableClient  # not when the Functions host indexes the app

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
    from azure.identity.aio import DefaultAzureCredential  # only where there is no connection string (Azure)

    return TableClient(
        endpoint=settings.insights_storage_account_url,
        table_name=settings.insights_table_name,
        credential=DefaultAzureCredential(),
        **options,
    )
