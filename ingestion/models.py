"""The ingestion API's request and answer bodies (ingestion/api.py holds the triggers).

Imported on the first ingestion call, not when the worker indexes the app: writes are rare beside
Copilot for Sales' reads, so an instance's start-up does not pay for these models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from shared.contract import RequestModel, all_points, get_point
from shared.contract.normalize import GUID_PATTERN

__all__ = ["DeleteRequest", "DeleteResponse", "ItemResult", "UpsertRequest", "UpsertResponse", "UpsertSummary"]


class UpsertRequest(RequestModel):
    documents: list[Any] = Field(description="Insight documents, in the loader's format.")


class ItemResult(BaseModel):
    index: int = Field(description="Position of the document in the request.")
    id: str | None = Field(default=None, description="The document's id, when it has one.")
    status: Literal["written", "stale", "invalid", "failed"] = Field(
        description="written: stored (or already stored at this version); stale: an equal or newer version is "
        "stored, nothing changed; invalid: see error, fix it; failed: storage did not take it, send it again."
    )
    version: int | None = Field(default=None, description="The document's version now stored.")
    transaction: int | None = Field(
        default=None, description="Which transaction of this request held it: items fail together only within one."
    )
    error: str | None = Field(default=None, description="Why it was not written: the field and the problem.")


class UpsertSummary(BaseModel):
    received: int
    written: int
    stale: int
    invalid: int
    failed: int
    partitions: int
    transactions: int


class UpsertResponse(BaseModel):
    summary: UpsertSummary
    results: list[ItemResult]


class DeleteRequest(RequestModel):
    tenantId: str = Field(pattern=rf"^{GUID_PATTERN}$")
    scope: Literal["document", "record", "contact", "tenant"]
    extensionPoint: str | None = None
    recordType: str | None = None
    recordId: str | None = None
    contactEmail: str | None = None
    id: str | None = None
    version: int | None = Field(
        default=None,
        ge=1,
        le=2**63 - 1,
        strict=True,
        description="The version this delete is, at any scope: a document stored at an equal or newer version "
        "stays (stale), and a later write at or below it is stale. Without one, each document's tombstone is at its "
        "own stored version.",
    )
    continuation: str | None = Field(
        default=None,
        max_length=4096,
        description="A contact's or tenant's delete runs in steps: send the same request again with the "
        "continuation the last answer gave, until it answers complete.",
    )

    @model_validator(mode="after")
    def _fields_for_scope(self) -> DeleteRequest:
        needed = {
            "document": ["extensionPoint", "id"],
            "record": ["recordType", "recordId"],
            "contact": ["contactEmail"],
            "tenant": [],
        }[self.scope]
        for name in needed:
            if not getattr(self, name):
                raise ValueError(f"{name}: is required to delete a {self.scope}")
        if self.scope == "document" and not (self.contactEmail or (self.recordType and self.recordId)):
            raise ValueError("recordId: a document is named by recordType and recordId, or contactEmail")
        if self.continuation is not None and self.scope not in ("contact", "tenant"):
            raise ValueError("continuation: only a contact's or a tenant's delete runs in steps")
        if self.extensionPoint and get_point(self.extensionPoint) is None:
            raise ValueError(f"extensionPoint: must be one of {', '.join(sorted(all_points()))}")
        return self


class DeleteResponse(BaseModel):
    deleted: int = Field(description="How many documents were deleted.")
    stale: int = Field(default=0, description="Documents not deleted: an equal or newer version is stored.")
    failed: int = Field(default=0, description="Documents storage did not delete (a 503 carries this report).")
    complete: bool = Field(
        default=True,
        description="Whether the delete is over. A contact's or tenant's delete is complete once a final pass, "
        "begun after every write that could still name it has settled, found nothing left.",
    )
    continuation: str | None = Field(
        default=None, description="Not complete: send the same request again with this, after retryAfterSeconds."
    )
    retryAfterSeconds: float | None = Field(
        default=None, description="Not complete: how long to wait before sending the continuation."
    )
