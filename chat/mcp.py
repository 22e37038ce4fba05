"""The Sales chat tools over the Model Context Protocol: the same two tools, for MCP hosts.

`POST /api/mcp` speaks MCP's streamable HTTP transport, stateless and in JSON (each request is
answered whole by whichever instance gets it; no session is held in memory). It goes through the
same pipeline as every operation: the same Entra ID token and client apps, tenant, throttle,
5-second budget and request-id logs; a 401 names the protected-resource metadata (RFC 9728) that
`GET /api/.well-known/oauth-protected-resource/mcp` serves, as MCP's authorization spec asks.
The protocol itself is the official SDK's (`mcp`), imported with the route's first call
(`chat/_mcp.py`), so an instance's start-up does not pay for it.

Why a plain HTTP trigger and not the Functions MCP extension (`mcpToolTrigger`): the extension
runs in the host from its extension bundle, which the dev host cannot load, and it holds the
protocol in the host, outside the pipeline (our token rules, tenant and budget) that every other
operation goes through.
"""

from __future__ import annotations

from typing import Any

import azure.functions as func
from pydantic import BaseModel, Field

from shared.contract import BUILT_ON_FIRST_USE
from shared.http import RequestContext, operation

bp = func.Blueprint()

METADATA_ROUTE = ".well-known/oauth-protected-resource/mcp"
"""Where the endpoint's RFC 9728 metadata is, beside `mcp` under the route prefix."""

__all__ = ["METADATA_ROUTE", "ProtectedResource", "bp", "tool_definitions"]


@bp.function_name("chat_mcp")
@bp.route(route="mcp", methods=["POST", "GET", "DELETE"])
@operation(
    operation_id="mcp",
    summary="The Sales chat tools over MCP",
    description="The Model Context Protocol endpoint (streamable HTTP, stateless, JSON answers) of the Sales chat tools.",
    in_connector=False,
    raw=True,
    resource_metadata=METADATA_ROUTE,
)
async def mcp_endpoint(ctx: RequestContext, req: func.HttpRequest) -> func.HttpResponse:
    from chat._mcp import serve  # the MCP SDK: with the endpoint's first call (see the module's note)

    return await serve(ctx, req)


def tool_definitions() -> list[Any]:
    """The tools as `tools/list` offers them (`mcp.types.Tool`s), from the chat operations."""
    from chat._mcp import tool_definitions as definitions  # the MCP SDK, on first use

    return definitions()


class ProtectedResource(BaseModel):
    """OAuth 2.0 Protected Resource Metadata (RFC 9728) of the MCP endpoint."""

    model_config = BUILT_ON_FIRST_USE

    resource: str = Field(description="The MCP endpoint's URL: the resource a token is asked for.")
    authorization_servers: list[str] = Field(description="Where tokens come from: Microsoft Entra ID.")
    scopes_supported: list[str] = Field(description="The scope a client asks for.")
    bearer_methods_supported: list[str] = ["header"]
    resource_name: str = "Sales chat tools"


@bp.function_name("chat_mcp_metadata")
@bp.route(route=METADATA_ROUTE, methods=["GET"])
@operation(
    operation_id="mcpProtectedResource",
    summary="The MCP endpoint's protected-resource metadata",
    description="RFC 9728 metadata of the MCP endpoint: its authorization server and scope.",
    in_connector=False,
    role="public",
    response=ProtectedResource,
)
async def mcp_metadata(ctx: RequestContext, req: None) -> ProtectedResource:
    settings = ctx.settings
    tenants = settings.auth_allowed_tenants
    tenant = tenants[0] if len(tenants) == 1 and tenants[0] != "*" else "organizations"
    audiences = [a for a in settings.auth_audiences if a.startswith("api://")] or settings.auth_audiences
    scopes = [f"{audiences[0]}/{scope}" for scope in settings.auth_required_scopes] if audiences else []
    return ProtectedResource(
        resource=ctx.url.split("?", 1)[0].removesuffix(METADATA_ROUTE) + "mcp",
        authorization_servers=[f"{settings.auth_authority.rstrip('/')}/{tenant}/v2.0"],
        scopes_supported=scopes,
    )
