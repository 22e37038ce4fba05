"""The Sales chat tools: find a record by its name, then answer with a compact digest of its insights.

Copilot's orchestrator calls these through an API plugin of our declarative agent (`manage.py
agent-package`), never through the connector: a seller asks "what's new with Fabrikam's
renewal?", the orchestrator finds the record by name, then asks for its insights and cites them.
Both go through the same pipeline as the extension points (Entra token with the same scopes,
request id, deadline, `ApiError`s); the caller's tenant is the token's.

A digest stays small enough for a chat answer: at most `DIGEST_ITEMS` items of each kind (key
sales info, related records, activities), texts cut at `TEXT_CHARS`, a related record's first two
properties only; `more` says how many of each kind were left out.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

import azure.functions as func
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from shared.params import CrmTypeIn, OrgUrlIn, RecordIdIn, RecordTypeIn, RequestModel
from shared.pipeline import RequestContext, operation

bp = func.Blueprint()


class Deferred(BaseModel):
    """Built on first use, not at import: a chat tool call is rare beside Copilot's reads, so the
    instance's start-up does not pay for these models (the first chat tool call does, once)."""

    model_config = ConfigDict(defer_build=True)


class DeferredRequest(RequestModel):
    model_config = ConfigDict(defer_build=True)


DIGEST_ITEMS = 5
TEXT_CHARS = 300
MAX_RECORDS = 25
DEFAULT_RECORDS = 5

__all__ = ["DIGEST_ITEMS", "RecordDigest", "RecordMatches", "bp"]


def _records_top(value: Any) -> int:
    from shared.params import _top

    return min(_top(value), MAX_RECORDS)


def _language(value: Any) -> str:
    from shared.language import is_language_tag

    text = str(value).strip()
    if not is_language_tag(text):
        raise ValueError("must be a language tag such as 'en' or 'fr-CA'")
    return text.lower()


class FindRecordsQuery(DeferredRequest):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] = Field(
        description="Words of the record's name as the seller said them, e.g. 'Fabrikam renewal'. "
        "Case and accents do not matter; each word may be the start of a word of the name."
    )
    recordType: RecordTypeIn | None = Field(
        default=None, description="Only records of this CRM type, e.g. 'opportunity' or 'account'."
    )
    top: Annotated[int, BeforeValidator(_records_top)] = Field(
        default=DEFAULT_RECORDS, description=f"How many records to return at most (1 to {MAX_RECORDS})."
    )


class RecordMatch(Deferred):
    recordType: str = Field(description="The record's CRM type, e.g. opportunity.")
    recordId: str = Field(description="The record's CRM id: pass it to getRecordInsights.")
    name: str = Field(description="The record's name.")
    url: str | None = Field(default=None, description="Where the seller opens the record.")
    crmType: str | None = Field(default=None, description="The CRM the record's insights come from, when one.")
    crmOrgUrl: str | None = Field(
        default=None,
        description="The CRM org the record's insights are scoped to, when one: pass it to getRecordInsights.",
    )


class RecordMatches(Deferred):
    records: list[RecordMatch] = Field(description="Records whose name matches, best first.")


class RecordInsightsQuery(DeferredRequest):
    recordType: RecordTypeIn = Field(description="The record's CRM type, as findRecords returned it.")
    recordId: RecordIdIn = Field(description="The record's CRM id, as findRecords returned it.")
    crmType: CrmTypeIn = Field(default="", description="The record's CRM type name, as findRecords returned it.")
    crmOrgUrl: OrgUrlIn = Field(default="", description="The record's CRM org, as findRecords returned it.")
    language: Annotated[str, BeforeValidator(_language)] | None = Field(
        default=None, description="The language of the answer (e.g. 'fr'); by default the seller's."
    )


class Property(Deferred):
    name: str
    value: str


class KeySalesInfo(Deferred):
    title: str
    description: str
    dateTime: datetime | None = None
    url: str | None = Field(default=None, description="Citation: where the insight comes from.")


class RelatedRecordDigest(Deferred):
    title: str
    type: str = Field(description="The related record's type, as sellers call it (e.g. Quote).")
    properties: list[Property] = Field(description="Its first two properties.")
    url: str | None = Field(default=None, description="Citation: where the seller opens it.")


class ActivityDigest(Deferred):
    title: str
    description: str
    dateTime: datetime
    url: str | None = Field(default=None, description="Citation: where the activity is recorded.")


class Omitted(Deferred):
    """Whether the record has more of each kind than the digest shows."""

    keySalesInfo: bool = False
    relatedRecords: bool = False
    activities: bool = False


class RecordDigest(Deferred):
    recordType: str
    recordId: str
    name: str | None = Field(default=None, description="The record's name, when known.")
    url: str | None = Field(default=None, description="Where the seller opens the record.")
    language: str = Field(description="The language the texts are in.")
    keySalesInfo: list[KeySalesInfo] = Field(description=f"The newest key sales info, at most {DIGEST_ITEMS}.")
    relatedRecords: list[RelatedRecordDigest] = Field(description=f"Related records, at most {DIGEST_ITEMS}.")
    activities: list[ActivityDigest] = Field(
        description=f"The latest activities, newest first, at most {DIGEST_ITEMS}."
    )
    more: Omitted = Field(description="Which kinds have more than the digest shows (the seller can open the record).")


@bp.function_name("chat_find_records")
@bp.route(route="chat/records", methods=["GET"])
@operation(
    operation_id="findRecords",
    summary="Find CRM records by name",
    description="Finds the seller's CRM records (accounts, opportunities, ...) that have insights, by words of their name.",
    query=FindRecordsQuery,
    response=RecordMatches,
    in_connector=False,
)
async def find_records(ctx: RequestContext, query: FindRecordsQuery) -> RecordMatches:
    from shared.errors import InvalidRequest
    from shared.names import find_records as search

    try:
        async with ctx.store.gate.slot():
            found = await search(ctx.store, ctx.tenant, query.name, query.recordType, query.top)
    except ValueError as exc:
        raise InvalidRequest("name", str(exc)) from None
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


@bp.function_name("chat_record_insights")
@bp.route(route="chat/record-insights", methods=["GET"])
@operation(
    operation_id="getRecordInsights",
    summary="Get a CRM record's insights",
    description="Answers a compact digest of a CRM record's insights: key sales info, related records and the latest activities, with citation links.",
    query=RecordInsightsQuery,
    response=RecordDigest,
    in_connector=False,
)
async def record_insights(ctx: RequestContext, query: RecordInsightsQuery) -> RecordDigest:
    from extensions import activities, related_records, sales_highlights
    from shared.names import record_entry
    from shared.store import RecordRef, Scope

    if query.language:
        ctx.languages = [query.language, *ctx.languages]
    ref = RecordRef.record(query.recordType, query.recordId)
    scope = Scope(org=query.crmOrgUrl, crm=query.crmType)
    points = (sales_highlights.POINT, related_records.POINT, activities.POINT)
    pages, entry = await asyncio.gather(
        asyncio.gather(
            *(ctx.store.read_page(ctx.tenant, p.name, ref, scope, skip=0, top=DIGEST_ITEMS) for p in points)
        ),
        record_entry(ctx.store, ctx.tenant, query.recordType, query.recordId),
    )
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


def _items[M: BaseModel](ctx: RequestContext, point: Any, docs: list[Any], model: type[M]) -> list[M]:
    """The documents as the point's items, in the caller's language (unreadable ones skipped)."""
    from shared.reading import to_item

    return [item for doc in docs if isinstance(item := to_item(ctx, point, doc), model)]


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1].rstrip() + "…"
