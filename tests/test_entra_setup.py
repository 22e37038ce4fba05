"""`manage.py entra-setup` against a stand-in for Microsoft Graph (tests/fake_graph.py): a first
run creates the registrations and writes the settings, a second changes nothing, a refusal is one
clear message, and a run that stopped half way is finished without duplicates."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from tests.fake_graph import FakeCredential, FakeGraph
from tools.entra import (
    CHAT_REDIRECT,
    CONNECTOR_REDIRECT,
    EntraSetupError,
    EnvFile,
    GraphClient,
    SetupResult,
    describe,
    env_file_for,
    run_setup,
)

TENANT = "5C1E9A7D-2B4F-4C6E-8A1D-3F5B7C9E1A20"


def setup(graph: FakeGraph, env_path: Path, shown: list[tuple[str, str, str]] | None = None) -> SetupResult:
    client = GraphClient(FakeCredential(), transport=graph.transport())
    try:
        return run_setup(
            client,
            EnvFile.read(env_path),
            tenant_id=TENANT,
            name="Relecloud Sales Insights",
            show_secret=lambda label, app, secret: (shown if shown is not None else []).append((label, app, secret)),
        )
    finally:
        client.close()


def test_a_first_run_creates_every_registration_and_writes_the_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    graph, env_path = FakeGraph(), tmp_path / ".azure" / "dev" / ".env"
    env_path.parent.mkdir(parents=True)
    env_path.write_text('AZURE_ENV_NAME="dev"\n# a comment azd never wrote\nAZURE_LOCATION="swedencentral"\n')
    shown: list[tuple[str, str, str]] = []
    result = setup(graph, env_path, shown)

    assert result.created == ["API", "connector", "Sales chat tools", "writer service"]
    env = EnvFile.read(env_path).values
    api = graph.app(env["ENTRA_API_APP_ID"])
    connector, chat, writer = (graph.app(env[f"ENTRA_{k}_APP_ID"]) for k in ("CONNECTOR", "CHAT", "WRITER"))
    assert len(graph.applications) == 4

    # the API: App ID URI, the scope, the writer role, v2 tokens, multi-tenant, both clients pre-authorized
    assert api["identifierUris"] == [f"api://{api['appId']}"]
    assert api["signInAudience"] == "AzureADMultipleOrgs"
    assert api["api"]["requestedAccessTokenVersion"] == 2
    (scope,) = api["api"]["oauth2PermissionScopes"]
    assert (scope["value"], scope["type"], scope["isEnabled"]) == ("user_impersonation", "User", True)
    (role,) = api["appRoles"]
    assert (role["value"], role["allowedMemberTypes"]) == ("Insights.Write", ["Application"])
    assert {p["appId"]: p["delegatedPermissionIds"] for p in api["api"]["preAuthorizedApplications"]} == {
        connector["appId"]: [scope["id"]],
        chat["appId"]: [scope["id"]],
    }
    # the clients: redirects and the permission each needs
    assert connector["web"]["redirectUris"] == [CONNECTOR_REDIRECT]
    assert chat["web"]["redirectUris"] == [CHAT_REDIRECT]
    for client in (connector, chat):
        assert client["signInAudience"] == "AzureADMultipleOrgs"
        assert client["requiredResourceAccess"] == [
            {"resourceAppId": api["appId"], "resourceAccess": [{"id": scope["id"], "type": "Scope"}]}
        ]
    assert writer["signInAudience"] == "AzureADMyOrg"
    assert writer["requiredResourceAccess"][0]["resourceAccess"] == [{"id": role["id"], "type": "Role"}]
    # the writer holds the role on the API's service principal
    api_sp = next(sp for sp in graph.service_principals.values() if sp["appId"] == api["appId"])
    writer_sp = next(sp for sp in graph.service_principals.values() if sp["appId"] == writer["appId"])
    assert graph.assignments == [
        {
            "id": graph.assignments[0]["id"],
            "principalId": writer_sp["id"],
            "resourceId": api_sp["id"],
            "appRoleId": role["id"],
        }
    ]

    # the settings the app, azd and the connector read
    assert env["AUTH_AUDIENCES"] == f"api://{api['appId']},{api['appId']}"
    assert env["AUTH_ALLOWED_CLIENT_APPS"] == f"{connector['appId']},{chat['appId']}"
    assert env["AUTH_WRITER_CLIENT_APPS"] == writer["appId"]
    assert env["AUTH_WRITER_HOME_TENANTS"] == TENANT.lower()
    assert env["AUTH_WRITER_TENANT_GRANTS"] == f"{writer['appId']}=*"
    assert env["CONNECTOR_CLIENT_ID"] == connector["appId"]
    assert env["AZURE_LOCATION"] == "swedencentral"
    assert "# a comment azd never wrote" in env_path.read_text()

    # one secret per client, handed over once, stored and logged nowhere
    assert [(label, app) for label, app, _ in shown] == [
        ("connector", connector["appId"]),
        ("Sales chat tools", chat["appId"]),
        ("writer service", writer["appId"]),
    ]
    assert [secret for *_, secret in shown] == graph.secrets_issued
    for secret in graph.secrets_issued:
        assert secret not in env_path.read_text()
        assert secret not in caplog.text


def test_a_second_run_changes_nothing(tmp_path: Path) -> None:
    graph, env_path = FakeGraph(), tmp_path / "entra.env"
    setup(graph, env_path)
    before_env, before_apps = env_path.read_text(), repr(graph.applications)
    writes = len(graph.writes())
    shown: list[tuple[str, str, str]] = []

    result = setup(graph, env_path, shown)

    assert graph.writes()[writes:] == []  # only reads
    assert (result.created, result.updated, result.settings_changed, result.graph_changes) == ([], [], [], 0)
    assert list(describe(result)) == ["Entra ID registrations are as they should be; nothing changed."]
    assert shown == []
    assert env_path.read_text() == before_env
    assert repr(graph.applications) == before_apps


def test_drift_is_put_back_and_only_that(tmp_path: Path) -> None:
    graph, env_path = FakeGraph(), tmp_path / "entra.env"
    setup(graph, env_path)
    env = EnvFile.read(env_path).values
    connector = graph.app(env["ENTRA_CONNECTOR_APP_ID"])
    connector["web"]["redirectUris"] = []  # someone removed it in the portal
    api = graph.app(env["ENTRA_API_APP_ID"])
    api["api"]["preAuthorizedApplications"] = []
    graph.assignments.clear()
    writes = len(graph.writes())

    result = setup(graph, env_path)

    assert result.created == []
    assert sorted(result.updated) == ["API", "connector", "writer service"]
    assert graph.app(env["ENTRA_CONNECTOR_APP_ID"])["web"]["redirectUris"] == [CONNECTOR_REDIRECT]
    assert len(graph.app(env["ENTRA_API_APP_ID"])["api"]["preAuthorizedApplications"]) == 2
    assert len(graph.assignments) == 1
    assert len(graph.writes()) - writes == 3  # the API's PATCH, the connector's, one assignment
    assert len(graph.applications) == 4


def test_permission_denied_is_one_clear_message_and_changes_nothing(tmp_path: Path) -> None:
    graph, env_path = FakeGraph(denied={("POST", "/v1.0/applications")}), tmp_path / "entra.env"
    with pytest.raises(EntraSetupError) as raised:
        setup(graph, env_path)
    message = str(raised.value)
    assert "refused to create the application 'Relecloud Sales Insights API'" in message
    assert "Authorization_RequestDenied" in message
    assert "Application Developer" in message
    assert graph.applications == {}
    assert not env_path.exists()


def test_a_run_stopped_half_way_is_finished_without_duplicates(tmp_path: Path) -> None:
    # allowed to create applications but not to assign the writer's role (that needs an admin)
    graph, env_path = FakeGraph(denied={("POST", "/v1.0/servicePrincipals/")}), tmp_path / "entra.env"
    shown: list[tuple[str, str, str]] = []
    with pytest.raises(EntraSetupError, match="refused to assign the writer app role"):
        setup(graph, env_path, shown)
    assert len(graph.applications) == 4
    assert len(shown) == 3
    graph.denied.clear()

    result = setup(graph, env_path, shown)

    assert result.created == []
    assert result.updated == ["writer service"]
    assert len(graph.applications) == 4 and len(graph.assignments) == 1
    assert len(shown) == 3  # no second secret for a registration that already had one
    assert "AUTH_AUDIENCES" in result.settings_changed


class ReplicatingGraph(FakeGraph):
    """A service principal someone else creates between our read and our create: Graph then
    answers the create 409 `Request_MultipleObjectsWithSameKeyValue`."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path.startswith("/v1.0/servicePrincipals(appId="):
            app_id = path.split("'")[1]
            if not any(sp["appId"] == app_id for sp in self.service_principals.values()):
                self.requests.append((request.method, path))
                self._create_service_principal({"appId": app_id})
                return httpx.Response(404, json={"error": {"code": "Request_ResourceNotFound", "message": "not yet"}})
        return super().handle(request)


def test_a_service_principal_created_meanwhile_is_used(tmp_path: Path) -> None:
    graph = ReplicatingGraph()
    setup(graph, tmp_path / "entra.env")
    assert len(graph.service_principals) == 2
    assert graph.writes().count(("POST", "/v1.0/servicePrincipals")) == 2  # both answered 409
    assert len(graph.assignments) == 1


def test_the_env_file_is_the_azd_environment_when_there_is_one(tmp_path: Path) -> None:
    assert env_file_for(tmp_path) == tmp_path / ".entra.env"
    (tmp_path / ".azure").mkdir()
    (tmp_path / ".azure" / "config.json").write_text('{"version": 1, "defaultEnvironment": "prod"}')
    assert env_file_for(tmp_path) == tmp_path / ".azure" / "prod" / ".env"
    assert env_file_for(tmp_path, environment="dev") == tmp_path / ".azure" / "dev" / ".env"
    assert env_file_for(tmp_path, explicit=str(tmp_path / "x.env")) == tmp_path / "x.env"


def test_env_file_values_round_trip(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("A=\"1\"\nexport B=two\nC='three'\n")
    env = EnvFile.read(path)
    assert env.values == {"A": "1", "B": "two", "C": "three"}
    assert env.set("A", 'with "quotes" and \\ back') is True
    assert env.set("A", 'with "quotes" and \\ back') is False
    assert EnvFile.read(path).values["A"] == 'with "quotes" and \\ back'
    assert path.read_text().splitlines()[1:] == ["export B=two", "C='three'"]
