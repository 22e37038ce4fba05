"""The migration of rows the first storage form wrote (`d|`, V=1) to the current form, through the
write path.

A migrated document gets version 0, older than any write: a writer's concurrent write of the same
document wins whatever the order, and where the document already exists in the current form its
first-form rows are leftovers and go. Resumable and idempotent: the first-form rows are the work
list, and each leaves it as it is migrated; run it again after an interruption, and a second run
finds nothing to do. Validation is the caller's (the document model sits above this layer).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.storage._batches import write
from shared.storage._entities import document_of, legacy_key
from shared.storage._table import prefix_range
from shared.storage.errors import StorageError
from shared.storage.keys import LEGACY, home_of

if TYPE_CHECKING:
    from shared.storage._protocols import Document
    from shared.storage._store import InsightsStore

__all__ = ["MIGRATE_PAGE", "Migration", "migrate_first_form"]

MIGRATE_PAGE = 1000

Validate = Callable[[dict[str, Any]], "tuple[Document | None, str]"]
"""A stored row's document as `load` would take it -> (the document with version 0, or None and
why it cannot be read)."""


@dataclass
class Migration:
    totals: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    finished: bool = False
    """No first-form row is left: the table is marked, and writers stop looking for them."""


async def migrate_first_form(
    store: InsightsStore, validate: Validate, progress: Callable[[int], None] | None = None
) -> Migration:
    migration = Migration()
    lo, hi = prefix_range(LEGACY)
    async for page in store.table.pages(
        "RowKey ge @lo and RowKey lt @hi", {"lo": lo, "hi": hi}, page_size=MIGRATE_PAGE
    ):
        if page:
            await _migrate_page(store, page, validate, migration)
            if progress:
                progress(len(page))
    if not migration.totals["failed"]:
        async for _ in store.table.query("RowKey ge @lo and RowKey lt @hi", {"lo": lo, "hi": hi}, page_size=1):
            break
        else:
            await store.mark_current_form_only()
            migration.finished = True
    return migration


def _written_at(entity: Any) -> tuple[str, str]:
    """When the table last wrote an entity (its `Timestamp`), the partition breaking a tie."""
    stamp = (getattr(entity, "metadata", None) or {}).get("timestamp")
    return (stamp.isoformat() if stamp is not None else "", entity["PartitionKey"])


async def _other_sides(store: InsightsStore, key: object, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first-form rows of the same document on the other side of its pair (`Twin`), which
    the first form wrote without a transaction: the two may hold different revisions."""
    here = {row["PartitionKey"] for row in rows}
    lo, hi = prefix_range(LEGACY)
    found = []
    twins: set[str] = {str(row["Twin"]) for row in rows if row.get("Twin")}
    for twin in sorted(twins - here):
        async for entity in store.table.query(
            "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi and Id eq @id",
            {"pk": twin, "lo": lo, "hi": hi, "id": rows[0]["Id"]},
        ):
            if legacy_key(entity) == key:
                found.append(entity)
    return found


async def _migrate_page(
    store: InsightsStore, page: list[dict[str, Any]], validate: Validate, migration: Migration
) -> None:
    """Each document of the page once, from its most recently written first-form row (the row's
    `Timestamp`) wherever that row lies, its other rows removed with it by the write."""
    seen: dict[object, list[dict[str, Any]]] = {}
    for entity in page:
        seen.setdefault(legacy_key(entity), []).append(entity)
    documents = []
    for key, rows in seen.items():
        newest = max([*rows, *await _other_sides(store, key, rows)], key=_written_at)
        try:
            document, problem = validate(document_of(newest))
        except (ValueError, KeyError, TypeError) as exc:
            document, problem = None, f"row: unreadable ({type(exc).__name__})"
        if document is None:
            migration.totals["invalid"] += 1
            migration.problems.append(f"left as it is: row {newest['RowKey']} of {newest['PartitionKey']}: {problem}")
            continue
        documents.append(document)
    report = await write(store, documents)
    for document, outcome in zip(documents, report.outcomes, strict=True):
        rows = seen[home_of(document)]
        if outcome.status == "stale":  # the current form exists: these rows are leftovers
            for entity in rows:
                with contextlib.suppress(StorageError):
                    await store.table.delete(entity["PartitionKey"], entity["RowKey"])
            migration.totals["leftovers deleted"] += len(rows)
        elif outcome.status == "failed":
            migration.totals["failed"] += 1
            migration.problems.append(f"failed: document {document.id}: {outcome.error}")
        else:
            migration.totals["migrated"] += 1
