"""The Sales chat agent package (`manage.py agent-package`): generated from the code, valid
against the schemas Microsoft ships in npm `@microsoft/app-manifest` (offline), every function
bound to an operation, every card template resolving against real answers of the dev host
(expanded with the templating library in Node), under Sales' 150 KB, and `--check` catching drift."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.conftest import Service
from tests.test_chat_tools import FABRIKAM_RENEWAL, SAMPLE_TENANT, load_sample
from tools.agent import TOOL_FILES, TOOLS_LIMIT_BYTES, AgentOptions, render_package, tools_size, zip_package

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "agent"
AGENT_MCP = ROOT / "agent-mcp"
SCHEMAS = ROOT / "node_modules" / "@microsoft" / "app-manifest" / "build" / "json-schemas"
PINNED = {
    "manifest.json": SCHEMAS / "teams" / "v1.24" / "MicrosoftTeams.schema.json",
    "declarativeAgent.json": SCHEMAS / "copilot" / "declarative-agent" / "v1.7" / "schema.json",
    "ai-plugin.json": SCHEMAS / "copilot" / "plugin" / "v2.4" / "schema.json",
}


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    """`pattern` as the schemas mean it: ECMA-262 with Unicode classes (`\\p{L}`), which
    Python's `re` does not read."""
    import regress

    if isinstance(instance, str) and regress.Regex(pattern, "u").find(instance) is None:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


EcmaDraft4 = jsonschema.validators.extend(jsonschema.Draft4Validator, {"pattern": _ecma_pattern})


def committed(name: str) -> Any:
    return json.loads((AGENT / name).read_text(encoding="utf-8"))


def agent_package(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "agent-package", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_committed_package_is_what_the_code_generates() -> None:
    result = agent_package("--check")
    assert result.returncode == 0, result.stderr
    assert "matches the code" in result.stdout


def test_check_catches_a_changed_description(tmp_path: Path) -> None:
    copy = tmp_path / "agent"
    shutil.copytree(AGENT, copy)
    plugin = json.loads((copy / "ai-plugin.json").read_text())
    plugin["functions"][0]["description"] += " Also for contacts."
    (copy / "ai-plugin.json").write_text(json.dumps(plugin, indent=2) + "\n")
    result = agent_package("--check", "--out", str(copy))
    assert result.returncode == 1
    assert "out of date (ai-plugin.json)" in result.stderr


def test_check_catches_a_changed_mcp_tool(tmp_path: Path) -> None:
    copy = tmp_path / "agent-mcp"
    shutil.copytree(AGENT_MCP, copy)
    plugin = json.loads((copy / "ai-plugin.json").read_text())
    tools = plugin["runtimes"][0]["spec"]["mcp_tool_description"]["tools"]
    tools[1]["inputSchema"]["properties"]["recordId"]["description"] = "The id."
    (copy / "ai-plugin.json").write_text(json.dumps(plugin, indent=2) + "\n")
    result = agent_package("--check", "--mcp-out", str(copy))
    assert result.returncode == 1
    assert "agent-mcp is out of date (ai-plugin.json)" in result.stderr
    assert f"{AGENT} matches the code" in result.stdout  # the first package is checked too


@pytest.mark.parametrize("folder", [AGENT, AGENT_MCP], ids=["openapi", "mcp"])
@pytest.mark.parametrize("name", sorted(PINNED))
def test_each_manifest_is_valid_against_its_pinned_schema(folder: Path, name: str) -> None:
    schema = json.loads(PINNED[name].read_text(encoding="utf-8"))
    document = json.loads((folder / name).read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    errors = sorted(EcmaDraft4(schema).iter_errors(document), key=str)
    assert errors == []
    # and a broken one is caught: the check can fail
    broken = dict(document)
    broken.pop(next(iter(schema["required"])))
    assert list(EcmaDraft4(schema).iter_errors(broken))


def test_the_openapi_description_is_valid_and_binds_every_function() -> None:
    from openapi_spec_validator import validate

    openapi = committed("openapi.json")
    validate(openapi)
    operations = {op["operationId"] for path in openapi["paths"].values() for op in path.values()}
    plugin = committed("ai-plugin.json")
    functions = [f["name"] for f in plugin["functions"]]
    assert set(functions) == operations == {"findRecords", "getRecordInsights"}
    (runtime,) = plugin["runtimes"]
    assert runtime["run_for_functions"] == functions and runtime["spec"]["url"] == "openapi.json"
    assert runtime["auth"]["type"] == "OAuthPluginVault"
    agent = committed("declarativeAgent.json")
    assert agent["actions"] == [{"id": "salesInsights", "file": "ai-plugin.json"}]
    assert committed("manifest.json")["copilotAgents"]["declarativeAgents"][0]["file"] == "declarativeAgent.json"
    for name in ("color.png", "outline.png"):
        assert (AGENT / name).read_bytes().startswith(b"\x89PNG")


def test_the_mcp_package_binds_every_function_to_the_endpoints_own_tools(service: Service) -> None:
    """The MCP package's plugin calls the endpoint, and its static tool list is what the
    endpoint's `tools/list` answers (asked through the dev host with the official client)."""
    from mcp import ClientSession

    from tests.test_mcp import over_mcp

    plugin = json.loads((AGENT_MCP / "ai-plugin.json").read_text())
    (runtime,) = plugin["runtimes"]
    assert runtime["type"] == "RemoteMCPServer" and runtime["auth"]["type"] == "OAuthPluginVault"
    assert runtime["spec"]["url"] == "https://your-function-app.azurewebsites.net/api/mcp"
    tools = runtime["spec"]["mcp_tool_description"]
    functions = [f["name"] for f in plugin["functions"]]
    assert functions == runtime["run_for_functions"] == [t["name"] for t in tools["tools"]]
    # the same functions, texts and cards as the OpenAPI package's plugin
    by_name = {f["name"]: f for f in committed("ai-plugin.json")["functions"]}
    assert plugin["functions"] == [by_name[name] for name in functions]
    manifest = json.loads((AGENT_MCP / "manifest.json").read_text())
    assert manifest["id"] != committed("manifest.json")["id"]  # a package of its own

    async def listed(session: ClientSession) -> Any:
        return await session.list_tools()

    served = over_mcp(service, listed)
    assert [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in served.tools] == tools["tools"]


def test_the_mcp_zip_is_refused_with_sample_values_and_written_with_the_partners(tmp_path: Path) -> None:
    archive = tmp_path / "dist" / "agent-mcp.zip"
    out = ("--mcp", "--mcp-out", str(tmp_path / "agent-mcp"), "--zip", str(archive))
    refused = agent_package(*out, "--oauth-reference-id", "OAuth-1")
    assert refused.returncode == 2 and not archive.exists()
    assert "9b1f4c7e-3a52-4d8e-a6b0-2c5e8f1d4a73: pass --app-id" in refused.stderr
    result = agent_package(
        *out,
        *("--host", "func-contoso.azurewebsites.net", "--app-id-uri", "api://3b6f1d2e-8a4c-4e0b-9f7d-2c5a1e8b4d60"),
        *("--oauth-reference-id", "T0F1dGhSZWdpc3RyYXRpb24", "--app-id", "0c9e2d4f-6a8b-4c1d-9e3f-5a7b9c1d3e5f"),
    )
    assert result.returncode == 0, result.stderr
    zipped = zipfile.ZipFile(archive)
    assert sorted(zipped.namelist()) == sorted(
        ["ai-plugin.json", "declarativeAgent.json", "manifest.json", "color.png", "outline.png"]
    )
    runtime = json.loads(zipped.read("ai-plugin.json"))["runtimes"][0]
    assert runtime["spec"]["url"] == "https://func-contoso.azurewebsites.net/api/mcp"
    assert json.loads(zipped.read("manifest.json"))["id"] == "0c9e2d4f-6a8b-4c1d-9e3f-5a7b9c1d3e5f"


def test_the_tools_stay_under_the_sales_limit() -> None:
    files = render_package(AgentOptions())
    size = tools_size(files)
    print(f"agent tools: {size:,} bytes uncompressed ({', '.join(TOOL_FILES)}), limit {TOOLS_LIMIT_BYTES:,}")
    assert size < TOOLS_LIMIT_BYTES
    archive = zipfile.ZipFile(BytesIO(zip_package(files)))
    assert sorted(archive.namelist()) == sorted(files)
    assert zip_package(files) == zip_package(render_package(AgentOptions()))  # the same bytes each time


def _path(data: Any, path: str) -> Any:
    """A JSONPath of the plain `$`, `$.a.b` kind (what the manifests use)."""
    assert re.fullmatch(r"\$(\.[A-Za-z_][A-Za-z0-9_]*)*", path), path
    for part in path.split(".")[1:]:
        assert isinstance(data, dict) and part in data, (path, data)
        data = data[part]
    return data


def _expand(template: dict[str, Any], data: Any) -> dict[str, Any]:
    result = subprocess.run(
        ["node", str(ROOT / "devhost" / "expand_card.js")],
        input=json.dumps({"template": template, "data": data}),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_every_card_resolves_against_real_answers(service: Service) -> None:
    load_sample(service)
    token = service.token(tenant=SAMPLE_TENANT)
    answers = {
        "findRecords": service.get("/api/chat/records", {"name": "fabrikam"}, token=token).json(),
        "getRecordInsights": service.get(
            "/api/chat/record-insights",
            {"recordType": "opportunity", "recordId": FABRIKAM_RENEWAL, "crmOrgUrl": "contoso.crm.dynamics.com"},
            token=token,
        ).json(),
    }
    for function in committed("ai-plugin.json")["functions"]:
        semantics = function["capabilities"]["response_semantics"]
        results = _path(answers[function["name"]], semantics["data_path"])
        results = results if isinstance(results, list) else [results]
        assert results, function["name"]
        for result in results:
            for prop, path in semantics["properties"].items():
                assert _path(result, path), (function["name"], prop)
            card = _expand(semantics["static_template"], result)
            text = json.dumps(card, ensure_ascii=False)
            assert "${" not in text, (function["name"], text)  # every binding resolved
            assert result["name"] in text
            assert card["actions"][0]["url"] == result["url"]
        if function["name"] == "getRecordInsights":
            facts = [
                f
                for item in card["body"]
                if item["type"] == "Container"
                for i in item["items"]
                if i["type"] == "FactSet"
                for f in i["facts"]
            ]
            assert len(facts) == sum(len(results[0][k]) for k in ("keySalesInfo", "relatedRecords", "activities"))
            assert any(re.fullmatch(r"\d{4}-\d{2}-\d{2}", f["title"]) for f in facts)  # activity dates formatted


# ---- the description as readers take it ------------------------------------------------------------


def test_every_schema_declares_what_it_requires_and_types_every_parameter_and_property() -> None:
    from tools.agent import openapi_problems

    openapi = committed("openapi.json")
    assert openapi_problems(openapi) == []
    names = openapi["components"]["schemas"]
    for model in ("KeySalesInfo", "ActivityDigest", "RelatedRecordDigest"):
        assert names[model]["properties"]["title"] == {"type": "string"}
        assert "title" in names[model]["required"]
    assert names["RecordMatch"]["properties"]["url"]["type"] == "string"
    assert names["RecordMatch"]["properties"]["url"]["nullable"] is True
    # each rule can fail
    broken = json.loads(json.dumps(openapi))
    del broken["components"]["schemas"]["KeySalesInfo"]["properties"]["title"]
    broken["components"]["schemas"]["RecordMatch"]["properties"]["url"] = {
        "anyOf": [{"type": "string"}, {"nullable": True}]
    }
    broken["paths"]["/chat/records"]["get"]["parameters"][0]["schema"]["ge"] = 1
    assert openapi_problems(broken) == [
        "components.schemas.KeySalesInfo: requires 'title', which it does not declare",
        "components.schemas.RecordMatch.url: has no type",
        "components.schemas.RecordMatch.url.anyOf[1]: has no type",
        "GET /chat/records parameter name: 'ge' is not an OpenAPI 3.0 schema keyword",
    ]


def test_the_find_tool_states_its_range_of_records() -> None:
    (top,) = [p for p in committed("openapi.json")["paths"]["/chat/records"]["get"]["parameters"] if p["name"] == "top"]
    assert top["schema"] == {"default": 5, "minimum": 1, "maximum": 25, "type": "integer"}


def _spec_parser(path: Path) -> dict[str, Any]:
    result = subprocess.run(
        ["node", str(ROOT / "tests" / "spec_parser.cjs"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_the_agents_toolkit_parser_accepts_the_description(tmp_path: Path) -> None:
    """The Agents Toolkit's own reader (npm @microsoft/m365-spec-parser), offline, in Copilot mode
    with OAuth allowed: no error, no warning, both operations supported."""
    report = _spec_parser(AGENT / "openapi.json")
    assert report["validation"]["errors"] == [] and report["validation"]["warnings"] == []
    assert report["validation"]["status"] == 0
    listed = {api["operationId"]: api for api in report["listed"]["APIs"]}
    assert set(listed) == {"findRecords", "getRecordInsights"}
    assert all(api["isValid"] for api in listed.values()), listed
    assert {api["auth"]["authScheme"]["type"] for api in listed.values()} == {"oauth2"}
    # and it refuses a description it could not use
    broken = committed("openapi.json")
    broken.pop("servers")
    (tmp_path / "openapi.json").write_text(json.dumps(broken))
    errors = _spec_parser(tmp_path / "openapi.json")["validation"]["errors"]
    assert "no-server-information" in [e["type"] for e in errors]


# ---- the zip a Teams admin uploads ----------------------------------------------------------------------


def test_no_zip_is_written_while_a_placeholder_remains(tmp_path: Path) -> None:
    archive = tmp_path / "dist" / "agent.zip"
    result = agent_package("--out", str(tmp_path / "agent"), "--zip", str(archive), "--oauth-reference-id", "OAuth-1")
    assert result.returncode == 2
    assert not archive.exists()
    assert (tmp_path / "agent" / "openapi.json").exists()  # the folder is still generated
    lines = result.stderr.splitlines()
    assert lines[0] == f"{archive} not written: the package still holds the sample's values, which Teams refuses:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "your-function-app.azurewebsites.net",
        "api",  # api://00000000-...
        "5e0c8a3d-2f41-4b7a-9c6e-1d8f3a5b7c90",
    ]
    assert ["--host", "--app-id-uri", "--app-id"] == [
        re.search(r"pass (--[\w-]+)", line).group(1) for line in lines[1:]
    ]
    assert "[[OAUTH_REFERENCE_ID]]" not in result.stderr


def test_the_zip_is_written_with_the_partners_values(tmp_path: Path) -> None:
    archive = tmp_path / "dist" / "agent.zip"
    result = agent_package(
        *("--out", str(tmp_path / "agent"), "--zip", str(archive)),
        *("--host", "func-contoso.azurewebsites.net", "--app-id-uri", "api://3b6f1d2e-8a4c-4e0b-9f7d-2c5a1e8b4d60"),
        *("--oauth-reference-id", "T0F1dGhSZWdpc3RyYXRpb24", "--app-id", "7d1e4b2a-9c3f-4a6e-8b5d-0f2c7e9a1b34"),
    )
    assert result.returncode == 0, result.stderr
    files = {name: zipfile.ZipFile(archive).read(name) for name in zipfile.ZipFile(archive).namelist()}
    text = b"".join(content for name, content in files.items() if name.endswith(".json")).decode()
    for sample in ("your-function-app", "00000000-0000", "[[OAUTH_REFERENCE_ID]]", "5e0c8a3d-2f41"):
        assert sample not in text
    assert json.loads(files["ai-plugin.json"])["runtimes"][0]["auth"]["reference_id"] == "T0F1dGhSZWdpc3RyYXRpb24"
