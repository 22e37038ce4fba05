"""Turning stored documents into contract items: localisation, the item model, paging."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from shared.language import choose_language
from shared.models import Page
from shared.pipeline import RequestContext
from shared.points import ExtensionPoint
from shared.store import RecordRef, Scope, StoredDocument, WindowBounds

__all__ = ["record_page", "to_item"]


def to_item(ctx: RequestContext, point: ExtensionPoint, doc: StoredDocument) -> BaseModel | None:
    """The item in the caller's best language; a localized field (a map included) replaces the
    document's own whole. None, logged, when stored data no longer fits the contract."""
    available = [doc.language, *doc.localized]
    language = choose_language(ctx.languages, available, doc.language)
    fields: dict[str, Any] = dict(doc.fields)
    if language != doc.language:
        fields.update(doc.localized.get(language, {}))
    if point.datetime_field and doc.date_time is not None:
        fields[point.datetime_field] = doc.date_time
    try:
        item = point.item_model.model_validate(fields)
    except ValidationError as exc:
        ctx.log.warning("document %s skipped: it no longer fits %s (%s)", doc.id, point.name, exc.errors()[0]["msg"])
        return None
    ctx.served_language(language)
    return item


def record_page(
    ctx: RequestContext,
    point: ExtensionPoint,
    query: Any,
    window: WindowBounds = WindowBounds(),
) -> Page[Any]:
    """The page of one CRM record's documents for a GET operation with the common inputs
    (recordType, recordId, crmType, crmOrgUrl, top, skip)."""
    docs, more = ctx.store.read_page(
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
