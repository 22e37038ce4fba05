"""Email summary (version 2): insights for the email summary in Outlook (contract §4).

Only the first item reaches the email body, so the order is the feature: insights attached to
the thread's CRM records first, then those attached to its participants, newest first in each.
"""

from __future__ import annotations

import azure.functions as func

from shared.contract import (
    ContractModel,
    EmailThreadRequest,
    ExtensionPoint,
    NonEmptyStr,
    Page,
    RelatedEntities,
    participants,
    wire,
)
from shared.http import RequestContext, gather, operation, page_of
from shared.storage import RecordRef, Scope

bp = func.Blueprint()


class EmailInsightsRequest(EmailThreadRequest):
    relatedEntities: RelatedEntities = wire(
        "This input identifies the array of CRM records, which is related to the email thread.",
        "Related CRM records",
        default_factory=list,
    )


class EmailInsight(ContractModel):
    insight: NonEmptyStr = wire(
        "This  output indicates the text you would like to be included in the email summary.", "Insight"
    )


POINT = ExtensionPoint(
    name="emailSummary",
    item_model=EmailInsight,
    localizable=frozenset({"insight"}),
    attach_to=frozenset({"record", "contact"}),
)


@bp.function_name("email_insights")
@bp.route(route="enhanceskills/email-insights-v2", methods=["POST"])
@operation(
    operation_id="scp-get-email-insights-v2",
    summary="Get insights for the email summary",
    description="This action gets additional sales insights that will be shown in C4S email summary experience inside outlook summary. The action enhances the existing skills of copilot for sales.",
    body=EmailInsightsRequest,
    item=EmailInsight,
)
async def email_insights(ctx: RequestContext, request: EmailInsightsRequest) -> Page[EmailInsight]:
    records = list(dict.fromkeys(RecordRef.record(e.entityType, e.entityId) for e in request.relatedEntities))
    wanted = request.skip + request.top + 1
    ranked = await gather(
        ctx,
        POINT,
        records,
        participants(request.resourceData),
        Scope(org=request.crmOrgUrl, crm=request.crmType),
        wanted,
    )
    return page_of(ctx, POINT, [c.doc for c in ranked], request.skip, request.top)
