"""Pages of items for the extension points: a CRM record's page, and the documents an email thread
reaches through its records and participants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.contract import ExtensionPoint, Page, to_item
from shared.storage import RecordRef, Scope, StoredDocument, WindowBounds

if TYPE_CHECKING:
    from shared.http._pipeline import RequestContext

__all__ = ["Candidate", "gather", "page_of", "record_page"]


async def record_page(
    ctx: RequestContext,
    point: ExtensionPoint,
    query: Any,
    window: WindowBounds = WindowBounds(),
) -> Page[Any]:
    """The page of one CRM record's documents for a GET operation with the common inputs
    (recordType, recordId, crmType, crmOrgUrl, top, skip)."""
    docs, more = await ctx.store.read_page(
        ctx.tenant,
        point.name,
        RecordRef.record(query.recordType, query.recordId),
        Scope(org=query.crmOrgUrl, crm=query.crmType),
        skip=query.skip,
        top=query.top,
        window=window,
    )
    items = [item for doc in docs if (item := to_item(ctx, point, doc)) is not None]
    return Page[Any](value=items, hasMoreResults=more)


@dataclass(frozen=True)
class Candidate:
    doc: StoredDocument
    record_attached: bool


async def gather(
    ctx: RequestContext,
    point: ExtensionPoint,
    records: list[RecordRef],
    contacts: list[str],
    scope: Scope,
    wanted: int,
) -> list[Candidate]:
    """Documents reachable through any of a request's records or contacts (addresses), each once
    (a document stored with its record and its contact is one; the same id on two records is
    two), record-attached before contact-attached, newest first within each group. Enough are read
    to fill the first `wanted` places exactly."""
    # One round trip for all of them: record and contact partitions are read concurrently. A
    # contact partition is needed only when the records give fewer than `wanted` documents, and
    # then it may repeat up to `wanted - 1` of those before its own, so `2 * wanted - 1` of each
    # contact partition is always enough.
    refs = [*records, *(RecordRef.contact(address) for address in contacts)]
    limits = [wanted] * len(records) + [2 * wanted - 1] * len(contacts)
    parts = await ctx.store.read_many(ctx.tenant, point.name, refs, scope, limits)
    seen: set[tuple[str, str]] = set()
    ranked: list[Candidate] = []
    for group, found in ((True, parts[: len(records)]), (False, parts[len(records) :])):
        if len(ranked) >= wanted:
            break
        for doc in sorted((doc for part in found for doc in part), key=lambda d: d.sort_key):
            if doc.identity not in seen:
                seen.add(doc.identity)
                ranked.append(Candidate(doc, group))
    return ranked


def page_of(ctx: RequestContext, point: ExtensionPoint, docs: list[StoredDocument], skip: int, top: int) -> Page[Any]:
    window = docs[skip : skip + top]
    items = [item for doc in window if (item := to_item(ctx, point, doc)) is not None]
    return Page[Any](value=items, hasMoreResults=len(docs) > skip + top)
