"""Ingestion triggers: upsert a batch of insight documents; delete documents, a record's, a
contact's or a whole tenant's.

Callers are partner backend services with app-only tokens from the partner's home tenant
(AUTH_WRITER_HOME_TENANTS) carrying a write role (AUTH_WRITER_ROLES), from an allowed client app
(AUTH_WRITER_CLIENT_APPS). One service may write for many customer tenants, as far as
AUTH_WRITER_TENANT_GRANTS allows. Documents are validated by the loader's own rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import azure.functions as func

from shared.contract.errors import InsufficientPermissions, InvalidRequest, RequestTooLarge, ServiceUnavailable
from shared.http import RequestContext, operation
from shared.storage.errors import StorageError

if TYPE_CHECKING:
    from ingestion.models import DeleteRequest, DeleteResponse, UpsertRequest, UpsertResponse

bp = func.Blueprint()


# Writes are batches from partner services, not Copilot calls: they get more time (host.json's
# functionTimeout is 30 s), and still an answer rather than a hang when storage stalls.
WRITE_BUDGET_SECONDS = 25.0
WRITE_CONCURRENCY = 16
"""Partitions a batch writes at once: its partitions are usually scattered, and each needs its
own lookup before its transaction."""


def _check_grants(ctx: RequestContext, tenants: set[str]) -> None:
    refused = sorted(t for t in tenants if not ctx.settings.writer_may_write(ctx.caller.client_app, t))
    if refused:
        raise InsufficientPermissions(
            "The caller may not write for every tenant the request names.",
            log_detail=f"client app {ctx.caller.client_app} has no grant for {', '.join(refused)}",
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
    body="ingestion.models:UpsertRequest",
    response="ingestion.models:UpsertResponse",
    role="writer",
    in_connector=False,
    budget_seconds=WRITE_BUDGET_SECONDS,
)
async def ingest_documents(ctx: RequestContext, request: UpsertRequest) -> UpsertResponse:
    from ingestion.models import ItemResult, UpsertResponse, UpsertSummary  # with the first write
    from shared.documents import validate_document  # the document model: only writers need it
    from shared.storage import write_documents  # the write path: no reader's request needs it

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


@bp.function_name("ingest_delete")
@bp.route(route="ingest/delete", methods=["POST"])
@operation(
    operation_id="DeleteDocuments",
    summary="Delete insight documents",
    description="Deletes a document, a record's or a contact's documents, or a whole tenant's.",
    body="ingestion.models:DeleteRequest",
    response="ingestion.models:DeleteResponse",
    role="writer",
    in_connector=False,
    budget_seconds=WRITE_BUDGET_SECONDS,
)
async def ingest_delete(ctx: RequestContext, request: DeleteRequest) -> DeleteResponse:
    tenant = request.tenantId.lower()
    _check_grants(ctx, {tenant})
    from ingestion.models import DeleteResponse  # with the first delete
    from shared.storage import BadContinuation, delete_documents  # the write path: no reader needs it

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
            continuation=request.continuation,
        )
    except BadContinuation as exc:
        raise InvalidRequest("continuation", str(exc)) from exc
    except StorageError as exc:  # the listing or a tenant's range delete: nothing to report per item
        raise ServiceUnavailable(log_detail=f"delete failed: {exc.detail}") from exc
    failed = report.count("failed")
    goes_on = not report.complete and not failed  # a failure: the same request again, from the start
    response = DeleteResponse(
        deleted=report.existed,
        stale=report.count("stale"),
        failed=failed,
        complete=report.complete and not failed,
        continuation=report.continuation if goes_on else None,
        retryAfterSeconds=round(report.retry_after, 3) if goes_on else None,
    )
    ctx.log.info(
        "deleted %d documents (scope %s, tenant %s; %d stale, %d failed; %s)",
        response.deleted,
        request.scope,
        tenant,
        response.stale,
        response.failed,
        "complete" if response.complete else "goes on",
    )
    if response.failed:
        raise _unfinished(
            response.model_dump(mode="json", exclude_none=True), f"{response.failed} document(s) not deleted"
        )
    return response
