"""Opportunity insights: key sales info shown in the Outlook sidecar (contract §2)."""

from __future__ import annotations

from typing import Annotated

import azure.functions as func
from pydantic import StringConstraints

from shared.contract import (
    DEFAULT_TOP,
    ContractModel,
    CrmTypeIn,
    ExtensionPoint,
    HttpsUrl,
    OrgUrlIn,
    Page,
    RecordIdIn,
    RecordTypeIn,
    RequestModel,
    Skip,
    StringMap,
    Top,
    UtcDateTime,
    wire,
)
from shared.http import RequestContext, operation, record_page

bp = func.Blueprint()


class SalesHighlightsQuery(RequestModel):
    recordType: RecordTypeIn = wire(
        "This input identifies the record type in CRM for which key sales info is requested.", "Record type"
    )
    recordId: RecordIdIn = wire(
        "This input provides the unique identifier of the CRM record for which key sales info is requested.",
        "Record ID",
    )
    crmType: CrmTypeIn = wire(
        "This input indicates the type of CRM in which the CRM record exists, for which key sales info is requested.",
        "CRM type",
        default="",
    )
    crmOrgUrl: OrgUrlIn = wire(
        "This input indicates the URL of the CRM environment in which the CRM record exists, for which key sales info is requested.",
        "CRM org URL",
        default="",
    )
    top: Top = wire("This input indicates the number of sales highlights to fetch.", "Top", default=DEFAULT_TOP)
    skip: Skip = wire(
        "This input indicates the number of items to skip when fetching sales highlights.", "Skip", default=0
    )


class SalesHighlight(ContractModel):
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)] = wire(
        "This output indicates the title of citation card for the insight.", "Title"
    )
    description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=130)] = wire(
        "This output indicates the text of the insight to be included in key sales info.", "Description"
    )
    url: HttpsUrl | None = wire("This output indicates the URL to learn more about the insight.", "URL", default=None)
    dateTime: UtcDateTime | None = wire(
        "This output indicates the time associated with the insight.", "Date and time", default=None
    )
    additionalProperties: StringMap | None = wire(
        "This output indicates additional properties as name-value pairs of each related insight returned by the action.",
        "Additional properties",
        default=None,
    )


POINT = ExtensionPoint(
    name="opportunityInsights",
    item_model=SalesHighlight,
    localizable=frozenset({"title", "description", "additionalProperties"}),
    datetime_field="dateTime",
)


@bp.function_name("sales_highlights")
@bp.route(route="enhanceskills/sales-highlights", methods=["GET"])
@operation(
    operation_id="scp-get-sales-highlights",
    summary="Get key sales info for a CRM record",
    description="This action gets additional sales insights that will be shown in C4S key sales info card in outlook sidecar. The action enhances the existing skills of copilot for sales.",
    query=SalesHighlightsQuery,
    item=SalesHighlight,
)
async def sales_highlights(ctx: RequestContext, query: SalesHighlightsQuery) -> Page[SalesHighlight]:
    return await record_page(ctx, POINT, query)
