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
from pydantic import BaseModel, Field, model_validator

from shared.errors import InsufficientPermissions, RequestTooLarge
from shared.ingest import delete_documents, write_documents
from shared.params import RequestModel
from shared.pipeline import RequestContext, operation
from shared.points import all_points, get_point
from shared.store import partition_keys

bp = func.Blueprint()
# Writes are batches from partner services, not Copilot calls: they get more time (host.json's
# functionTimeout is 30 s), and still an answer rather than a hang when storage stalls.
WRITE_BUDGET_SECONDS = 25.0
WRITE_WORKERS = 4
"""Windows of partitions written at once: a batch's partitions are usually scattered, and each
needs its own key lookup before its transaction."""


class UpsertRequest(RequestModel):
    documents: list[Any] = Field(description="Insight documents, in the loader's format.")


class ItemResult(BaseModel):
    index: int = Field(description="Position of the document in the request.")
    id: str | None = Field(default=None, description="The document's id, when it has one.")
    status: Literal["written", "invalid", "failed"] = Field(description="What happened to the document.")
    error: str | None = Field(default=None, description="Why it was not written: the field and the problem.")


class UpsertSummary(BaseModel):
    received: int
    written: int
    invalid: int
    failed: int
    partitions: int
    transactions: int


class UpsertResponse(BaseModel):
    summary: UpsertSummary
    results: list[ItemResult]


def _check_grants(ctx: RequestContext, tenants: set[str]) -> None:
    refused = sorted(t for t in tenants if not ctx.settings.writer_may_write(ctx.principal.client_app, t))
    if refused:
        raise InsufficientPermissions(
            "The caller may not write for every tenant the request names.",
            log_detail=f"client app {ctx.principal.client_app} has no grant for {', '.join(refused)}",
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
    summary = await write_documents(ctx.store, [doc for _, doc in valid], workers=WRITE_WORKERS)
    failures = {(chunk.partition, doc_id): chunk.error for chunk in summary.failed for doc_id in chunk.ids}
    if failures:
        for index, doc in valid:
            chunk_errors = [failures[(pk, doc.id)] for pk in partition_keys(doc) if (pk, doc.id) in failures]
            if chunk_errors:
                results[index] = ItemResult(index=index, id=doc.id, status="failed", error=str(chunk_errors[0]))
    ctx.log.info(
        "ingested %d of %d documents (%d invalid, %d failed)",
        sum(r.status == "written" for r in results),
        len(results),
        sum(r.status == "invalid" for r in results),
        sum(r.status == "failed" for r in results),
    )
    return UpsertResponse(
        summary=UpsertSummary(
            received=len(results),
            written=sum(r.status == "written" for r in results),
            invalid=sum(r.status == "invalid" for r in results),
            failed=sum(r.status == "failed" for r in results),
            partitions=summary.partitions,
            transactions=summary.transactions,
        ),
        results=results,
    )


class DeleteRequest(RequestModel):
    tenantId: str = Field(pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
    scope: Literal["document", "record", "contact", "tenant"]
    extensionPoint: str | None = None
    recordType: str | None = None
    recordId: str | None = None
    contactEmail: str | None = None
    id: str | None = None

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
        if self.extensionPoint and get_point(self.extensionPoint) is None:
            raise ValueError(f"extensionPoint: must be one of {', '.join(sorted(all_points()))}")
        return self


class DeleteResponse(BaseModel):
    deleted: int = Field(description="How many documents were deleted.")


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
    deleted = await delete_documents(
        ctx.store,
        tenant=tenant,
        scope=request.scope,
        extension_point=request.extensionPoint,
        record=(request.recordType, request.recordId) if request.recordType and request.recordId else None,
        contact=request.contactEmail,
        doc_id=request.id,
    )
    ctx.log.info("deleted %d documents (scope %s, tenant %s)", deleted, request.scope, tenant)
    return DeleteResponse(deleted=deleted)
