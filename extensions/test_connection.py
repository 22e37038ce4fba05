"""Test connection: proves the token and the insights store work, quickly (internal operation)."""

from __future__ import annotations

import time

import azure.functions as func
from pydantic import BaseModel, Field

from shared.contract import BUILT_ON_FIRST_USE
from shared.http import RequestContext, operation

bp = func.Blueprint()
STORE_TIMEOUT_SECONDS = 1.0


class ConnectionStatus(BaseModel):
    model_config = BUILT_ON_FIRST_USE

    status: str = Field(description="ok when the token was accepted and the insights store answered.")
    tenantId: str = Field(description="The tenant the token was issued for.")
    storeLatencyMs: float = Field(description="How long the insights store took to answer, in milliseconds.")


@bp.function_name("test_connection")
@bp.route(route="diagnostics/testconnection", methods=["GET"])
@operation(
    operation_id="TestConnection",
    summary="Test the connection",
    description="Checks that the access token is accepted and that the insights store answers.",
    visibility="internal",
    response=ConnectionStatus,
)
async def test_connection(ctx: RequestContext, _: None) -> ConnectionStatus:
    started = time.perf_counter()
    await ctx.store.ping(timeout=STORE_TIMEOUT_SECONDS)
    return ConnectionStatus(
        status="ok", tenantId=ctx.tenant, storeLatencyMs=round((time.perf_counter() - started) * 1000, 1)
    )
