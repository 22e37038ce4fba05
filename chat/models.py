"""The Sales chat tools' inputs and answers (chat/tools.py holds the triggers).

Imported on the first chat tool call, not when the worker indexes the app: a chat tool call is
rare beside Copilot for Sales' reads, so an instance's start-up does not pay for these models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import BaseModel, BeforeValidator, Field, StringConstraints

from shared.contract import (
    CrmTypeIn,
    OrgUrlIn,
    RecordIdIn,
    RecordTypeIn,
    RequestModel,
    is_language_tag,
    top_capped_at,
)

__all__ = [
    "DIGEST_ITEMS",
    "ActivityDigest",
    "FindRecordsQuery",
    "KeySalesInfo",
    "Omitted",
    "Property",
    "RecordDigest",
    "RecordInsightsQuery",
    "RecordMatch",
    "RecordMatches",
    "RelatedRecordDigest",
]

DIGEST_ITEMS = 5
MAX_RECORDS = 25
DEFAULT_RECORDS = 5


def _language(value: Any) -> str:
    text = str(value).strip()
    if not is_language_tag(text):
        raise ValueError("must be a language tag such as 'en' or 'fr-CA'")
    return text.lower()


class FindRecordsQuery(RequestModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] = Field(
        description="Words of the record's name as the seller said them, e.g. 'Fabrikam renewal'. "
        "Case and accents do not matter; each word may be the start of a word of the name."
    )
    recordType: RecordTypeIn | None = Field(
        default=None, description="Only records of this CRM type, e.g. 'opportunity' or 'account'."
    )
    top: Annotated[int, Ge(1), Le(MAX_RECORDS), BeforeValidator(top_capped_at(MAX_RECORDS))] = Field(
        default=DEFAULT_RECORDS, description=f"How many records to return at most (1 to {MAX_RECORDS})."
    )


class RecordMatch(BaseModel):
    recordType: str = Field(description="The record's CRM type, e.g. opportunity.")
    recordId: str = Field(description="The record's CRM id: pass it to getRecordInsights.")
    name: str = Field(description="The record's name.")
    url: str | None = Field(default=None, description="Where the seller opens the record.")
    crmType: str | None = Field(default=None, description="The CRM the record's insights come from, when one.")
    crmOrgUrl: str | None = Field(
        default=None,
        description="The CRM org the record's insights are scoped to, when one: pass it to getRecordInsights.",
    )


class RecordMatches(BaseModel):
    records: list[RecordMatch] = Field(description="Records whose name matches, best first.")


class RecordInsightsQuery(RequestModel):
    recordType: RecordTypeIn = Field(description="The record's CRM type, as findRecords returned it.")
    recordId: RecordIdIn = Field(description="The record's CRM id, as findRecords returned it.")
    crmType: CrmTypeIn = Field(default="", description="The record's CRM type name, as findRecords returned it.")
    crmOrgUrl: OrgUrlIn = Field(default="", description="The record's CRM org, as findRecords returned it.")
    language: Annotated[str, BeforeValidator(_language)] | None = Field(
        default=None, description="The language of the answer (e.g. 'fr'); by default the seller's."
    )


class Property(BaseModel):
    name: str
    value: str


class KeySalesInfo(BaseModel):
    title: str
    description: str
    dateTime: datetime | None = None
    url: str | None = Field(default=None, description="Citation: where the insight comes from.")


class RelatedRecordDigest(BaseModel):
    title: str
    type: str = Field(description="The related record's type, as sellers call it (e.g. Quote).")
    properties: list[Property] = Field(description="Its first two properties.")
    url: str | None = Field(default=None, description="Citation: where the seller opens it.")


class ActivityDigest(BaseModel):
    title: str
    description: str
    dateTime: datetime
    url: str | None = Field(default=None, description="Citation: where the activity is recorded.")


class Omitted(BaseModel):
    """Whether the record has more of each kind than the digest shows."""

    keySalesInfo: bool = False
    relatedRecords: bool = False
    activities: bool = False


class RecordDigest(BaseModel):
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
