"""Generate the Power Platform connector package from the code.

The definition is built from what the FunctionApp registers (routes and methods of its triggers)
and from the pydantic models each operation declares (names, types, required, lengths, enums and
the contract's description strings), so the connector cannot drift from the functions.

    connector/apiDefinition.swagger.json   Swagger 2.0
    connector/apiProperties.json           Entra ID (aad) OAuth with on-behalf-of login
    connector/README.md                    the certification template's sections
    connector/icon.png                     230x230, the logo on the brand colour
"""

from __future__ import annotations

import io
import json
import types
import typing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from shared.contract import ApiError
from shared.http import Operation

__all__ = ["ConnectorOptions", "build_definition", "build_properties", "render_package", "write_package"]

ERROR_RESPONSES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    429: "Too many requests",
    500: "Internal server error",
}
POST_ONLY_ERRORS = {413: "Request too large"}
ALWAYS_ERRORS = {503: "Service unavailable"}


@dataclass(frozen=True)
class ConnectorOptions:
    host: str = "your-function-app.azurewebsites.net"
    base_path: str = "/api"
    title: str = "Relecloud Sales Insights"
    publisher: str = "Relecloud"
    brand_color: str = "#0f6b5c"
    app_id_uri: str = "api://00000000-0000-0000-0000-000000000000"
    client_id: str = "[[CLIENT_ID]]"
    website: str = "https://www.relecloud.example"
    privacy_policy: str = "https://www.relecloud.example/privacy"
    support_email: str = "support@relecloud.example"
    description: str = (
        "Brings Relecloud's account, opportunity, activity and content insights into Microsoft "
        "Copilot for Sales in Outlook and Teams: related records, key sales info, record summaries, "
        "email summaries and suggested files for email drafts."
    )


# ---- pydantic field -> Swagger 2.0 schema ------------------------------------------------------------


def _unwrap_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _base_type(annotation: Any) -> tuple[Any, list[Any]]:
    """(the bare type, metadata) through Annotated and Optional layers."""
    metadata: list[Any] = []
    annotation = _unwrap_optional(annotation)
    while get_origin(annotation) is typing.Annotated:
        args = get_args(annotation)
        annotation, metadata = args[0], [*metadata, *args[1:]]
        annotation = _unwrap_optional(annotation)
    return annotation, metadata


def _type_schema(annotation: Any, definitions: dict[str, Any]) -> dict[str, Any]:
    annotation, metadata = _base_type(annotation)
    schema: dict[str, Any]
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        # inline, so the contract's description sits on the property itself (Swagger 2.0
        # ignores the siblings of a $ref, and Copilot maps fields by description)
        return model_schema(annotation, definitions)
    if annotation is Any:
        return {}
    if origin is Literal:
        schema = {"type": "string", "enum": list(get_args(annotation))}
    elif annotation is bool:
        schema = {"type": "boolean"}
    elif annotation is int:
        schema = {"type": "integer", "format": "int32"}
    elif annotation is float:
        schema = {"type": "number", "format": "double"}
    elif annotation is datetime:
        schema = {"type": "string", "format": "date-time"}
    elif annotation is str:
        schema = {"type": "string"}
    elif origin is dict:
        schema = {"type": "object", "additionalProperties": _type_schema(get_args(annotation)[1], definitions)}
    elif origin is list:
        schema = {"type": "array", "items": _type_schema(get_args(annotation)[0], definitions)}
    else:
        raise TypeError(f"no Swagger 2.0 mapping for {annotation!r}")
    _constraints(schema, metadata)
    return schema


def _constraints(schema: dict[str, Any], metadata: list[Any]) -> None:
    for item in metadata:
        if schema.get("type") in ("integer", "number"):
            if isinstance(item, annotated_types.Ge):
                schema["minimum"] = item.ge
            if isinstance(item, annotated_types.Le):
                schema["maximum"] = item.le
        min_length = getattr(item, "min_length", None)
        max_length = getattr(item, "max_length", None)
        if isinstance(item, annotated_types.MinLen):
            min_length = item.min_length
        if isinstance(item, annotated_types.MaxLen):
            max_length = item.max_length
        key_min, key_max = ("minLength", "maxLength") if schema.get("type") == "string" else ("minItems", "maxItems")
        if min_length is not None and schema.get("type") in ("string", "array"):
            schema[key_min] = min_length
        if max_length is not None and schema.get("type") in ("string", "array"):
            schema[key_max] = max_length


def _field_schema(name: str, field: FieldInfo, definitions: dict[str, Any]) -> dict[str, Any]:
    schema = _type_schema(field.annotation, definitions)
    _constraints(schema, list(field.metadata))
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "format" in extra:
        schema["format"] = extra["format"]
    if field.description:
        schema["description"] = field.description
    schema["x-ms-summary"] = extra.get("x-ms-summary", name)
    if "x-ms-visibility" in extra:
        schema["x-ms-visibility"] = extra["x-ms-visibility"]
    return schema


def _wire_name(name: str, field: FieldInfo) -> str:
    return field.alias or name


def _output_required(field: FieldInfo) -> bool:
    return field.is_required()


def model_schema(model: type[BaseModel], definitions: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field in model.model_fields.items():
        wire_name = _wire_name(name, field)
        properties[wire_name] = _field_schema(wire_name, field, definitions)
        if field.is_required():
            required.append(wire_name)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    params = []
    scratch: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        schema = _type_schema(field.annotation, scratch)
        _constraints(schema, list(field.metadata))
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        param: dict[str, Any] = {"name": _wire_name(name, field), "in": "query", "required": field.is_required()}
        kept = ("type", "format", "enum", "minLength", "maxLength", "minimum", "maximum")
        param.update({k: v for k, v in schema.items() if k in kept})
        param["description"] = field.description or ""
        param["x-ms-summary"] = extra.get("x-ms-summary", name)
        params.append(param)
    return params


# ---- the definition -----------------------------------------------------------------------------------


def _responses(spec: Operation[Any], method: str, definitions: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if spec.response_model is not None:
        name = spec.response_model.__name__
        definitions[name] = model_schema(spec.response_model, definitions)
        responses["200"] = {"description": "OK", "schema": {"$ref": f"#/definitions/{name}"}, "x-ms-summary": "OK"}
    else:
        assert spec.item_model is not None
        item = spec.item_model.__name__
        definitions[item] = model_schema(spec.item_model, definitions)
        envelope = f"{item}List"
        definitions[envelope] = {
            "type": "object",
            "required": ["value", "hasMoreResults"],
            "properties": {
                "value": {
                    "type": "array",
                    "items": {"$ref": f"#/definitions/{item}"},
                    "description": "The items of this page.",
                    "x-ms-summary": "Value",
                },
                "hasMoreResults": {
                    "type": "boolean",
                    "description": "Whether more items exist past this page.",
                    "x-ms-summary": "Has more results",
                },
            },
        }
        responses["200"] = {"description": "OK", "schema": {"$ref": f"#/definitions/{envelope}"}, "x-ms-summary": "OK"}
    errors = dict(ERROR_RESPONSES)
    if method == "post":
        errors.update(POST_ONLY_ERRORS)
    errors.update(ALWAYS_ERRORS)
    for status, text in sorted(errors.items()):
        responses[str(status)] = {
            "description": text,
            "schema": {"$ref": "#/definitions/ApiError"},
            "x-ms-summary": text,
        }
    return responses


def build_definition(operations: list[tuple[str, str, Operation[Any]]], options: ConnectorOptions) -> dict[str, Any]:
    """`operations` are (method, route template with the prefix, spec), as the app registers them."""
    definitions: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    prefix = options.base_path.strip("/")
    for method, template, spec in operations:
        path = "/" + template.strip("/")
        if prefix and path.startswith(f"/{prefix}/"):
            path = path[len(prefix) + 1 :]
        verb = method.lower()
        entry: dict[str, Any] = {
            "operationId": spec.operation_id,
            "summary": spec.summary,
            "description": spec.description,
            "x-ms-visibility": spec.visibility,
            "produces": ["application/json"],
            "parameters": [],
        }
        if spec.query_model is not None:
            entry["parameters"] = _query_parameters(spec.query_model)
        if spec.body_model is not None:
            name = spec.body_model.__name__
            definitions[name] = model_schema(spec.body_model, definitions)
            entry["consumes"] = ["application/json"]
            entry["parameters"] = [
                {
                    "name": "body",
                    "in": "body",
                    "required": True,
                    "schema": {"$ref": f"#/definitions/{name}"},
                    "description": "The request.",
                    "x-ms-summary": "Request",
                }
            ]
        entry["responses"] = _responses(spec, verb, definitions)
        if spec.visibility != "internal":
            entry["x-ms-openai-data"] = {"openai-enabled": True}
        paths.setdefault(path, {})[verb] = entry
    definitions["ApiError"] = _api_error_schema()
    test_connection = next((s.operation_id for _, _, s in operations if s.operation_id == "TestConnection"), None)
    definition: dict[str, Any] = {
        "swagger": "2.0",
        "info": {
            "title": options.title,
            "description": options.description,
            "version": "1.0.0",
            "contact": {"name": f"{options.publisher} Support", "url": options.website, "email": options.support_email},
            "x-ms-keywords": ["Copilot for Sales", "Sales agent", "sales insights", options.publisher],
            "x-ms-openai-published-to-copilots": [
                {"AICopilot-enabled": True, "AICopilotName": "Microsoft Sales Copilot"}
            ],
        },
        "host": options.host,
        "basePath": options.base_path,
        "schemes": ["https"],
        "consumes": [],
        "produces": ["application/json"],
        "paths": dict(sorted(paths.items())),
        "definitions": dict(sorted(definitions.items())),
        "parameters": {},
        "responses": {},
        "securityDefinitions": {
            "oauth2-auth": {
                "type": "oauth2",
                "flow": "accessCode",
                "authorizationUrl": "https://login.microsoftonline.com/common/oauth2/authorize",
                "tokenUrl": "https://login.windows.net/common/oauth2/authorize",
                "scopes": {"user_impersonation": "user_impersonation"},
            }
        },
        "security": [{"oauth2-auth": ["user_impersonation"]}],
        "tags": [],
        "x-ms-connector-metadata": [
            {"propertyName": "Website", "propertyValue": options.website},
            {"propertyName": "Privacy policy", "propertyValue": options.privacy_policy},
            {"propertyName": "Categories", "propertyValue": "Sales and CRM;AI"},
        ],
    }
    if test_connection:
        definition["x-ms-capabilities"] = {"testConnection": {"operationId": test_connection, "parameters": {}}}
    return definition


def _api_error_schema() -> dict[str, Any]:
    schema = model_schema(ApiError, {})
    schema["properties"]["details"] = {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": ApiError.model_fields["details"].description,
        "x-ms-summary": "details",
    }
    return schema


def build_properties(options: ConnectorOptions) -> dict[str, Any]:
    return {
        "properties": {
            "connectionParameters": {
                "token": {
                    "type": "oauthSetting",
                    "oAuthSettings": {
                        "identityProvider": "aad",
                        "clientId": options.client_id,
                        "scopes": ["user_impersonation"],
                        "redirectMode": "GlobalPerConnector",
                        "redirectUrl": "https://global.consent.azure-apim.net/redirect",
                        "properties": {
                            "IsFirstParty": "False",
                            "AzureActiveDirectoryResourceId": options.app_id_uri,
                            "IsOnbehalfofLoginSupported": True,
                        },
                        "customParameters": {
                            "loginUri": {"value": "https://login.microsoftonline.com"},
                            "tenantId": {"value": "common"},
                            "resourceUri": {"value": options.app_id_uri},
                            "enableOnbehalfOfLogin": {"value": "true"},
                        },
                    },
                },
                "token:TenantId": {
                    "type": "string",
                    "metadata": {"sourceType": "AzureActiveDirectoryTenant"},
                    "uiDefinition": {"constraints": {"required": "false", "hidden": "true"}},
                },
            },
            "iconBrandColor": options.brand_color,
            "capabilities": [],
            "publisher": options.publisher,
            "stackOwner": options.publisher,
        }
    }


def render_readme(definition: dict[str, Any], options: ConnectorOptions) -> str:
    rows = []
    for path, verbs in definition["paths"].items():
        for verb, op in verbs.items():
            if op["x-ms-visibility"] == "internal":
                continue
            rows.append(
                f"- **{op['summary']}** (`{op['operationId']}`, `{verb.upper()} {definition['basePath']}{path}`): {op['description']}"
            )
    operations = "\n".join(rows)
    return f"""# {options.title}

{options.description}

## Publisher: {options.publisher}

## Prerequisites

- A {options.publisher} subscription with the Copilot for Sales integration enabled for your organization.
- Microsoft Copilot for Sales (the Sales agent) in Outlook or Teams, with Dynamics 365 or Salesforce as the CRM.
- A Microsoft Entra ID administrator of your organization to grant consent to the connector.

## Supported Operations

{operations}

Every operation answers within 5 seconds with `{{"value": [...], "hasMoreResults": ...}}`, localizes
its natural-language output per `Accept-Language`, and answers errors as `ApiError`
(`errorCode`, `errorMessage`, `activityId`, `details`). A test-connection operation
(`TestConnection`, internal) proves the connection works.

## Obtaining Credentials

The connector signs in with Microsoft Entra ID (OAuth 2.0, on-behalf-of login); there is no
API key. Ask {options.publisher} ({options.support_email}) to onboard your tenant, then have your
Entra ID administrator grant admin consent to the {options.title} application. Sellers sign in
with their work accounts; each sees only their own organization's insights.

## Known Issues and Limitations

- Only the first email-summary insight is shown in the email body; the rest appear in the pane.
- Key sales info titles are limited to 20 characters and descriptions to 130 characters.
- At most 100 items are returned per call (`top` above 100 is reduced to 100).
- Copilot for Sales may take time to show a newly enabled connector's insights.

## Deployment Instructions

1. Deploy the {options.publisher} insights service (an Azure Functions app) and note its host name.
2. Create the connector from this folder with `paconn create --api-def apiDefinition.swagger.json --api-prop apiProperties.json --icon icon.png`,
   or import `apiDefinition.swagger.json` in the Power Apps maker portal (Custom connectors > New > Import an OpenAPI file),
   then set the host, the client id and secret of the connector's Entra ID app, and the resource URI (the API's App ID URI).
3. In Copilot Studio, create the actions for Copilot for Sales from the connector and publish them.
4. In the Copilot for Sales (Sales) settings of the Power Platform admin center, enable the actions for your organization.
"""


def render_package(operations: list[tuple[str, str, Operation[Any]]], options: ConnectorOptions) -> dict[str, bytes]:
    """Every file of the package, by name: what `write_package` writes and the drift test compares."""
    definition = build_definition(operations, options)
    return {
        "apiDefinition.swagger.json": (json.dumps(definition, indent=2, ensure_ascii=False) + "\n").encode(),
        "apiProperties.json": (json.dumps(build_properties(options), indent=2) + "\n").encode(),
        "README.md": render_readme(definition, options).encode(),
        "icon.png": render_icon(options.brand_color),
    }


def write_package(files: dict[str, bytes], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (out / name).write_bytes(content)


def render_icon(color: str, size: int = 230, logo: int = 160) -> bytes:
    """The logo (an insight bubble over rising bars) in white, about `logo` px inside a
    `size` square filled with the brand colour. Deterministic, so regeneration shows no diff."""
    from PIL import Image, ImageDraw  # Pillow (a dev dependency) only when the icon is drawn

    image = Image.new("RGB", (size, size), color)
    draw = ImageDraw.Draw(image)
    left = top = (size - logo) // 2
    white = "#ffffff"
    bar, gap = logo // 8, logo // 16
    for i, height in enumerate((0.4, 0.6, 0.8)):
        x0 = left + i * (bar + gap)
        draw.rounded_rectangle((x0, top + logo - int(logo * height), x0 + bar, top + logo), radius=bar // 3, fill=white)
    r = logo * 3 // 16
    cx, cy = left + logo - r, top + r
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=white)
    draw.polygon([(cx - r // 3, cy + r - 3), (cx - r, cy + r + r // 2), (cx + r // 4, cy + r - 6)], fill=white)
    draw.ellipse((cx - r // 3, cy - r // 3, cx + r // 3, cy + r // 3), fill=color)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
