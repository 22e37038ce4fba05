"""Email draft file links: files and web pages to suggest while drafting an email (contract §5).

Documents attached to the request's CRM record or to the thread's participants; those whose
`prompts` match the seller's `inputPrompt` come first, then record-attached before
contact-attached, newest first.
"""

from __future__ import annotations

import re
from typing import Literal

import azure.functions as func

from shared.contract import (
    ContractModel,
    EmailThreadRequest,
    ExtensionPoint,
    HttpsUrl,
    NonEmptyStr,
    Page,
    RecordIdIn,
    RecordTypeIn,
    RelatedEntities,
    StringMap,
    participants,
    wire,
)
from shared.http import RequestContext, gather, operation, page_of
from shared.storage import RecordRef, Scope

bp = func.Blueprint()

ContentType = Literal["content-file", "content-web", "content-doc", "content-pdf", "content-pptx", "content-xlsx"]
RANKED_CANDIDATES = 200
_WORDS = re.compile(r"[^\w]+")


class ContentSuggestionsRequest(EmailThreadRequest):
    resourceType: Literal["email-thread", "teams-chat"] = wire(
        "This input identifies the type of resource shared for fetching suggested file links which in this case is 'email-thread'.",
        "Resource type",
    )
    recordType: RecordTypeIn | None = wire(
        "This input identifies the record type in CRM, which is related to the email thread.",
        "Record type",
        default=None,
    )
    recordId: RecordIdIn | None = wire(
        "This input provides the unique identifier of the CRM record that is related to the email thread.",
        "Record ID",
        default=None,
    )
    inputPrompt: str | None = wire(
        "This input indicates the prompt provided by the user while drafting an email.", "Prompt", default=None
    )
    relatedEntities: RelatedEntities = wire(
        "This input identifies the array of CRM records, which is related to the email thread.",
        "Related CRM records",
        default_factory=list,
        json_schema_extra={"x-ms-visibility": "internal"},
    )


class ContentSuggestion(ContractModel):
    contentType: ContentType = wire(
        "This output indicates the type of content included with the email draft.", "Content type"
    )
    content: HttpsUrl = wire(
        "This output indicates the actual content that is included with the email draft. It can either be a web page or a URL.",
        "Content",
    )
    contentTitle: NonEmptyStr = wire("This output indicates the title of the content.", "Content title")
    contentDescription: NonEmptyStr = wire(
        "This output indicates the text to be included when describing the files.", "Content description"
    )
    contentIconUrl: HttpsUrl | None = wire(
        "This output indicates the icon to be included for the content.", "Content icon URL", default=None
    )
    additionalProperties: StringMap | None = wire(
        "This output indicates additional properties as name-value pairs of each related link returned by the action.",
        "Additional properties",
        default=None,
    )


POINT = ExtensionPoint(
    name="emailDraftFiles",
    item_model=ContentSuggestion,
    localizable=frozenset({"contentTitle", "contentDescription", "additionalProperties"}),
    attach_to=frozenset({"record", "contact"}),
)


def _words(text: str) -> str:
    return " ".join(_WORDS.sub(" ", text.casefold()).split())


def matches(prompt: str, input_prompt: str) -> bool:
    """A document's prompt matches when its words appear, in order, in what the seller typed
    ("Make a proposal for Fabrikam" matches "Make a Proposal")."""
    wanted, typed = _words(prompt), _words(input_prompt)
    return bool(wanted) and f" {wanted} " in f" {typed} "


@bp.function_name("content_suggestions")
@bp.route(route="enhanceskills/content-suggestions", methods=["POST"])
@operation(
    operation_id="scp-get-content-suggestions",
    summary="Get files to suggest in an email draft",
    description="This action gets files relevant to the email conversation, which will be shown in C4S email drafts in Outlook. The action enhances the existing skills of copilot for sales.",
    body=ContentSuggestionsRequest,
    item=ContentSuggestion,
)
async def content_suggestions(ctx: RequestContext, request: ContentSuggestionsRequest) -> Page[ContentSuggestion]:
    # Message and conversation ids arrive in the body or, from older clients, in the
    # x-ms-message-id / x-ms-conversation-id headers; either form is accepted, and neither is
    # needed to answer: suggestions follow the record and the participants.
    records: list[RecordRef] = []
    if request.recordType and request.recordId:
        records.append(RecordRef.record(request.recordType, request.recordId))
    records += [RecordRef.record(e.entityType, e.entityId) for e in request.relatedEntities]
    records = list(dict.fromkeys(records))
    prompt = request.inputPrompt or ""
    # Prompt matches may sit anywhere in a partition, so rank a bounded set of candidates.
    wanted = (
        max(request.skip + request.top + 1, RANKED_CANDIDATES) if prompt.strip() else request.skip + request.top + 1
    )
    ranked = await gather(
        ctx,
        POINT,
        records,
        participants(request.resourceData),
        Scope(org=request.crmOrgUrl, crm=request.crmType),
        wanted,
    )
    if prompt.strip():
        # stable sort: within matched and unmatched, the record/contact and date order stays
        ranked.sort(key=lambda c: not any(matches(p, prompt) for p in c.doc.prompts))
    return page_of(ctx, POINT, [c.doc for c in ranked], request.skip, request.top)
