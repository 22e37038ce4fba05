"""The connector package: generated from the code, never drifting, and checked the way Copilot
for Sales and certification would check it. Every rule is shown able to fail."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONTRACT, HANDBOOK_CONTRACT
from tools.connector import ConnectorOptions, render_package
from tools.connector_rules import RULES, parse_contract, problems
from tools.contract_check import registered_operations

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "connector"


@pytest.fixture(scope="module")
def contract() -> Any:
    assert CONTRACT.exists(), f"the contract is expected at {CONTRACT}"
    return parse_contract(CONTRACT)


@pytest.fixture(scope="module")
def fresh() -> dict[str, bytes]:
    return render_package(registered_operations(), ConnectorOptions())


@pytest.fixture
def definition(fresh: dict[str, bytes]) -> dict[str, Any]:
    return json.loads(fresh["apiDefinition.swagger.json"])


@pytest.fixture
def properties(fresh: dict[str, bytes]) -> dict[str, Any]:
    return json.loads(fresh["apiProperties.json"])


def test_committed_package_matches_a_fresh_generation(fresh: dict[str, bytes]) -> None:
    for name, content in fresh.items():
        assert (PACKAGE / name).read_bytes() == content, f"connector/{name} is stale: run python3 manage.py connector"


def test_a_changed_model_description_is_drift(monkeypatch: pytest.MonkeyPatch, fresh: dict[str, bytes]) -> None:
    from extensions.sales_highlights import SalesHighlight

    monkeypatch.setattr(SalesHighlight.model_fields["title"], "description", "A reworded description.")
    changed = render_package(registered_operations(), ConnectorOptions())
    assert changed["apiDefinition.swagger.json"] != (PACKAGE / "apiDefinition.swagger.json").read_bytes()
    assert changed["apiDefinition.swagger.json"] != fresh["apiDefinition.swagger.json"]


def test_the_check_command_reports_drift(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "connector"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(ROOT / "manage.py"), "connector", "--out", str(out), *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT)

    assert run().returncode == 0
    assert run("--check").returncode == 0
    (out / "apiDefinition.swagger.json").write_text("{}")
    result = run("--check")
    assert result.returncode == 1 and "apiDefinition.swagger.json" in result.stderr


def test_generated_package_passes_every_rule(
    definition: dict[str, Any], properties: dict[str, Any], contract: Any
) -> None:
    assert problems(definition, properties, contract) == []


def test_the_contract_was_read(contract: Any) -> None:
    operations, email_fields, entity_fields = contract
    assert len(operations) == 5
    assert sum(len(op.inputs) + len(op.outputs) for op in operations) == 6 + 7 + 6 + 5 + 8 + 5 + 6 + 1 + 9 + 6
    assert len(email_fields) == 10 and len(entity_fields) == 3
    assert operations[3].outputs["insight"].startswith("This  output")  # two spaces, as published


def test_package_shape(definition: dict[str, Any], properties: dict[str, Any], fresh: dict[str, bytes]) -> None:
    assert definition["swagger"] == "2.0"
    assert definition["x-ms-capabilities"] == {"testConnection": {"operationId": "TestConnection", "parameters": {}}}
    oauth = properties["properties"]["connectionParameters"]["token"]["oAuthSettings"]
    assert oauth["clientId"] == "[[CLIENT_ID]]"  # a placeholder, never a real id
    assert "clientSecret" not in json.dumps(properties)
    readme = fresh["README.md"].decode()
    for section in (
        "## Publisher",
        "## Prerequisites",
        "## Supported Operations",
        "## Obtaining Credentials",
        "## Known Issues and Limitations",
        "## Deployment Instructions",
    ):
        assert section in readme
    icon = fresh["icon.png"]
    assert icon[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(icon[16:20], "big") == int.from_bytes(icon[20:24], "big") == 230


def test_every_operation_the_app_serves_is_in_the_definition(definition: dict[str, Any]) -> None:
    declared = {(verb, "/api" + path) for path, verbs in definition["paths"].items() for verb in verbs}
    served = {(method.lower(), "/" + template) for method, template, _ in registered_operations()}
    assert declared == served


def test_options_flow_into_the_package(contract: Any) -> None:
    options = ConnectorOptions(
        host="insights.fabrikam.example",
        title="Fabrikam Insights",
        publisher="Fabrikam",
        brand_color="#123456",
        app_id_uri="api://fabrikam-insights",
    )
    files = render_package(registered_operations(), options)
    definition = json.loads(files["apiDefinition.swagger.json"])
    properties = json.loads(files["apiProperties.json"])
    assert definition["host"] == "insights.fabrikam.example" and definition["info"]["title"] == "Fabrikam Insights"
    assert properties["properties"]["iconBrandColor"] == "#123456"
    custom = properties["properties"]["connectionParameters"]["token"]["oAuthSettings"]["customParameters"]
    assert custom["resourceUri"] == {"value": "api://fabrikam-insights"}
    assert problems(definition, properties, contract) == []


# ---- each rule can fail -------------------------------------------------------------------------------

Breaker = Callable[[dict[str, Any], dict[str, Any]], None]


def _op(d: dict[str, Any], op_id: str) -> dict[str, Any]:
    return next(op for verbs in d["paths"].values() for op in verbs.values() if op["operationId"] == op_id)


def _param(d: dict[str, Any], op_id: str, name: str) -> dict[str, Any]:
    return next(p for p in _op(d, op_id)["parameters"] if p["name"] == name)


def _set(path: list[str], value: Any) -> Breaker:
    def apply(d: dict[str, Any], p: dict[str, Any]) -> None:
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return apply


BREAKERS: list[tuple[str, Breaker]] = [
    (
        "operation-description",
        lambda d, p: _op(d, "scp-get-related-records").update(
            description="This action gets records related to a CRM record. The action enhances the existing skills of Copilot for Sales"
        ),
    ),
    (
        "input-description",
        lambda d, p: _param(d, "scp-get-related-activities", "startDateTime").update(description="Start."),
    ),
    (
        "input-description",
        lambda d, p: d["definitions"]["EmailInsightsRequest"]["properties"]["resourceData"]["properties"][
            "from"
        ].update(description="Sender."),
    ),
    (
        "output-description",
        _set(
            ["definitions", "EmailInsight", "properties", "insight", "description"],
            "This output indicates the text you would like to be included in the email summary.",
        ),
    ),
    ("operation-id", lambda d, p: _op(d, "scp-get-related-activities").update(operationId="GetActivities")),
    ("test-connection", lambda d, p: d.pop("x-ms-capabilities")),
    ("test-connection", lambda d, p: _op(d, "TestConnection").update({"x-ms-visibility": "important"})),
    ("required-inputs", lambda d, p: _param(d, "scp-get-related-records", "crmOrgUrl").update(required=True)),
    (
        "reserved-names",
        lambda d, p: _op(d, "scp-get-sales-highlights")["parameters"].append(
            {"name": "connectionId", "in": "query", "type": "string", "description": "x", "x-ms-summary": "x"}
        ),
    ),
    ("summary", lambda d, p: _op(d, "scp-get-sales-highlights").update(summary="Get key sales info.")),
    (
        "summary",
        lambda d, p: _op(d, "scp-get-sales-highlights").update(summary="Get key sales info and/or " + "x" * 80),
    ),
    ("visibility", lambda d, p: _op(d, "scp-get-sales-highlights").pop("x-ms-visibility")),
    ("consumes", lambda d, p: _op(d, "scp-get-email-insights-v2").pop("consumes")),
    (
        "consumes",
        lambda d, p: _op(d, "scp-get-sales-highlights")["parameters"].append(
            {"name": "body", "in": "body", "schema": {"type": "object"}, "x-ms-summary": "b"}
        ),
    ),
    ("responses", lambda d, p: _op(d, "scp-get-sales-highlights")["responses"].pop("429")),
    ("responses", lambda d, p: _op(d, "scp-get-content-suggestions")["responses"].pop("413")),
    (
        "responses",
        lambda d, p: _op(d, "scp-get-sales-highlights")["responses"].update(default={"description": "error"}),
    ),
    ("responses", _set(["definitions", "SalesHighlightList", "properties", "hasMoreResults", "type"], "string")),
    (
        "string-maps",
        _set(
            ["definitions", "RelatedRecord", "properties", "additionalProperties", "additionalProperties"],
            {"type": "object"},
        ),
    ),
    ("info-description", _set(["info", "description"], "Too short.")),
    ("title", _set(["info", "title"], "Relecloud Insights API")),
    ("title", _set(["info", "title"], "Relecloud Sales Insights for Copilot")),
    ("metadata", lambda d, p: d.pop("x-ms-connector-metadata")),
    ("metadata", lambda d, p: d["info"].pop("x-ms-keywords")),
    ("x-ms-summary", lambda d, p: _param(d, "scp-get-related-records", "top").pop("x-ms-summary")),
    (
        "x-ms-summary",
        lambda d, p: d["definitions"]["ContentSuggestion"]["properties"]["contentTitle"].pop("x-ms-summary"),
    ),
    (
        "input-enums",
        lambda d, p: _param(d, "scp-get-related-records", "crmType").update(enum=["Salesforce", "Dynamics365"]),
    ),
    (
        "api-properties",
        lambda d, p: p["properties"]["connectionParameters"]["token"]["oAuthSettings"]["customParameters"][
            "enableOnbehalfOfLogin"
        ].update(value="false"),
    ),
    (
        "api-properties",
        lambda d, p: p["properties"]["connectionParameters"]["token"]["oAuthSettings"]["customParameters"][
            "tenantId"
        ].update(value="organizations"),
    ),
    (
        "api-properties",
        lambda d, p: p["properties"]["connectionParameters"]["token"]["oAuthSettings"].update(
            identityProvider="oauth2"
        ),
    ),
    ("api-properties", lambda d, p: p["properties"].update(iconBrandColor="#007ee5")),
    (
        "api-properties",
        lambda d, p: p["properties"]["connectionParameters"]["token"]["oAuthSettings"]["properties"].pop(
            "IsOnbehalfofLoginSupported"
        ),
    ),
    (
        "swagger-2.0",
        lambda d, p: _op(d, "scp-get-sales-highlights").update(responses={"200": {"schema": {"type": "object"}}}),
    ),
]


def test_every_rule_has_a_breaker() -> None:
    assert {rule for rule, _ in BREAKERS} == set(RULES)


@pytest.mark.parametrize(("rule", "breaker"), BREAKERS, ids=[f"{i}-{r}" for i, (r, _) in enumerate(BREAKERS)])
def test_a_broken_package_fails_its_rule(
    definition: dict[str, Any], properties: dict[str, Any], contract: Any, rule: str, breaker: Breaker
) -> None:
    broken_definition, broken_properties = copy.deepcopy(definition), copy.deepcopy(properties)
    breaker(broken_definition, broken_properties)
    found = problems(broken_definition, broken_properties, contract)
    assert any(line.startswith(rule + ":") for line in found), found


def test_the_repositorys_copy_of_the_contract_is_the_handbooks() -> None:
    """contract/extension-points.md lets a clone without the handbook beside it run every test;
    where the handbook is present, the copy must not have drifted from it."""
    copy = ROOT / "contract" / "extension-points.md"
    if not HANDBOOK_CONTRACT.exists():
        pytest.skip("the handbook is not beside this clone")
    assert copy.read_bytes() == HANDBOOK_CONTRACT.read_bytes(), "refresh contract/ from ../shared/contract/"
