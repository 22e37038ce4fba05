"""CRM record details: records related to a CRM record (contract §1)."""

from __future__ import annotations

import azure.functions as func

from shared.contract import (
    DEFAULT_TOP,
    ContractModel,
    CrmTypeIn,
    ExtensionPoint,
    HttpsUrl,
    NonEmptyStr,
    OrgUrlIn,
    Page,
    RecordIdIn,
    RecordTypeIn,
    RequestModel,
    Skip,
    StringMap,
    Top,
    wire,
)
from shared.http import RequestContext, operation, record_page

bp = func.Blueprint()


class RelatedRecordsQuery(RequestModel):
    recordType: RecordTypeIn = wire(
        "This input identifies the record type in CRM for which related records are requested.", "Record type"
    )
    recordId: RecordIdIn = wire(
        "This input provides the unique identifier of the CRM record for which related records are requested.",
        "Record ID",
    )
    top: Top = wire("This input indicates the number of related records to fetch.", "Top", default=DEFAULT_TOP)
    skip: Skip = wire(
        "This input indicates the number of records to skip when fetching related records.", "Skip", default=0
    )
    crmType: CrmTypeIn = wire(
        "This input indicates the type of CRM the related records are fetched from.", "CRM type", default=""
    )
    crmOrgUrl: OrgUrlIn = wire(
        "This input indicates the URL of the CRM environment the related records are fetched from.",
        "CRM org URL",
        default="",
    )


class RelatedRecord(ContractModel):
    recordId: NonEmptyStr = wire(
        "This output uniquely identifies each related record returned by the action.", "Record ID"
    )
    recordTypeDisplayName: NonEmptyStr = wire(
        "This output indicates the display name of record type of each related record returned by the action.",
        "Record type display name",
    )
    recordTypePluralDisplayName: NonEmptyStr = wire(
        "This output indicates the plural display name of the record type of each related record returned by the action.",
        "Record type plural display name",
    )
    recordType: NonEmptyStr = wire(
        "This output indicates the type of each related record returned by the action.", "Record type"
    )
    recordTitle: NonEmptyStr = wire(
        "This output indicates the title of each related record returned by the action.", "Record title"
    )
    url: HttpsUrl | None = wire(
        "This output indicates the URL of each related record returned by the action.", "URL", default=None
    )
    additionalProperties: StringMap | None = wire(
        "This output indicates additional properties as name-value pairs of each related record returned by the action.",
        "Additional properties",
        default=None,
    )


POINT = ExtensionPoint(
    name="recordDetails",
    item_model=RelatedRecord,
    localizable=frozenset(
        {"recordTypeDisplayName", "recordTypePluralDisplayName", "recordTitle", "additionalProperties"}
    ),
)


@bp.function_name("related_records")
@bp.route(route="enhanceskills/related-records", methods=["GET"])
@operation(
    operation_id="scp-get-related-records",
    summary="Get records related to a CRM record",
    description="This action gets records related to a CRM record. The action enhances the existing skills of Copilot for Sales.",
    query=RelatedRecordsQuery,
    item=RelatedRecord,
)
async def related_records(ctx: RequestContext, query: RelatedRecordsQuery) -> Page[RelatedRecord]:
    return await record_page(ctx, POINT, query)
