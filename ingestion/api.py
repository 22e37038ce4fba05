"""Ingestion triggers: upsert a batch of insight documents; delete documents, a record's, a
contact's or a whole tenant's.

Callers are partner backend services with app-only tokens from the partner's home tenant
(AUTH_WRITER_HOME_TENANTS) carrying a write role (AUTH_WRITER_ROLES), from an allowed client app
(AUTH_WRITER_CLIENT_APPS). One service may write for many customer tenants, as far as
AUTH_WRITER_TENANT_GRANTS allows. Documents are validated by the loader's own rules.
"""

from __future__ import annotations

from typing import Any, Literal

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.errors import InsufficientPermissions, RequestTooLarge, ServiceUnavailable
from shared.normalize import GUID_PATTERN
from shared.params import RequestModel
from shared.pipeline import RequestContext, operation
from shared.points import all_points, get_point

bp = func.Blueprint()


class Deferred(BaseModel):
    """Built on first use, not at import: a ingestion call is rare beside Copilot's reads, so the
    instance's start-up does not pay for these models (the first ingestion call does, once)."""

    model_config = ConfigDict(defer_build=True)


class DeferredRequest(RequestModel):
    model_config = ConfigDict(defer_build=True)


# Writes are batches from partner services, not Copilot calls: they get more time (host.json's
# functionTimeout is 30 s), and still an answer rather than a hang when storage stalls.
WRITE_BUDGET_SECONDS = 25.0
WRITE_CONCURRENCY = 16
"""Partitions a batch writes at once: its partitions are usually scattered, and each needs its
own lookup before its transaction."""


class UpsertRequest(DeferredRequest):
    documents: list[Any] = Field(description="Insight documents, in the loader's format.")


class ItemResult(Deferred):
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


class UpsertSummary(Deferred):
    received: int
    written: int
    stale: int
    invalid: int
    failed: int
    partitions: int
    transactions: int


class UpsertResponse(Deferred):
    summary: UpsertSummary
    results: list[ItemResult]


def _check_grants(ctx: RequestContext, tenants: set[str]) -> None:
    refused = sorted(t for t in tenants if not ctx.settings.writer_may_write(ctx.principal.client_app, t))
    if refused:
        raise InsufficientPermissions(
            "The caller may not write for every tenant the request names.",
            log_detail=f"client app {ctx.principal.client_app} has no grant for {', '.join(refused)}",
        )


def _unfinished(report: dict[str, Any], what: str) -> ServiceUnavailable:
    """Storage failed part-way: 503 with the report a 200 would carry, so the caller can see what
    landed; re-sending the request (or its failed items) completes it."""
    return ServiceUnavailable(
        f"The insights store failed part-way; {what}. Send the request again to complete it.",
        retry_after=5,
        log_detail=f"{what}; first error: {next((r['error'] for r in report.get('results', []) if r.get('error')), '-')}",
        details=report,
    )


@bp.function_name("ingest_documents")
@bp.route(route="ingest/documents", methods=["POST"])
@operation(
    operation_id="IngestDocuments",
    summary="Upsert insight documents",
    description="Validates and upserts a batch of insight documents; idempotent by document identity.",
    body=UpsertRequest,
    response=UpsertResponse,
    role="writer",
    in_connector=False,
    budget_seconds=WRITE_BUDGET_SECONDS,
)
async def ingest_documents(ctx: RequestContext, request: UpsertRequest) -> UpsertResponse:
    from shared.documents import validate_document  # the document model: only writers need it
    from shared.ingest import write_documents  # the write path: no reader's request needs it

    limit = ctx.settings.ingest_max_documents
    if len(request.documents) > limit:
        raise RequestTooLarge(f"A batch may hold at most {limit} documents; split it.")
    results: list[ItemResult] = []
    valid = []
    for index, data in enumerate(request.documents):
        raw_id = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None
        document, errors = validate_document(data)
        if document is None:
            results.append(ItemResult(index=index, id=raw_id, status="invalid", error="; ".join(map(str, errors))))
        else:
            valid.append((index, document))
            results.append(ItemResult(index=index, id=document.id, status="written"))
    _check_grants(ctx, {doc.tenantId for _, doc in valid})
    report = await write_documents(ctx.store, [doc for _, doc in valid], concurrency=WRITE_CONCURRENCY)
    for (index, doc), outcome in zip(valid, report.outcomes, strict=True):
        status = "written" if outcome.status in ("written", "kept") else outcome.status
        results[index] = ItemResult(
            index=index,
            id=doc.id,
            status=status,
            version=outcome.version,
            transaction=outcome.transaction,
            error=outcome.error,
        )
    counts = {s: sum(r.status == s for r in results) for s in ("written", "stale", "invalid", "failed")}
    ctx.log.info(
        "ingested %d of %d documents (%d stale, %d invalid, %d failed)",
        counts["written"],
        len(results),
        counts["stale"],
        counts["invalid"],
        counts["failed"],
    )
    response = UpsertResponse(
        summary=UpsertSummary(
            received=len(results), partitions=report.partitions, transactions=report.transactions, **counts
        ),
        results=results,
    )
    if counts["failed"]:
        raise _unfinished(
            response.model_dump(mode="json", exclude_none=True), f"{counts['failed']} document(s) not written"
        )
    return response


class DeleteRequest(DeferredRequest):
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
        description="For a document: the version this delete is; an equal or newer stored version makes it stale.",
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
        if self.version is not None and self.scope != "document":
            raise ValueError("version: only a document's delete carries a version")
        if self.extensionPoint and get_point(self.extensionPoint) is None:
            raise ValueError(f"extensionPoint: must be one of {', '.join(sorted(all_points()))}")
        return self


class DeleteResponse(Deferred):
    deleted: int = Field(description="How many documents were deleted.")
    stale: int = Field(default=0, description="Documents not deleted: an equal or newer version is stored.")
    failed: int = Field(default=0, description="Documents storage did not delete (a 503 carries this report).")


@bp.function_name("ingest_delete")
@bp.route(route="ingest/delete", methods=["POST"])
@operation(
    operation_id="DeleteDocuments",
    summary="Delete insight documents",
    description="Deletes a document, a record's or a contact's documents, or a whole tenant's.",
    body=DeleteRequest,
    response=DeleteResponse,
    role="writer",
    in_connector=False,
    budget_seconds=WRITE_BUDGET_SECONDS,
)
async def ingest_delete(ctx: RequestContext, request: DeleteRequest) -> DeleteResponse:
    tenant = request.tenantId.lower()
    _check_grants(ctx, {tenant})
    from azure.core.exceptions import AzureError

    from shared.ingest import delete_documents

    try:
        report = await delete_documents(
            ctx.store,
            tenant=tenant,
            scope=request.scope,
            extension_point=request.extensionPoint,
            record=(request.recordType, request.recordId) if request.recordType and request.recordId else None,
            contact=request.contactEmail,
            doc_id=request.id,
            version=request.version,
        )
    except AzureError as exc:  # the listing or a tenant's range delete: nothing to report per item
        raise ServiceUnavailable(log_detail=f"delete failed: {type(exc).__name__}") from exc
    response = DeleteResponse(
        deleted=report.count("written"), stale=report.count("stale"), failed=report.count("failed")
    )
    ctx.log.info(
        "deleted %d documents (scope %s, tenant %s; %d stale, %d failed)",
        response.deleted,
        request.scope,
        tenant,
        response.stale,
        response.failed,
    )
    if response.failed:
        raise _unfinished(response.model_dump(mode="json"), f"{response.failed} document(s) not deleted")
    return response
