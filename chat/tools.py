"""The Sales chat tools: find a record by its name, then answer with a compact digest of its insights.

Copilot's orchestrator calls these through an API plugin of our declarative agent (`manage.py
agent-package`), never through the connector: a seller asks "what's new with Fabrikam's
renewal?", the orchestrator finds the record by name, then asks for its insights and cites them.
Both go through the same pipeline as the extension points (Entra token with the same scopes,
request id, deadline, `ApiError`s); the caller's tenant is the token's.

A digest stays small enough for a chat answer: at most `DIGEST_ITEMS` items of each kind (key
sales info, related records, activities), texts cut at `TEXT_CHARS`, a related record's first two
properties only; `more` says how many of each kind were left out. The models are in
`chat/models.py`, imported on the first call.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import azure.functions as func
from pydantic import BaseModel

from extensions import activities, related_records, sales_highlights
from shared.contract import to_item
from shared.contract.errors import InvalidRequest
from shared.http import RequestContext, operation
from shared.storage import RecordRef, Scope

if TYPE_CHECKING:
    from chat.models import FindRecordsQuery, RecordDigest, RecordInsightsQuery, RecordMatches

bp = func.Blueprint()

TEXT_CHARS = 300

__all__ = ["bp", "find_records", "record_insights"]


@operation(
    operation_id="findRecords",
    summary="Find CRM records by name",
    description="Finds the seller's CRM records (accounts, opportunities, ...) that have insights, by words of their name.",
    query="chat.models:FindRecordsQuery",
    response="chat.models:RecordMatches",
    in_connector=False,
)
async def find_records(ctx: RequestContext, query: FindRecordsQuery) -> RecordMatches:
    from chat.models import RecordMatch, RecordMatches  # with the first chat call (see the module's note)
    from shared.storage import MAX_QUERY_WORDS, words_of  # the name index: with the first chat call
    from shared.storage import find_records as search  # (and the write side it belongs to)

    if not words_of(query.name, MAX_QUERY_WORDS):
        raise InvalidRequest("name", "has no letters or digits to look for")
    found = await search(ctx.store, ctx.tenant, query.name, query.recordType, query.top)
    ctx.log.info("found %d record(s) by name", len(found))
    return RecordMatches(
        records=[
            RecordMatch(
                recordType=f.record_type,
                recordId=f.record_id,
                name=f.name,
                url=f.url or None,
                crmType=f.crm_type or None,
                crmOrgUrl=f.crm_org or None,
            )
            for f in found
        ]
    )


@operation(
    operation_id="getRecordInsights",
    summary="Get a CRM record's insights",
    description="Answers a compact digest of a CRM record's insights: key sales info, related records and the latest activities, with citation links.",
    query="chat.models:RecordInsightsQuery",
    response="chat.models:RecordDigest",
    in_connector=False,
)
async def record_insights(ctx: RequestContext, query: RecordInsightsQuery) -> RecordDigest:
    from chat.models import (  # with the first chat call (see the module's note)
        DIGEST_ITEMS,
        ActivityDigest,
        KeySalesInfo,
        Omitted,
        Property,
        RecordDigest,
        RelatedRecordDigest,
    )
    from shared.storage import record_entry  # the name index: with the first chat call

    if query.language:
        ctx.languages = [query.language, *ctx.languages]
    ref = RecordRef.record(query.recordType, query.recordId)
    points = (sales_highlights.POINT, related_records.POINT, activities.POINT)

    def pages_in(scope: Scope) -> Any:
        return asyncio.gather(
            *(ctx.store.read_page(ctx.tenant, p.name, ref, scope, skip=0, top=DIGEST_ITEMS) for p in points)
        )

    if query.crmType and query.crmOrgUrl:
        pages, entry = await asyncio.gather(
            pages_in(Scope(org=query.crmOrgUrl, crm=query.crmType)),
            record_entry(ctx.store, ctx.tenant, query.recordType, query.recordId),
        )
    else:  # what the call leaves out is the record's own CRM and org, as the name index has them
        entry = await record_entry(ctx.store, ctx.tenant, query.recordType, query.recordId)
        scope = Scope(
            org=query.crmOrgUrl or (entry.crm_org if entry else ""),
            crm=query.crmType or (entry.crm_type if entry else ""),
        )
        pages = await pages_in(scope)
    (highlights, more_h), (related, more_r), (acts, more_a) = pages
    record_url = entry.url if entry else None

    key_info = [
        KeySalesInfo(
            title=item.title,
            description=_cut(item.description),
            dateTime=item.dateTime,
            url=item.url or record_url,
        )
        for item in _items(ctx, sales_highlights.POINT, highlights, sales_highlights.SalesHighlight)
    ]
    records = [
        RelatedRecordDigest(
            title=_cut(item.recordTitle),
            type=item.recordTypeDisplayName,
            properties=[
                Property(name=k, value=_cut(v)) for k, v in list((item.additionalProperties or {}).items())[:2]
            ],
            url=item.url or record_url,
        )
        for item in _items(ctx, related_records.POINT, related, related_records.RelatedRecord)
    ]
    latest = [
        ActivityDigest(
            title=item.title, description=_cut(item.description), dateTime=item.dateTime, url=item.url or record_url
        )
        for item in _items(ctx, activities.POINT, acts, activities.Activity)
    ]
    language = ctx.content_languages[0] if ctx.content_languages else (query.language or "en")
    ctx.log.info("digest of %d key sales info, %d related, %d activities", len(key_info), len(records), len(latest))
    return RecordDigest(
        recordType=query.recordType,
        recordId=query.recordId,
        name=entry.name if entry else None,
        url=record_url,
        language=language,
        keySalesInfo=key_info,
        relatedRecords=records,
        activities=latest,
        more=Omitted(keySalesInfo=more_h, relatedRecords=more_r, activities=more_a),
    )


# Registered here rather than decorated, so that the names above stay the operations themselves
# (their `operation` and `handler`): the MCP endpoint (chat/_mcp.py) offers them as its tools.
bp.function_name("chat_find_records")(bp.route(route="chat/records", methods=["GET"])(find_records))
bp.function_name("chat_record_insights")(bp.route(route="chat/record-insights", methods=["GET"])(record_insights))


def _items[M: BaseModel](ctx: RequestContext, point: Any, docs: list[Any], model: type[M]) -> list[M]:
    """The documents as the point's items, in the caller's language (unreadable ones skipped)."""
    return [item for doc in docs if isinstance(item := to_item(ctx, point, doc), model)]


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1].rstrip() + "…"
