"""The email model Copilot for Sales posts to the email summary and email draft operations.

Email content is customer data: it is parsed only to find the thread's participants, and is
never logged or stored. Addresses are compared case-insensitively.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StringConstraints

from shared.contract import normalize
from shared.contract._models import wire
from shared.contract._params import DEFAULT_TOP, CrmTypeIn, OrgUrlIn, RecordIdIn, RecordTypeIn, RequestModel, Skip, Top

__all__ = [
    "MAX_PARTICIPANTS",
    "MAX_RELATED_ENTITIES",
    "EmailModel",
    "EmailThreadRequest",
    "RelatedEntities",
    "RelatedEntity",
    "participants",
]

MAX_PARTICIPANTS = 50
MAX_RELATED_ENTITIES = 20


def _address_list(value: Any) -> Any:
    """`to`/`cc` are string arrays in the contract; a single string (`a@x; b@y`) is accepted too."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part for part in value.replace(",", ";").split(";") if part.strip()]
    return value


AddressList = Annotated[list[str], BeforeValidator(_address_list)]


class EmailModel(RequestModel):
    plaintextBody: str | None = wire(
        "This input provides all the content from the email thread in text format.", "Plain text body", default=None
    )
    fullHtmlBody: str | None = wire(
        "This input provides all the content from the email thread in HTML format.", "HTML body", default=None
    )
    subject: str | None = wire("This input provides the subject of the email.", "Subject", default=None)
    from_: str | None = wire("This input provides the sender's email address.", "From", default=None, alias="from")
    to: AddressList = wire("This input provides the receiver's email address.", "To", default_factory=list)
    cc: AddressList = wire(
        "This input provides all the receiver's email addresses that are included in the Cc field of the email.",
        "Cc",
        default_factory=list,
    )
    bcc: AddressList = wire(
        "This input provides all the receiver's email addresses that are added in the Bcc field of the email.",
        "Bcc",
        default_factory=list,
    )
    sentDateTime: str | None = wire(
        "This input provides the timestamp of the email.",
        "Sent date and time",
        default=None,
        json_schema_extra={"format": "date-time"},
    )
    messageId: str | None = wire("This input provides the message ID of the email.", "Message ID", default=None)
    conversationId: str | None = wire(
        "This input provides the conversation ID of the email thread.", "Conversation ID", default=None
    )


class RelatedEntity(RequestModel):
    entityId: RecordIdIn = wire(
        "This input provides the unique identifier of the CRM record that is related to the email thread.", "Entity ID"
    )
    entityType: RecordTypeIn = wire(
        "This input identifies the record type in CRM, which is related to the email thread.", "Entity type"
    )
    entitySource: Annotated[str, StringConstraints(max_length=100)] | None = wire(
        "This input indicates the entity source type.", "Entity source", default=None
    )


def participants(email: EmailModel) -> list[str]:
    """The addresses of the thread's sender and recipients (`from`, `to`, `cc`), each once, in
    their one spelling (at most MAX_PARTICIPANTS)."""
    seen: list[str] = []
    for raw in [email.from_ or "", *email.to, *email.cc]:
        address = normalize.email_address(raw)
        if "@" in address and len(address) <= normalize.MAX_KEY_VALUE_LENGTH and address not in seen:
            seen.append(address)
        if len(seen) >= MAX_PARTICIPANTS:
            break
    return seen


RelatedEntities = Annotated[list[RelatedEntity], Field(max_length=MAX_RELATED_ENTITIES)]


class EmailThreadRequest(RequestModel):
    """Inputs the email summary and email draft operations share, with the same contract strings
    (§4 and §5; the top/skip strings say "file links" for both, as published)."""

    resourceData: EmailModel = wire(
        "This input identifies the email content which is a collection of email thread, subject, and other details.",
        "Email",
    )
    crmType: CrmTypeIn = wire(
        "This input indicates the type of CRM in which the record related to the email thread exists.",
        "CRM type",
        default="",
    )
    crmOrgUrl: OrgUrlIn = wire(
        "This input indicates the URL of the CRM environment in which the record related to the email thread exists.",
        "CRM org URL",
        default="",
    )
    top: Top = wire("This input indicates the number of file links to fetch.", "Top", default=DEFAULT_TOP)
    skip: Skip = wire(
        "This input indicates the number of items to skip when fetching suggested file links.", "Skip", default=0
    )
