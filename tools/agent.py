"""The Sales chat agent package, generated from the code like the connector (`manage.py agent-package`).

    agent/openapi.json            OpenAPI 3.0 of the two chat tools (chat/tools.py), from their models
    agent/ai-plugin.json          the API plugin manifest (schema v2.4): when to call each function,
                                  an Adaptive Card per answer, OAuth through the plugin vault
    agent/declarativeAgent.json   the declarative agent (schema v1.7): find the record, then its
                                  insights, always cite
    agent/manifest.json           the app manifest (v1.24) that carries the agent
    agent/color.png, outline.png  its icons

The zip a Teams admin uploads is these files at its root. A Sales admin then copies the agent's
tools into Sales (docs/sales-chat.md); the tools' files must stay under 150 KB together.

`agent-package --mcp` writes the second package, `agent-mcp/`: the same agent and cards, its
plugin's runtime `RemoteMCPServer` (the MCP endpoint, chat/mcp.py) with the tools inline, as the
endpoint's `tools/list` gives them (from the same operations), its own Teams app id.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shared.contract import ApiError
from shared.http import Operation
from tools.connector import ConnectorOptions, render_icon

__all__ = [
    "AGENT_SCHEMA",
    "APP_SCHEMA",
    "PLUGIN_SCHEMA",
    "TOOL_FILES",
    "AgentOptions",
    "chat_operations",
    "openapi_problems",
    "placeholders_in",
    "render_mcp_package",
    "render_package",
    "tools_size",
    "write_package",
    "zip_package",
]

PLUGIN_SCHEMA = "https://developer.microsoft.com/json-schemas/copilot/plugin/v2.4/schema.json"
AGENT_SCHEMA = "https://developer.microsoft.com/json-schemas/copilot/declarative-agent/v1.7/schema.json"
APP_SCHEMA = "https://developer.microsoft.com/json-schemas/teams/v1.24/MicrosoftTeams.schema.json"
TOOL_FILES = ("openapi.json", "ai-plugin.json", "declarativeAgent.json")
"""What Sales copies from the agent (its tools; the agent has no knowledge sources)."""
MCP_TOOL_FILES = ("ai-plugin.json", "declarativeAgent.json")
"""The same, for the MCP package."""
MCP_SAMPLE_APP_ID = "9b1f4c7e-3a52-4d8e-a6b0-2c5e8f1d4a73"
"""The MCP package's Teams app id in `agent-mcp/` (a package of its own: a GUID of its own)."""
TOOLS_LIMIT_BYTES = 150 * 1024


_BRAND = ConnectorOptions()
"""The partner's names, colour and links: the connector's, one place for both packages."""


@dataclass(frozen=True)
class AgentOptions:
    host: str = _BRAND.host
    base_path: str = _BRAND.base_path
    app_id: str = "5e0c8a3d-2f41-4b7a-9c6e-1d8f3a5b7c90"
    """The Teams app's id (a GUID of your own; keep it across versions)."""
    version: str = "1.0.0"
    app_id_uri: str = _BRAND.app_id_uri
    oauth_reference_id: str = "[[OAUTH_REFERENCE_ID]]"
    """From the Teams developer portal's OAuth client registration (README)."""
    name: str = _BRAND.title
    short_name: str = "Relecloud Insights"
    publisher: str = _BRAND.publisher
    brand_color: str = _BRAND.brand_color
    website: str = _BRAND.website
    privacy_policy: str = _BRAND.privacy_policy
    terms_of_use: str = "https://www.relecloud.example/terms"
    support_email: str = _BRAND.support_email


def chat_operations() -> list[tuple[str, str, Operation[Any]]]:
    """(method, path, spec) of the chat tools the FunctionApp registers (the `chat` blueprint)."""
    from devhost.server import route_prefix  # beside the app's own import, below
    from function_app import create_app  # importing the app builds it: only when asked for its operations

    prefix = route_prefix()
    found = []
    for function in create_app().get_functions():
        trigger = function.get_trigger()
        user = function.get_user_function()
        spec = getattr(user, "operation", None)
        if isinstance(spec, Operation) and user.__module__ == "chat.tools":
            method = sorted(str(getattr(m, "value", m)).upper() for m in getattr(trigger, "methods", []))[0]
            found.append((method, f"/{getattr(trigger, 'route', '')}", spec))
    assert prefix == "api"
    return sorted(found, key=lambda f: f[1])


# ---- OpenAPI 3.0 from the models ------------------------------------------------------------------------


def _openapi30(schema: Any) -> Any:
    """JSON Schema as pydantic writes it (2020-12) to OpenAPI 3.0's dialect: `anyOf [X, null]`
    becomes X with `nullable` (3.0 has no null type, and `nullable` without a type constrains
    nothing), `$defs` references point at components, and pydantic's `title` annotations go
    (a property *named* title stays)."""
    if isinstance(schema, list):
        return [_openapi30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("$defs", "title"):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _openapi30(prop) for name, prop in value.items()}
        else:
            out[key] = _openapi30(value)
    any_of = schema.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of:
        rest = [_openapi30(s) for s in any_of if s != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            out.update(rest[0])
        else:
            out["anyOf" if len(rest) > 1 else "allOf"] = rest
        out["nullable"] = True
    if "$ref" in out:
        out["$ref"] = out["$ref"].replace("#/$defs/", "#/components/schemas/")
    return out


SCHEMA_KEYWORDS = frozenset(
    (
        *("title", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength"),
        *("minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxProperties", "minProperties"),
        *("required", "enum", "type", "allOf", "oneOf", "anyOf", "not", "items", "properties"),
        *("additionalProperties", "description", "format", "default", "nullable", "discriminator"),
        *("readOnly", "writeOnly", "xml", "externalDocs", "example", "deprecated", "$ref"),
    )
)
"""The keywords of OpenAPI 3.0's Schema Object (and `x-` extensions): anything else is ignored by
a reader, so a constraint spelled another way (pydantic's `ge` after a validator) is lost."""


def openapi_problems(openapi: dict[str, Any]) -> list[str]:
    """What a reader of the description would get wrong, as sentences (empty: none): a schema that
    requires a property it does not declare, a parameter or property whose schema has no type,
    a keyword outside OpenAPI 3.0's Schema Object."""
    problems: list[str] = []

    def typed(schema: Any) -> bool:
        if not isinstance(schema, dict):
            return False
        if "type" in schema or "$ref" in schema:
            return True
        members = [m for key in ("allOf", "anyOf", "oneOf") for m in schema.get(key, [])]
        return bool(members) and all(typed(m) for m in members)

    def walk(schema: Any, where: str) -> None:
        if not isinstance(schema, dict):
            return
        for key in schema:
            if key not in SCHEMA_KEYWORDS and not key.startswith("x-"):
                problems.append(f"{where}: {key!r} is not an OpenAPI 3.0 schema keyword")
        properties = schema.get("properties") or {}
        for name in schema.get("required", []):
            if name not in properties:
                problems.append(f"{where}: requires {name!r}, which it does not declare")
        for name, prop in properties.items():
            if not typed(prop):
                problems.append(f"{where}.{name}: has no type")
            walk(prop, f"{where}.{name}")
        for key in ("items", "additionalProperties", "not"):
            walk(schema.get(key), f"{where}.{key}")
        for key in ("allOf", "anyOf", "oneOf"):
            for i, member in enumerate(schema.get(key, [])):
                if not typed(member):
                    problems.append(f"{where}.{key}[{i}]: has no type")
                walk(member, f"{where}.{key}[{i}]")

    for name, schema in (openapi.get("components", {}).get("schemas") or {}).items():
        walk(schema, f"components.schemas.{name}")
    for path, methods in (openapi.get("paths") or {}).items():
        for method, op in methods.items():
            for param in op.get("parameters", []):
                where = f"{method.upper()} {path} parameter {param.get('name')}"
                if not typed(param.get("schema")):
                    problems.append(f"{where}: has no type")
                walk(param.get("schema"), where)
            for status, response in (op.get("responses") or {}).items():
                for media, content in (response.get("content") or {}).items():
                    walk(content.get("schema"), f"{method.upper()} {path} {status} {media}")
    return problems


def _schemas(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.get("$defs", {}).items():
        components[name] = _openapi30(definition)
    components[model.__name__] = _openapi30(schema)
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema["properties"].items():
        described = _openapi30(prop)
        description = described.pop("description", "")
        params.append(
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "description": description,
                "schema": described,
            }
        )
    return params


def build_openapi(options: AgentOptions) -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    error = _schemas(ApiError, components)
    for method, path, spec in chat_operations():
        assert spec.query_model is not None and spec.response_model is not None
        paths[path] = {
            method.lower(): {
                "operationId": spec.operation_id,
                "summary": spec.summary,
                "description": spec.description,
                "parameters": _parameters(spec.query_model),
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"application/json": {"schema": _schemas(spec.response_model, components)}},
                    },
                    **{
                        str(status): {"description": text, "content": {"application/json": {"schema": error}}}
                        for status, text in (
                            (400, "A parameter is not valid; the error names it."),
                            (401, "The access token is missing, invalid or expired."),
                            (403, "The caller's tenant or app is not allowed."),
                            (429, "Too many requests; retry after the Retry-After seconds."),
                            (503, "The insights store did not answer in time; retry."),
                        )
                    },
                },
            }
        }
    scope = f"{options.app_id_uri}/user_impersonation"
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"{options.name} chat tools",
            "version": options.version,
            "description": "Find the seller's CRM records by name and get a compact digest of their insights.",
        },
        "servers": [{"url": f"https://{options.host}{options.base_path}"}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "entra": {
                    "type": "oauth2",
                    "flows": {
                        "authorizationCode": {
                            "authorizationUrl": "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
                            "tokenUrl": "https://login.microsoftonline.com/common/oauth2/v2.0/token",
                            "scopes": {scope: "Read sales insights"},
                        }
                    },
                }
            },
        },
        "security": [{"entra": [scope]}],
    }


# ---- the plugin manifest ------------------------------------------------------------------------------

FIND_CARD: dict[str, Any] = {
    "type": "AdaptiveCard",
    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
    "version": "1.5",
    "body": [
        {"type": "TextBlock", "text": "${name}", "weight": "Bolder", "size": "Medium", "wrap": True},
        {
            "type": "FactSet",
            "facts": [
                {"title": "Type", "value": "${recordType}"},
                {"$when": "${crmOrgUrl != null}", "title": "CRM", "value": "${crmOrgUrl}"},
            ],
        },
    ],
    "actions": [{"type": "Action.OpenUrl", "title": "Open", "url": "${url}", "$when": "${url != null}"}],
}

DIGEST_CARD: dict[str, Any] = {
    "type": "AdaptiveCard",
    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
    "version": "1.5",
    "body": [
        {"type": "TextBlock", "text": "${name}", "weight": "Bolder", "size": "Medium", "wrap": True},
        {"type": "TextBlock", "text": "${recordType}", "isSubtle": True, "spacing": "None"},
        {
            "type": "Container",
            "$when": "${count(keySalesInfo) > 0}",
            "items": [
                {"type": "TextBlock", "text": "Key sales info", "weight": "Bolder", "spacing": "Medium"},
                {
                    "type": "FactSet",
                    "facts": [{"$data": "${keySalesInfo}", "title": "${title}", "value": "${description}"}],
                },
            ],
        },
        {
            "type": "Container",
            "$when": "${count(relatedRecords) > 0}",
            "items": [
                {"type": "TextBlock", "text": "Related records", "weight": "Bolder", "spacing": "Medium"},
                {
                    "type": "FactSet",
                    "facts": [{"$data": "${relatedRecords}", "title": "${type}", "value": "${title}"}],
                },
            ],
        },
        {
            "type": "Container",
            "$when": "${count(activities) > 0}",
            "items": [
                {"type": "TextBlock", "text": "Latest activities", "weight": "Bolder", "spacing": "Medium"},
                {
                    "type": "FactSet",
                    "facts": [
                        {
                            "$data": "${activities}",
                            "title": "${formatDateTime(dateTime, 'yyyy-MM-dd')}",
                            "value": "${title}",
                        }
                    ],
                },
            ],
        },
    ],
    "actions": [{"type": "Action.OpenUrl", "title": "Open", "url": "${url}", "$when": "${url != null}"}],
}

FUNCTION_TEXTS = {
    "findRecords": (
        "Finds the seller's CRM records (accounts, opportunities and others) by words of their name. "
        "Call it first whenever the seller names an account, opportunity or deal instead of giving an id, "
        "e.g. 'Fabrikam's renewal' -> name='Fabrikam renewal'. Pass recordType when the seller says which kind. "
        "If several records match, ask the seller which one, showing their names.",
        {"title": "$.name", "subtitle": "$.recordType", "url": "$.url"},
        "$.records",
        FIND_CARD,
    ),
    "getRecordInsights": (
        "Gets what the seller's sales application knows about ONE CRM record: key sales info, related records "
        "and the latest activities, each with a citation link. Call it after findRecords, passing the "
        "recordType, recordId and crmOrgUrl findRecords returned, and the seller's language. Answer only from "
        "it, cite each item's url, and say when a list has more than the digest shows (more.*).",
        {"title": "$.name", "subtitle": "$.recordType", "url": "$.url"},
        "$",
        DIGEST_CARD,
    ),
}


def build_plugin(
    options: AgentOptions, operations: list[str], *, mcp_tools: dict[str, Any] | None = None
) -> dict[str, Any]:
    functions = []
    for operation_id in operations:
        description, properties, data_path, card = FUNCTION_TEXTS[operation_id]
        functions.append(
            {
                "name": operation_id,
                "description": description,
                "capabilities": {
                    "response_semantics": {
                        "data_path": data_path,
                        "properties": properties,
                        "static_template": copy.deepcopy(card),
                    }
                },
            }
        )
    return {
        "$schema": PLUGIN_SCHEMA,
        "schema_version": "v2.4",
        "name_for_human": options.short_name,
        "namespace": "salesinsights",
        "description_for_human": f"Find {options.publisher} insights on your CRM records by name.",
        "description_for_model": (
            f"Answers sellers' questions about their CRM accounts and opportunities with {options.publisher}'s "
            "insights: first find the record by name, then get its insights, and cite them."
        ),
        "contact_email": options.support_email,
        "privacy_policy_url": options.privacy_policy,
        "legal_info_url": options.terms_of_use,
        "functions": functions,
        "runtimes": [
            _openapi_runtime(options, operations) if mcp_tools is None else _mcp_runtime(options, operations, mcp_tools)
        ],
    }


def _openapi_runtime(options: AgentOptions, operations: list[str]) -> dict[str, Any]:
    return {
        "type": "OpenApi",
        "auth": {"type": "OAuthPluginVault", "reference_id": options.oauth_reference_id},
        "spec": {"url": "openapi.json", "progress_style": "ShowUsageWithInputAndOutput"},
        "run_for_functions": operations,
    }


def _mcp_runtime(options: AgentOptions, operations: list[str], tools: dict[str, Any]) -> dict[str, Any]:
    """The MCP endpoint, with the tools given statically (what its `tools/list` answers): the
    package says which tools it binds, and a changed tool changes the package. Inline, not as a
    file: schema v2.4's `mcp_tool_description` is oneOf a file reference or an inline object
    that any object matches, so a file reference can never validate."""
    return {
        "type": "RemoteMCPServer",
        "auth": {"type": "OAuthPluginVault", "reference_id": options.oauth_reference_id},
        "spec": {
            "url": f"https://{options.host}{options.base_path.rstrip('/')}/mcp",
            "mcp_tool_description": tools,
        },
        "run_for_functions": operations,
    }


def build_mcp_tools() -> dict[str, Any]:
    """The tools as the MCP endpoint's `tools/list` answers them."""
    from chat.mcp import tool_definitions  # the chat tools' operations, only when the MCP package is generated

    return {"tools": [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tool_definitions()]}


def build_agent(options: AgentOptions) -> dict[str, Any]:
    return {
        "$schema": AGENT_SCHEMA,
        "version": "v1.7",
        "name": options.short_name,
        "description": f"Answers questions about your accounts and opportunities with {options.publisher}'s sales insights.",
        "instructions": (
            f"You help sellers with {options.publisher}'s insights on their CRM records.\n"
            "1. When the seller names an account, opportunity or deal, call findRecords with the words of its name. "
            "If several records match, list their names and ask which one; if none, say so and ask for another name.\n"
            "2. Then call getRecordInsights with the recordType, recordId and crmOrgUrl that findRecords returned, "
            "in the seller's language.\n"
            "3. Answer only from what getRecordInsights returned. Cite every item with its url. Lead with key sales "
            "info, then the latest activities, then related records. If a list has more than the digest shows, say "
            "so and point to the record's link.\n"
            "4. Never invent records, figures or dates, and never answer about a record you did not find."
        ),
        "conversation_starters": [
            {"title": "What's new", "text": "What's new with the Fabrikam renewal?"},
            {"title": "Latest activities", "text": "What were the latest activities on Northwind?"},
        ],
        "actions": [{"id": "salesInsights", "file": "ai-plugin.json"}],
    }


def build_manifest(options: AgentOptions) -> dict[str, Any]:
    return {
        "$schema": APP_SCHEMA,
        "manifestVersion": "1.24",
        "version": options.version,
        "id": options.app_id,
        "developer": {
            "name": options.publisher,
            "websiteUrl": options.website,
            "privacyUrl": options.privacy_policy,
            "termsOfUseUrl": options.terms_of_use,
        },
        "icons": {"color": "color.png", "outline": "outline.png"},
        "name": {"short": options.short_name, "full": options.name},
        "description": {
            "short": f"{options.publisher} insights in the Sales chat.",
            "full": (
                f"Ask about your accounts and opportunities by name in the Sales chat and get {options.publisher}'s "
                "key sales info, related records and latest activities, with links to the sources."
            ),
        },
        "accentColor": options.brand_color,
        "copilotAgents": {"declarativeAgents": [{"id": "salesInsightsAgent", "file": "declarativeAgent.json"}]},
        "permissions": ["identity"],
        "validDomains": [options.host],
    }


def render_outline(size: int = 32) -> bytes:
    """The outline icon: the same bars in white on transparency, as Teams asks."""
    from PIL import Image, ImageDraw  # Pillow (a dev dependency) only when the icons are drawn

    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    for i, height in enumerate((12, 18, 24)):
        x0 = 5 + i * 8
        draw.rectangle((x0, size - 4 - height, x0 + 5, size - 4), fill=(255, 255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()


def render_mcp_package(options: AgentOptions) -> dict[str, bytes]:
    """The second package: the agent's tools through the MCP endpoint (`agent-mcp/`)."""
    tools = build_mcp_tools()
    operations = [tool["name"] for tool in tools["tools"]]
    named = dataclasses.replace(options, short_name=f"{options.short_name} MCP", name=f"{options.name} (MCP)")
    return {
        "ai-plugin.json": _json(build_plugin(named, operations, mcp_tools=tools)),
        "declarativeAgent.json": _json(build_agent(named)),
        "manifest.json": _json(build_manifest(named)),
        "color.png": render_icon(options.brand_color, size=192, logo=128),
        "outline.png": render_outline(),
    }


def render_package(options: AgentOptions) -> dict[str, bytes]:
    openapi = build_openapi(options)
    operations = [op["operationId"] for path in openapi["paths"].values() for op in path.values()]
    return {
        "openapi.json": _json(openapi),
        "ai-plugin.json": _json(build_plugin(options, operations)),
        "declarativeAgent.json": _json(build_agent(options)),
        "manifest.json": _json(build_manifest(options)),
        "color.png": render_icon(options.brand_color, size=192, logo=128),
        "outline.png": render_outline(),
    }


SAMPLE = AgentOptions()
PLACEHOLDERS: tuple[tuple[str, str, str], ...] = (
    (SAMPLE.host, "--host", "the Function App's host name (`azd env get-value SERVICE_API_URI`, without https://)"),
    (SAMPLE.app_id_uri, "--app-id-uri", "the API's App ID URI (the api://... value in AUTH_AUDIENCES)"),
    (
        SAMPLE.oauth_reference_id,
        "--oauth-reference-id",
        "the OAuth client registration id from the Teams developer portal (docs/sales-chat.md)",
    ),
    (SAMPLE.app_id, "--app-id", "a Teams app id of your own (a new GUID, kept across versions)"),
    (MCP_SAMPLE_APP_ID, "--app-id", "a Teams app id of your own for the MCP package (another GUID)"),
)
"""The sample's values that `agent/` is generated with (what `--check` compares), each with the
option that replaces it: a package that still holds one fails when uploaded to Teams."""


def placeholders_in(files: dict[str, bytes]) -> list[tuple[str, str, str]]:
    """(sample value, option, what it is) of every placeholder still in the package's files."""
    texts = [content.decode("utf-8") for name, content in files.items() if name.endswith(".json")]
    return [entry for entry in PLACEHOLDERS if any(entry[0] in text for text in texts)]


def tools_size(files: dict[str, bytes]) -> int:
    """Bytes of what Sales copies (the tools' files), uncompressed."""
    return sum(len(files[name]) for name in (*TOOL_FILES, *MCP_TOOL_FILES) if name in files)


def write_package(files: dict[str, bytes], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (out / name).write_bytes(content)


def zip_package(files: dict[str, bytes]) -> bytes:
    """The app package: the files at the zip's root, with fixed dates (the same bytes each time)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])
    return buffer.getvalue()
