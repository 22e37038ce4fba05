"""The Sales chat tools over MCP, driven through the dev host (the runtime library, Azurite, a
local Entra ID) by the protocol's own clients: the official Python SDK's streamable HTTP client,
and the MCP Inspector's CLI (npm `@modelcontextprotocol/inspector-cli`, offline)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import Service, attached
from tests.proxies import LoopbackProxy
from tests.test_chat_tools import (
    DIGEST,
    FABRIKAM_RENEWAL,
    FIND,
    LITWARE_TENANT,
    SAMPLE_TENANT,
    load_sample,
    named,
)
from tests.test_resilience import slow_storage

ROOT = Path(__file__).resolve().parent.parent
MCP = "/api/mcp"
METADATA = "/api/.well-known/oauth-protected-resource/mcp"
__all__ = ["slow_storage"]  # the slow-storage fixture, shared with the resilience tests

INSPECTOR = ROOT / "node_modules" / "@modelcontextprotocol" / "inspector-cli" / "build" / "index.js"

type Session = Callable[[ClientSession], Awaitable[Any]]


def over_mcp(service: Service, work: Session, token: str | None = None, **headers: str) -> Any:
    """Run `work` in an initialized session of the official client, with a bearer token."""

    async def go() -> Any:
        sent = {"Authorization": f"Bearer {token or service.token()}", **headers}
        async with (
            httpx.AsyncClient(headers=sent, timeout=30) as client,
            streamable_http_client(service.url + MCP, http_client=client) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return await work(session)

    return asyncio.run(go())


def call(service: Service, tool: str, arguments: dict[str, Any], token: str | None = None, **headers: str) -> Any:
    async def work(session: ClientSession) -> types.CallToolResult:
        return await session.call_tool(tool, arguments)

    result = over_mcp(service, work, token, **headers)
    assert isinstance(result, types.CallToolResult)
    return result


def answer(result: types.CallToolResult) -> dict[str, Any]:
    assert not result.isError, result.content
    assert result.structuredContent is not None
    return result.structuredContent


def text(result: types.CallToolResult) -> str:
    (block,) = result.content
    assert isinstance(block, types.TextContent)
    return block.text


# ---- the protocol: initialize, tools/list -------------------------------------------------------


def test_initialize_and_list_the_tools_with_their_schemas(service: Service) -> None:
    async def work(session: ClientSession) -> types.ListToolsResult:
        return await session.list_tools()

    listed = over_mcp(service, work)
    assert [t.name for t in listed.tools] == ["findRecords", "getRecordInsights"]
    find, digest = listed.tools
    assert find.inputSchema["required"] == ["name"]
    assert set(find.inputSchema["properties"]) == {"name", "recordType", "top"}
    assert set(digest.inputSchema["required"]) == {"recordType", "recordId"}
    assert find.outputSchema is not None and "records" in find.outputSchema["properties"]
    assert digest.outputSchema is not None and "keySalesInfo" in digest.outputSchema["properties"]
    assert all(t.annotations and t.annotations.readOnlyHint for t in listed.tools)


def _openapi_operations() -> dict[str, dict[str, Any]]:
    openapi = json.loads((ROOT / "agent" / "openapi.json").read_text(encoding="utf-8"))
    return {op["operationId"]: op for path in openapi["paths"].values() for op in path.values()}


def drift(tools: list[dict[str, Any]], operations: dict[str, dict[str, Any]]) -> list[str]:
    """Where the MCP tools and the OpenAPI description say different things of one operation."""
    problems = []
    for tool in tools:
        op = operations.get(tool["name"])
        if op is None:
            problems.append(f"{tool['name']}: not in agent/openapi.json")
            continue
        if tool["description"] != op["description"]:
            problems.append(f"{tool['name']}: descriptions differ")
        schema = tool["inputSchema"]
        params = {p["name"]: p for p in op["parameters"]}
        if set(params) != set(schema["properties"]):
            problems.append(f"{tool['name']}: parameters {sorted(params)} vs {sorted(schema['properties'])}")
        for name, param in params.items():
            prop = schema["properties"].get(name, {})
            # an optional argument is anyOf [X, null] in JSON Schema, X with nullable in OpenAPI 3.0
            prop = {**next((s for s in prop.get("anyOf", []) if s.get("type") != "null"), {}), **prop}
            if param["description"] != prop.get("description", ""):
                problems.append(f"{tool['name']}.{name}: descriptions differ")
            if param["required"] != (name in schema.get("required", [])):
                problems.append(f"{tool['name']}.{name}: required differs")
            if param["schema"].get("type") != prop.get("type"):
                problems.append(f"{tool['name']}.{name}: type {param['schema'].get('type')} vs {prop.get('type')}")
            for bound in ("minimum", "maximum", "maxLength", "minLength", "default"):
                if bound in param["schema"] and param["schema"][bound] != prop.get(bound):
                    problems.append(f"{tool['name']}.{name}: {bound} differs")
    return problems


def test_the_tools_say_what_the_openapi_description_says() -> None:
    """One source: the tools and agent/openapi.json come from the same operations and models
    (`agent-package --check` holds the file to the code; this holds the tools to the file)."""
    from chat.mcp import tool_definitions

    tools = [t.model_dump(mode="json", exclude_none=True) for t in tool_definitions()]
    operations = _openapi_operations()
    assert drift(tools, operations) == []
    # and the check sees a drift
    changed = json.loads(json.dumps(tools))
    changed[0]["description"] += " (edited)"
    changed[1]["inputSchema"]["properties"]["recordId"]["description"] = "another text"
    del changed[0]["inputSchema"]["properties"]["top"]
    found = drift(changed, operations)
    assert any("descriptions differ" in p for p in found) and any("recordId" in p for p in found)
    assert any("parameters" in p for p in found)


# ---- tools/call: the same answers as REST ------------------------------------------------------


def test_both_tools_on_the_sample_in_two_tenants_and_two_languages(service: Service) -> None:
    load_sample(service)
    contoso = service.token(tenant=SAMPLE_TENANT)
    (record,) = answer(call(service, "findRecords", {"name": "fabrikam renewal"}, contoso))["records"]
    assert (record["recordId"], record["crmOrgUrl"]) == (FABRIKAM_RENEWAL, "contoso.crm.dynamics.com")
    question = {"recordType": "opportunity", "recordId": FABRIKAM_RENEWAL, "crmOrgUrl": record["crmOrgUrl"]}
    english = call(service, "getRecordInsights", question, contoso)
    digest = answer(english)
    assert (digest["name"], digest["language"], len(digest["keySalesInfo"])) == (
        "Fabrikam Surface Hub renewal",
        "en",
        4,
    )
    quoted = text(english)
    assert quoted.startswith("Fabrikam Surface Hub renewal (opportunity)")
    assert "Sources:" in quoted and all(k["url"] in quoted for k in digest["keySalesInfo"])
    french = answer(call(service, "getRecordInsights", question, contoso, **{"Accept-Language": "fr"}))
    assert french["language"] == "fr" and "Devis" in json.dumps(french, ensure_ascii=False)
    assert answer(call(service, "getRecordInsights", {**question, "language": "fr"}, contoso)) == french

    litware = service.token(tenant=LITWARE_TENANT)
    (theirs,) = answer(call(service, "findRecords", {"name": "quebec"}, litware))["records"]
    assert theirs["name"] == "Renouvellement du contrat Litware – Québec"
    own = answer(
        call(
            service,
            "getRecordInsights",
            {"recordType": "opportunity", "recordId": theirs["recordId"], "crmOrgUrl": theirs["crmOrgUrl"]},
            litware,
        )
    )
    assert own["keySalesInfo"][0]["description"] == "Litware a ouvert 2 tickets de support cette semaine."
    # tenants apart: neither finds the other's records
    assert answer(call(service, "findRecords", {"name": "quebec"}, contoso))["records"] == []
    assert answer(call(service, "findRecords", {"name": "fabrikam"}, litware))["records"] == []
    none = call(service, "findRecords", {"name": "quebec"}, contoso)
    assert text(none) == "No record has a name with those words."


@pytest.mark.parametrize(
    ("path", "tool", "arguments", "headers"),
    [
        (FIND, "findRecords", {"name": "fabrikam"}, {}),
        (FIND, "findRecords", {"name": "renewal", "recordType": "opportunity", "top": 1}, {}),
        (DIGEST, "getRecordInsights", {"recordType": "opportunity", "recordId": FABRIKAM_RENEWAL}, {}),
        (
            DIGEST,
            "getRecordInsights",
            {"recordType": "opportunity", "recordId": FABRIKAM_RENEWAL, "crmOrgUrl": "contoso.crm.dynamics.com"},
            {"Accept-Language": "fr-CA,fr;q=0.9"},
        ),
        (DIGEST, "getRecordInsights", {"recordType": "account", "recordId": "nobody-has-this"}, {}),
    ],
)
def test_the_same_answers_over_mcp_and_over_rest(
    service: Service, path: str, tool: str, arguments: dict[str, Any], headers: dict[str, str]
) -> None:
    load_sample(service)
    token = service.token(tenant=SAMPLE_TENANT)
    rest = service.get(path, {k: str(v) for k, v in arguments.items()}, token=token, **headers)
    assert rest.status_code == 200, rest.text
    structured = answer(call(service, tool, arguments, token, **headers))
    assert structured == rest.json()
    # and it is what the tool's output schema says it is
    from chat.mcp import tool_definitions

    (listed,) = [t for t in tool_definitions() if t.name == tool]
    assert listed.outputSchema is not None
    jsonschema.validate(structured, listed.outputSchema)


def test_a_record_with_hundreds_of_documents_answers_the_capped_digest(service: Service) -> None:
    many = [named(f"h{n}", "opp-big", "India account plan" if n == 0 else None) for n in range(250)]
    many += [attached("recordSummary", id=f"a{n}", record_id="opp-big") for n in range(250)]
    service.load(many)
    digest = answer(call(service, "getRecordInsights", {"recordType": "opportunity", "recordId": "opp-big"}))
    assert digest["name"] == "India account plan"
    assert len(digest["keySalesInfo"]) == 5 and len(digest["activities"]) == 5
    assert digest["more"] == {"keySalesInfo": True, "relatedRecords": False, "activities": True}
    quoted = text(call(service, "getRecordInsights", {"recordType": "opportunity", "recordId": "opp-big"}))
    assert "(more not shown)" not in quoted and "more not shown" in quoted


# ---- what a caller gets wrong ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "arguments", "named_argument"),
    [
        ("findRecords", {}, "name"),
        ("findRecords", {"name": "!!! ---"}, "name"),
        ("findRecords", {"name": "fab", "top": 0}, "top"),
        ("findRecords", {"name": "fab", "top": "many"}, "top"),
        ("getRecordInsights", {"recordId": "opp-1"}, "recordType"),
        ("getRecordInsights", {"recordType": "opportunity"}, "recordId"),
        ("getRecordInsights", {"recordType": "opportunity", "recordId": "opp-1", "language": "english!"}, "language"),
        ("findRecord", {"name": "fab"}, "findRecord"),
    ],
)
def test_bad_arguments_are_a_tool_error_naming_the_argument(
    service: Service, tool: str, arguments: dict[str, Any], named_argument: str
) -> None:
    result = call(service, tool, arguments)
    assert result.isError and result.structuredContent is None
    assert f"'{named_argument}'" in text(result)


def test_without_a_token_the_challenge_names_the_resource_metadata(service: Service) -> None:
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    accept = {"Accept": "application/json, text/event-stream"}
    refused = service.client.post(MCP, json=hello, headers=accept)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == f'Bearer resource_metadata="{service.url}{METADATA}"'
    assert refused.json()["errorCode"] == "INVALID_TOKEN_SPECIFIED"
    bad = service.client.post(MCP, json=hello, headers={**accept, "Authorization": "Bearer not.a.token"})
    assert bad.headers["www-authenticate"] == (
        f'Bearer error="invalid_token", resource_metadata="{service.url}{METADATA}"'
    )
    # the metadata is served without a token, and names the endpoint, Entra ID and the scope
    metadata = service.client.get(METADATA)
    assert metadata.status_code == 200
    assert metadata.json() == {
        "resource": f"{service.url}{MCP}",
        "authorization_servers": [f"{service.authority.url}/organizations/v2.0"],
        "scopes_supported": ["api://c4s-insights-test/user_impersonation"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Sales chat tools",
    }
    service.set(AUTH_ALLOWED_TENANTS=SAMPLE_TENANT)  # one tenant: its own authority
    assert service.client.get(METADATA).json()["authorization_servers"] == [
        f"{service.authority.url}/{SAMPLE_TENANT}/v2.0"
    ]
    # and the official client, given no token, stops at the 401
    with pytest.raises(Exception) as raised:
        asyncio.run(_initialize_without_token(service))
    assert "401" in repr(raised.value) or "401" in str(getattr(raised.value, "exceptions", ""))


async def _initialize_without_token(service: Service) -> None:
    async with (
        streamable_http_client(service.url + MCP) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await asyncio.wait_for(session.initialize(), timeout=10)


def test_a_tenant_that_is_not_allowed_is_a_403(service: Service) -> None:
    outsider = service.token(tenant="99999999-9999-4999-8999-999999999999")
    hello = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    refused = service.client.post(
        MCP,
        json=hello,
        headers={"Authorization": f"Bearer {outsider}", "Accept": "application/json, text/event-stream"},
    )
    assert refused.status_code == 403 and refused.json()["errorCode"] == "INSUFFICIENT_PERMISSIONS"
    other_app = service.token(client_app="11111111-2222-4333-8444-555555555555")
    assert service.client.post(MCP, json=hello, headers={"Authorization": f"Bearer {other_app}"}).status_code == 403


def test_stateless_get_and_delete_are_405_and_every_answer_carries_the_request_id(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    auth = {"Authorization": f"Bearer {service.token()}", "x-ms-client-request-id": "mcp-trace-1"}
    for method in ("GET", "DELETE"):
        response = service.client.request(method, MCP, headers=auth)
        assert response.status_code == 405 and response.headers["allow"] == "POST"
    with caplog.at_level(logging.INFO, logger="c4s"):
        listed = service.client.post(
            MCP,
            json={"jsonrpc": "2.0", "id": 7, "method": "tools/list"},
            headers={**auth, "Accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-06-18"},
        )
    assert listed.status_code == 200 and listed.headers["x-ms-client-request-id"] == "mcp-trace-1"
    assert listed.headers.get("mcp-session-id") is None  # stateless: no session to hold
    assert [t["name"] for t in listed.json()["result"]["tools"]] == ["findRecords", "getRecordInsights"]
    summary = [r.getMessage() for r in caplog.records if "operation=mcp " in r.getMessage()]
    assert summary and "request_id=mcp-trace-1 " in summary[-1] and " status=200 " in summary[-1]
    assert service.token() not in caplog.text


def test_a_body_that_is_not_json_rpc_is_a_client_error_not_a_500(service: Service) -> None:
    auth = {"Authorization": f"Bearer {service.token()}", "Accept": "application/json, text/event-stream"}
    for body in (b"{not json", b"[]", b'{"jsonrpc": "2.0", "id": 1}'):
        response = service.client.post(MCP, content=body, headers={**auth, "Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, (body, response.status_code)
    service.set(MAX_REQUEST_BYTES="100000")
    too_big = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"x":"' + b"x" * 100_000 + b'"}}'
    response = service.client.post(MCP, content=too_big, headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 413


def test_slow_storage_the_budget_holds_over_mcp_too(service: Service, slow_storage: LoopbackProxy) -> None:
    """A tool call whose reads hang is answered inside the request budget: the pipeline's 503 with
    Retry-After, as for the REST operations (the MCP request never outlives its budget)."""
    service.set(REQUEST_BUDGET_SECONDS="1.5", INSIGHTS_TABLE_NAME=service.table_name)
    started = time.monotonic()
    response = service.client.post(
        MCP,
        json={
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "getRecordInsights", "arguments": {"recordType": "opportunity", "recordId": "opp-1"}},
        },
        headers={
            "Authorization": f"Bearer {service.token()}",
            "Accept": "application/json, text/event-stream",
            "x-ms-client-request-id": "mcp-slow-1",
        },
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 503 and "retry-after" in response.headers
    assert response.json()["errorCode"] == "SERVICE_UNAVAILABLE"
    assert response.json()["activityId"] == "mcp-slow-1"
    assert elapsed < 3.0


# ---- a second, independent client --------------------------------------------------------------


def inspector(service: Service, token: str, *args: str) -> Any:
    result = subprocess.run(
        [
            "node",
            str(INSPECTOR),
            service.url + MCP,
            "--transport",
            "http",
            "--header",
            f"Authorization: Bearer {token}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        # run from its build folder: 1.0.3 checks for its package.json relative to the working
        # directory, then imports it relative to itself
        cwd=INSPECTOR.parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_the_inspector_cli_lists_and_calls_the_tools(service: Service) -> None:
    load_sample(service)
    token = service.token(tenant=SAMPLE_TENANT)
    listed = inspector(service, token, "--method", "tools/list")
    assert [t["name"] for t in listed["tools"]] == ["findRecords", "getRecordInsights"]
    found = inspector(
        service, token, "--method", "tools/call", "--tool-name", "findRecords", "--tool-arg", "name=fabrikam renewal"
    )
    assert [r["recordId"] for r in found["structuredContent"]["records"]] == [FABRIKAM_RENEWAL]
    digest = inspector(
        service,
        token,
        "--method",
        "tools/call",
        "--tool-name",
        "getRecordInsights",
        "--tool-arg",
        "recordType=opportunity",
        f"recordId={FABRIKAM_RENEWAL}",
        "language=fr",
    )
    assert digest["structuredContent"]["language"] == "fr" and not digest.get("isError")
    rest = httpx.get(
        service.url + DIGEST,
        params={"recordType": "opportunity", "recordId": FABRIKAM_RENEWAL, "language": "fr"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert digest["structuredContent"] == rest.json()
