"""The MCP endpoint's protocol side, on the official SDK (`mcp`): imported on the endpoint's first
call (chat/mcp.py).

Each request runs the SDK's own stateless path: a `StreamableHTTPSessionManager(stateless=True,
json_response=True)` made for it, handed the request as ASGI and answering JSON, so that any
instance answers any request. The tools are the REST chat operations themselves: each tool's name,
description, input schema and output schema are its operation's (`operation_id`, `description`,
query model, response model: the same that `agent/openapi.json` is generated from), and a call
runs the operation's handler with the request's context (its tenant, languages, deadline and log).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel

from chat import tools as rest
from chat.models import RecordDigest, RecordMatches
from shared.contract.errors import ApiException
from shared.http import Operation, RequestContext, validate_inputs
from shared.http import unavailable as unavailable_error
from shared.runtime import logger
from shared.storage.errors import StorageError

__all__ = ["TOOLS", "serve", "tool_definitions"]

TOOLS = (rest.find_records, rest.record_insights)
"""The REST chat operations the MCP endpoint offers as tools, in `tools/list`'s order."""

_SECURITY = TransportSecuritySettings(enable_dns_rebinding_protection=False)
"""DNS rebinding protects servers a browser can reach without credentials (a local server); this
one answers only a bearer token, which a browser never sends on its own."""


def _operation(tool: Any) -> Operation[Any]:
    spec = tool.operation
    assert isinstance(spec, Operation)
    return spec


def _schema(model: type[BaseModel] | None) -> dict[str, Any]:
    assert model is not None
    return model.model_json_schema()


# The SDK logs each message it handles at INFO; the pipeline's summary line already says what
# each request did, so only the SDK's warnings and errors reach the Functions logs.
logging.getLogger("mcp").setLevel(logging.WARNING)


def tool_definitions() -> list[types.Tool]:
    """The tools as `tools/list` offers them, from the operations' own models and texts."""
    return list(_tool_definitions())


@functools.cache
def _tool_definitions() -> tuple[types.Tool, ...]:
    return tuple(
        types.Tool(
            name=spec.operation_id,
            title=spec.summary,
            description=spec.description,
            inputSchema=_schema(spec.query_model),
            outputSchema=_schema(spec.response_model),
            annotations=types.ToolAnnotations(readOnlyHint=True, openWorldHint=False, idempotentHint=True),
        )
        for spec in (_operation(tool) for tool in TOOLS)
    )


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=True)


def _server(ctx: RequestContext) -> Server[Any, Any]:
    server: Server[Any, Any] = Server("sales-insights", instructions=_INSTRUCTIONS)
    by_name = {_operation(tool).operation_id: tool for tool in TOOLS}

    @server.list_tools()  # type: ignore[untyped-decorator]
    async def list_tools() -> list[types.Tool]:
        return tool_definitions()

    @server.call_tool(validate_input=False)  # type: ignore[untyped-decorator]
    async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        tool = by_name.get(name)
        if tool is None:
            return _error(f"Unknown tool '{name}'; the tools are {', '.join(by_name)}.")
        spec = _operation(tool)
        try:
            assert spec.query_model is not None
            inputs = validate_inputs(spec.query_model, arguments)
            # a context of its own per call: a handler may prefer a language for its answer
            own = dataclasses.replace(ctx, languages=list(ctx.languages), content_languages=[])
            result = await getattr(tool, "handler")(own, inputs)  # noqa: B009  (set by `operation`)
        except ApiException as exc:  # a bad argument names it, as the REST answer's message does
            ctx.log.warning("tool %s: %s %s: %s", name, exc.status, exc.error_code, exc.log_detail or exc.message)
            return _error(exc.message)
        except StorageError as exc:
            refused = unavailable_error(exc)
            ctx.log.error("tool %s: %s %s: %s", name, refused.status, refused.error_code, refused.log_detail)
            return _error(refused.message)
        structured = result.model_dump(mode="json", exclude_none=True)
        text = _text(result)
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)], structuredContent=structured, isError=False
        )

    return server


_INSTRUCTIONS = (
    "Sales insights on the seller's CRM records. First call findRecords with words of the record's name, "
    "then getRecordInsights with the recordType, recordId and crmOrgUrl it returned. Answer only from what "
    "getRecordInsights returned and cite each item's url."
)


def _text(result: BaseModel) -> str:
    """A short text a model can quote, with its citations (the structured content has it all)."""
    if isinstance(result, RecordMatches):
        if not result.records:
            return "No record has a name with those words."
        lines = [f"{len(result.records)} record(s) found:"]
        for r in result.records:
            where = f" <{r.url}>" if r.url else ""
            lines.append(f"- {r.name} ({r.recordType}, recordId {r.recordId}, crmOrgUrl {r.crmOrgUrl or '-'}){where}")
        return "\n".join(lines)
    if isinstance(result, RecordDigest):
        sources: list[str] = []

        def cite(url: str | None) -> str:
            if not url:
                return ""
            if url not in sources:
                sources.append(url)
            return f" [{sources.index(url) + 1}]"

        lines = [f"{result.name or result.recordId} ({result.recordType})"]
        sections: tuple[tuple[str, list[str], int], ...] = (
            (
                "Key sales info",
                [f"- {i.description}{cite(i.url)}" for i in result.keySalesInfo],
                result.more.keySalesInfo,
            ),
            (
                "Latest activities",
                [f"- {i.title}: {i.description}{cite(i.url)}" for i in result.activities],
                result.more.activities,
            ),
            (
                "Related records",
                [f"- {i.type}: {i.title}{cite(i.url)}" for i in result.relatedRecords],
                result.more.relatedRecords,
            ),
        )
        for title, items, more in sections:
            if items:
                lines += [f"{title}:", *items]
                if more:
                    lines.append(f"  ({more} more not shown)")
        if len(lines) == 1:
            lines.append("No insights for this record.")
        if sources:
            lines += ["Sources:", *(f"[{n}] {url}" for n, url in enumerate(sources, 1))]
        return "\n".join(lines)
    return json.dumps(result.model_dump(mode="json", exclude_none=True))


async def serve(ctx: RequestContext, req: func.HttpRequest) -> func.HttpResponse:
    """One MCP request through the SDK's stateless streamable HTTP transport."""
    if req.method.upper() != "POST":  # stateless: no stream to open (GET), no session to end (DELETE)
        return func.HttpResponse(
            "Method Not Allowed: this MCP endpoint is stateless; send each message with POST.",
            status_code=405,
            headers={"Allow": "POST"},
        )
    manager = StreamableHTTPSessionManager(
        app=_server(ctx), stateless=True, json_response=True, security_settings=_SECURITY
    )
    url = urlsplit(req.url)
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": url.scheme or "https",
        "path": url.path,
        "raw_path": url.path.encode(),
        "query_string": url.query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in req.headers.items()],
        "server": (url.hostname or "localhost", url.port or (443 if url.scheme == "https" else 80)),
        "client": None,
    }
    body = req.get_body() or b""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    status = 500
    headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            for name, value in message.get("headers", []):
                key = name.decode("latin-1").lower()
                headers[key] = (
                    f"{headers[key]}, {value.decode('latin-1')}" if key in headers else value.decode("latin-1")
                )
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))

    async with manager.run():
        await manager.handle_request(scope, receive, send)  # type: ignore[arg-type]
    headers.pop("content-length", None)
    if status >= 400:
        logger.warning("mcp answered %d: %s", status, b"".join(chunks)[:200].decode("utf-8", "replace"))
    return func.HttpResponse(b"".join(chunks), status_code=status, headers=headers)
