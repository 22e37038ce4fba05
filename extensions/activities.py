"""CRM record summary: a record's latest activities for the record summary card (contract §3)."""

from __future__ import annotations

import azure.functions as func
from pydantic import model_validator

from shared.contract import (
    DEFAULT_TOP,
    ContractModel,
    CrmTypeIn,
    DateTimeIn,
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
    UtcDateTime,
    wire,
)
from shared.http import RequestContext, operation, record_page
from shared.storage import WindowBounds

bp = func.Blueprint()


class ActivitiesQuery(RequestModel):
    recordType: RecordTypeIn = wire(
        "This input indicates the entity or object type in CRM for which insights are requested.", "Record type"
    )
    recordId: RecordIdIn = wire(
        "This input indicates the unique identifier of the CRM record for which insights are requested.", "Record ID"
    )
    startDateTime: DateTimeIn | None = wire(
        "This input indicates the start date and time for insights requested.", "Start date and time", default=None
    )
    endDateTime: DateTimeIn | None = wire(
        "This input indicates the end date and time for insights requested.", "End date and time", default=None
    )
    top: Top = wire("This input indicates the number of insights to fetch.", "Top", default=DEFAULT_TOP)
    skip: Skip = wire("This input indicates the number of insights to skip.", "Skip", default=0)
    crmType: CrmTypeIn = wire(
        "This input indicates the type of CRM in which the CRM record exists, for which insights are requested.",
        "CRM type",
        default="",
    )
    crmOrgUrl: OrgUrlIn = wire(
        "This input indicates the URL of the CRM environment in which the CRM record exists, for which insights are requested.",
        "CRM org URL",
        default="",
    )

    @model_validator(mode="after")
    def _window(self) -> ActivitiesQuery:
        if self.startDateTime and self.endDateTime and self.endDateTime < self.startDateTime:
            raise ValueError("endDateTime: must not be before startDateTime")
        return self


class Activity(ContractModel):
    title: NonEmptyStr = wire("This output indicates the title of the activity in the citation card.", "Title")
    description: NonEmptyStr = wire("This output indicates the description of the insight.", "Description")
    dateTime: UtcDateTime = wire("This output indicates the time associated with the insight.", "Date and time")
    url: HttpsUrl | None = wire("This output indicates the URL to open insight.", "URL", default=None)
    additionalProperties: StringMap | None = wire(
        "This output indicates additional properties displayed in the detailed view of the insight.",
        "Additional properties",
        default=None,
    )


POINT = ExtensionPoint(
    name="recordSummary",
    item_model=Activity,
    localizable=frozenset({"title", "description", "additionalProperties"}),
    datetime_field="dateTime",
    datetime_required=True,
)


@bp.function_name("activities")
@bp.route(route="enhanceskills/activities", methods=["GET"])
@operation(
    operation_id="scp-get-related-activities",
    summary="Get activities of a CRM record for the record summary",
    description="This action gets additional sales insights related to a CRM record that will be shown in the C4S record summary card. The action enhances the existing skills of copilot for sales.",
    query=ActivitiesQuery,
    item=Activity,
)
async def activities(ctx: RequestContext, query: ActivitiesQuery) -> Page[Activity]:
    # The window is a RowKey range: activities outside it are never read from storage.
    return await record_page(ctx, POINT, query, WindowBounds(query.startDateTime, query.endDateTime))
