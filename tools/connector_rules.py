"""What Copilot for Sales and connector certification need of the package, as checks.

`problems(definition, properties, contract)` returns one line per broken rule, each starting with
the rule's name, so a test can show every rule able to fail on a deliberately broken package.
`parse_contract` reads the wire constants out of the contract document itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RULES", "ContractOperation", "parse_contract", "problems"]

RULES = [
    "operation-description",
    "input-description",
    "output-description",
    "operation-id",
    "test-connection",
    "required-inputs",
    "reserved-names",
    "summary",
    "visibility",
    "consumes",
    "responses",
    "string-maps",
    "info-description",
    "title",
    "metadata",
    "x-ms-summary",
    "input-enums",
    "api-properties",
    "swagger-2.0",
]


@dataclass
class ContractOperation:
    section: str
    description: str
    operation_id: str | None
    method: str
    inputs: dict[str, str] = field(default_factory=dict)
    required_inputs: set[str] = field(default_factory=set)
    outputs: dict[str, str] = field(default_factory=dict)


_QUOTED = re.compile(r'"([^"]+)"')
_ROW = re.compile(r"^\|\s*([A-Za-z]+)\s*\|\s*([^|]*)\|\s*([^|]*)\|\s*(.*)\|\s*$")
_INLINE = re.compile(r'(\w+)(?: \([^)]*\))? — "([^"]+)"')


def parse_contract(path: Path) -> tuple[list[ContractOperation], dict[str, str], dict[str, str]]:
    """The extension operations of the contract, and the email model's and related entity's field
    descriptions (given inline in §4)."""
    text = path.read_text(encoding="utf-8")
    sections = re.split(r"^## (\d+)\. ", text, flags=re.MULTILINE)
    operations = []
    email_fields: dict[str, str] = {}
    entity_fields: dict[str, str] = {}
    for number, body in zip(sections[1::2], sections[2::2], strict=True):
        body = body.split("\n## ")[0]  # up to the next unnumbered section
        heading = body.splitlines()[0]
        method = "post" if "POST" in heading else "get"
        op_id = re.search(r"operationId `([^`]+)`", body)
        described = _QUOTED.search(body[body.index("API description:") :].splitlines()[1])
        if described is None:
            raise ValueError(f"§{number} of the contract has no quoted API description")
        op = ContractOperation(
            section=number,
            description=described.group(1),
            operation_id=op_id.group(1) if op_id else None,
            method=method,
        )
        table = "inputs"
        for line in body.splitlines():
            if line.startswith("| Output item"):
                table = "outputs"
            match = _ROW.match(line)
            if not match or match.group(1) in ("Input", "Output", "Body"):
                continue
            name, _, required, rest = match.groups()
            quoted = _QUOTED.search(rest)
            if not quoted:
                continue
            getattr(op, table)[name] = quoted.group(1)
            if table == "inputs" and required.strip() == "yes":
                op.required_inputs.add(name)
        if "Email model (`resourceData`)" in body:
            paragraph = body[body.index("Email model (`resourceData`)") :].split("\n\n")[0]
            email_fields = dict(_INLINE.findall(paragraph))
            related = body[body.index("Related entity:") :].split("\n\n")[0]
            entity_fields = {m.group(1): m.group(2) for m in re.finditer(r'(\w+) \([^)]*\) — "([^"]+)"', related)}
        operations.append(op)
    return operations, email_fields, entity_fields


def _operations(definition: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, verbs in definition.get("paths", {}).items():
        for verb, op in verbs.items():
            yield path, verb, op


def _resolve(definition: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        return definition["definitions"][ref.split("/")[-1]]  # type: ignore[no-any-return]
    return schema


def _walk_properties(
    definition: dict[str, Any], schema: dict[str, Any], where: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    schema = _resolve(definition, schema)
    for name, prop in schema.get("properties", {}).items():
        yield f"{where}.{name}", prop
        yield from _walk_properties(definition, prop, f"{where}.{name}")
        if prop.get("type") == "array":
            yield from _walk_properties(definition, prop.get("items", {}), f"{where}.{name}[]")


def _inputs(definition: dict[str, Any], op: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for param in op.get("parameters", []):
        if param.get("in") == "body":
            body = _resolve(definition, param.get("schema", {}))
            for name, prop in body.get("properties", {}).items():
                found[name] = {**prop, "required": name in body.get("required", [])}
        else:
            found[param["name"]] = param
    return found


def _item_schema(definition: dict[str, Any], op: dict[str, Any]) -> dict[str, Any] | None:
    ok = op.get("responses", {}).get("200", {}).get("schema")
    if not ok:
        return None
    envelope = _resolve(definition, ok)
    items = envelope.get("properties", {}).get("value", {}).get("items")
    return _resolve(definition, items) if items else None


def problems(
    definition: dict[str, Any],
    properties: dict[str, Any],
    contract: tuple[list[ContractOperation], dict[str, str], dict[str, str]],
) -> list[str]:
    found: list[str] = []
    contract_ops, email_fields, entity_fields = contract
    by_description = {op.get("description"): (path, verb, op) for path, verb, op in _operations(definition)}

    # --- Copilot for Sales: operations, inputs and outputs by their exact descriptions ---------------
    for expected in contract_ops:
        match = by_description.get(expected.description)
        if match is None:
            found.append(
                f"operation-description: no operation has the §{expected.section} description {expected.description!r}"
            )
            continue
        _, verb, op = match
        if expected.operation_id and op.get("operationId") != expected.operation_id:
            found.append(
                f"operation-id: §{expected.section} must be {expected.operation_id}, not {op.get('operationId')}"
            )
        inputs = _inputs(definition, op)
        for name, description in expected.inputs.items():
            if name not in inputs:
                found.append(f"input-description: {op.get('operationId')} lacks input {name}")
            elif inputs[name].get("description") != description:
                found.append(
                    f"input-description: {op.get('operationId')}.{name} is {inputs[name].get('description')!r}"
                )
        for name, prop in inputs.items():
            if prop.get("required") and name not in expected.required_inputs:
                found.append(
                    f"required-inputs: {op.get('operationId')}.{name} is required but the contract does not require it"
                )
        if "resourceData" in inputs:
            email = inputs["resourceData"].get("properties", {})
            for name, description in email_fields.items():
                if email.get(name, {}).get("description") != description:
                    found.append(f"input-description: {op.get('operationId')}.resourceData.{name}")
        if "relatedEntities" in inputs:
            entity = inputs["relatedEntities"].get("items", {}).get("properties", {})
            for name, description in entity_fields.items():
                if entity.get(name, {}).get("description") != description:
                    found.append(f"input-description: {op.get('operationId')}.relatedEntities.{name}")
        item = _item_schema(definition, op)
        outputs = (item or {}).get("properties", {})
        for name, description in expected.outputs.items():
            if outputs.get(name, {}).get("description") != description:
                found.append(
                    f"output-description: {op.get('operationId')}.{name} is {outputs.get(name, {}).get('description')!r}"
                )

    # --- every operation ------------------------------------------------------------------------------
    test_connection_id = definition.get("x-ms-capabilities", {}).get("testConnection", {}).get("operationId")
    test_ops = [op for _, _, op in _operations(definition) if op.get("operationId") == "TestConnection"]
    if test_connection_id != "TestConnection" or not test_ops or test_ops[0].get("x-ms-visibility") != "internal":
        found.append("test-connection: TestConnection must exist, be internal and be x-ms-capabilities.testConnection")
    for _, verb, op in _operations(definition):
        op_id = op.get("operationId", "")
        if op_id != "TestConnection" and not op_id.startswith("scp-get-"):
            found.append(f"operation-id: {op_id} is not in the scp-get-* style")
        summary = op.get("summary", "")
        if not summary or len(summary) > 80 or summary[-1] in ".!?:;," or "/" in summary:
            found.append(f"summary: {op_id} summary {summary!r}")
        if op.get("x-ms-visibility") not in ("important", "advanced", "internal", "none"):
            found.append(f"visibility: {op_id} has no x-ms-visibility")
        params = op.get("parameters", [])
        has_body = any(p.get("in") == "body" for p in params)
        if verb == "post" and op.get("consumes") != ["application/json"]:
            found.append(f"consumes: {op_id} must declare consumes application/json")
        if verb == "get" and has_body:
            found.append(f"consumes: {op_id} is a GET with a body")
        for name in _inputs(definition, op):
            if name.lower() in ("connectorid", "connectionid"):
                found.append(f"reserved-names: {op_id} has input {name}")
        responses = op.get("responses", {})
        if "default" in responses:
            found.append(f"responses: {op_id} declares a default response")
        wanted = ["400", "401", "403", "404", "429", "500"] + (["413"] if verb == "post" else [])
        for status in wanted:
            schema = responses.get(status, {}).get("schema", {})
            if schema.get("$ref") != "#/definitions/ApiError":
                found.append(f"responses: {op_id} {status} must be ApiError")
        if op_id != "TestConnection":
            ok = _resolve(definition, responses.get("200", {}).get("schema", {}))
            props = ok.get("properties", {})
            if (
                props.get("value", {}).get("type") != "array"
                or props.get("hasMoreResults", {}).get("type") != "boolean"
            ):
                found.append(f"responses: {op_id} 200 is not {{value, hasMoreResults}}")
            item = _item_schema(definition, op) or {}
            extra = item.get("properties", {}).get("additionalProperties")
            if extra is not None and not (
                extra.get("type") == "object" and extra.get("additionalProperties") == {"type": "string"}
            ):
                found.append(f"string-maps: {op_id} additionalProperties must be a string map")
        for param in params:
            if param.get("in") != "body" and (not param.get("description") or not param.get("x-ms-summary")):
                found.append(f"x-ms-summary: {op_id} parameter {param.get('name')} lacks description or x-ms-summary")
            if param.get("in") == "body" and not param.get("x-ms-summary"):
                found.append(f"x-ms-summary: {op_id} body parameter lacks x-ms-summary")
            if param.get("name") in ("crmType", "recordType") and "enum" in param:
                found.append(f"input-enums: {op_id}.{param.get('name')} declares an enum")
        for name, prop in _inputs(definition, op).items():
            if name in ("crmType", "recordType") and "enum" in prop:
                found.append(f"input-enums: {op_id}.{name} declares an enum")
    for name, schema in definition.get("definitions", {}).items():
        for where, prop in _walk_properties(definition, schema, name):
            if not prop.get("x-ms-summary") or not prop.get("description"):
                found.append(f"x-ms-summary: {where} lacks description or x-ms-summary")

    # --- the package ------------------------------------------------------------------------------------
    info = definition.get("info", {})
    if not 30 <= len(info.get("description", "")) <= 500:
        found.append("info-description: info.description must be 30 to 500 characters")
    title = info.get("title", "")
    if not title or len(title) > 30 or re.search(r"\b(api|connector)\b", title, re.IGNORECASE):
        found.append(f"title: {title!r} must be at most 30 characters, without API or Connector")
    if not definition.get("x-ms-connector-metadata") or not info.get("x-ms-keywords"):
        found.append("metadata: x-ms-connector-metadata and info.x-ms-keywords are required")
    found += _properties_problems(properties)
    try:
        from openapi_spec_validator import validate  # a dev dependency, only for this rule

        validate(definition)
    except Exception as exc:  # noqa: BLE001 - any validator complaint is a finding
        found.append(f"swagger-2.0: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    if definition.get("swagger") != "2.0":
        found.append("swagger-2.0: swagger must be 2.0")
    return found


def _properties_problems(properties: dict[str, Any]) -> list[str]:
    props = properties.get("properties", {})
    oauth = props.get("connectionParameters", {}).get("token", {}).get("oAuthSettings", {})
    custom = oauth.get("customParameters", {})
    checks = [
        (oauth.get("identityProvider") == "aad", "identityProvider must be aad"),
        (custom.get("tenantId", {}).get("value") == "common", "customParameters.tenantId must be common"),
        (bool(custom.get("resourceUri", {}).get("value")), "customParameters.resourceUri (the App ID URI) is required"),
        (
            custom.get("enableOnbehalfOfLogin", {}).get("value") == "true",
            'customParameters.enableOnbehalfOfLogin must be "true"',
        ),
        (
            oauth.get("properties", {}).get("IsOnbehalfofLoginSupported") is True,
            "IsOnbehalfofLoginSupported must be true",
        ),
        (bool(oauth.get("redirectMode")), "a redirectMode is required"),
        (
            str(props.get("iconBrandColor", "")).lower() not in ("", "#007ee5", "#ffffff"),
            "iconBrandColor must be set and not #007ee5 or #ffffff",
        ),
    ]
    return [f"api-properties: {message}" for ok, message in checks if not ok]
