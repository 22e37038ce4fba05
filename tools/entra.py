"""`manage.py entra-setup`: the app registrations the product needs, through Microsoft Graph.

A one-time step an admin runs (never a pipeline: it should not hold rights to create app
registrations). It creates or updates, in the partner's own tenant:

- the API (this Function App): App ID URI `api://{appId}`, the delegated scope
  `user_impersonation`, the writer app role `Insights.Write`, v2 access tokens, multi-tenant;
- the connector's client: redirect `https://global.consent.azure-apim.net/redirect`, permission
  to the API's scope, pre-authorized on the API, multi-tenant, a client secret;
- the partner's writer service: the writer app role assigned (app-only), a client secret;
- the Sales chat tools' client: redirect `https://teams.microsoft.com/api/platform/v1.0/oAuthRedirect`,
  pre-authorized on the same scope, multi-tenant, a client secret.

It is keyed on the app ids it stores (`ENTRA_*_APP_ID` in the azd environment's `.env`, or a local
file), so a second run finds every registration, compares it with what it should be and changes
nothing when it already is. A client secret is made only when its registration is created, and
printed once to the terminal (never stored, never logged). The settings the app and the connector
need are written beside the ids: `AUTH_AUDIENCES`, `AUTH_ALLOWED_CLIENT_APPS`, the writer
settings, `CONNECTOR_CLIENT_ID`; `azd provision` passes them to the Function App.

Graph over REST with httpx; the token from azure-identity (the azd or Azure CLI sign-in).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx

__all__ = [
    "CHAT_REDIRECT",
    "CONNECTOR_REDIRECT",
    "EntraSetupError",
    "EnvFile",
    "GraphClient",
    "SetupResult",
    "env_file_for",
    "run_setup",
]

GRAPH = "https://graph.microsoft.com/v1.0"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
CONNECTOR_REDIRECT = "https://global.consent.azure-apim.net/redirect"
CHAT_REDIRECT = "https://teams.microsoft.com/api/platform/v1.0/oAuthRedirect"
SCOPE = "user_impersonation"
WRITER_ROLE = "Insights.Write"


class EntraSetupError(Exception):
    """Something the admin must act on, said in one message (no Graph payloads, no secrets)."""


class TokenSource(Protocol):
    def get_token(self, *scopes: str) -> Any: ...


# ---- the settings file: the azd environment's .env, or a local one --------------------------------

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


@dataclass
class EnvFile:
    """A dotenv file as azd writes it (`KEY="value"`): read, then updated key by key, every
    other line kept as it was."""

    path: Path
    values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> EnvFile:
        values: dict[str, str] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                match = _LINE.match(line)
                if match and not line.lstrip().startswith("#"):
                    values[match.group(1)] = _unquote(match.group(2))
        return cls(path, values)

    def get(self, name: str) -> str:
        return self.values.get(name, "")

    def set(self, name: str, value: str) -> bool:
        """Store `name`; False when it already held that value (the file is then untouched)."""
        if self.values.get(name) == value:
            return False
        lines = self.path.read_text(encoding="utf-8").splitlines() if self.path.exists() else []
        rendered = f'{name}="{_escape(value)}"'
        for i, line in enumerate(lines):
            match = _LINE.match(line)
            if match and match.group(1) == name and not line.lstrip().startswith("#"):
                lines[i] = rendered
                break
        else:
            lines.append(rendered)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.values[name] = value
        return True


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        inner = raw[1:-1]
        return inner.replace('\\"', '"').replace("\\\\", "\\") if raw[0] == '"' else inner
    return raw


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def env_file_for(root: Path, explicit: str | None = None, environment: str | None = None) -> Path:
    """Where the ids and settings go: `--env-file`, else the azd environment's `.env` (the one
    named, or azd's default environment), else `.entra.env` beside the code."""
    if explicit:
        return Path(explicit)
    name = environment
    config = root / ".azure" / "config.json"
    if not name and config.exists():
        name = json.loads(config.read_text(encoding="utf-8")).get("defaultEnvironment")
    if name:
        return root / ".azure" / name / ".env"
    return root / ".entra.env"


# ---- Graph ------------------------------------------------------------------------------------------


class GraphClient:
    """The few Graph calls the setup makes. Every error becomes an `EntraSetupError` naming the
    operation and Graph's error code and message (never a request or response body)."""

    def __init__(self, credential: TokenSource, transport: httpx.BaseTransport | None = None) -> None:
        self._credential = credential
        self._http = httpx.Client(base_url=GRAPH, transport=transport, timeout=30)
        self.changes = 0

    def close(self) -> None:
        self._http.close()

    def _request(self, what: str, method: str, url: str, json: Any = None) -> httpx.Response:
        token = self._credential.get_token(GRAPH_SCOPE).token
        try:
            response = self._http.request(method, url, json=json, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise EntraSetupError(f"could not reach Microsoft Graph to {what}: {type(exc).__name__}") from None
        if method != "GET" and response.is_success:
            self.changes += 1
        return response

    def _ok(self, what: str, response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        code, message = _graph_error(response)
        if response.status_code == 403 or code == "Authorization_RequestDenied":
            raise EntraSetupError(
                f"Microsoft Graph refused to {what} ({code}: {message}). The signed-in account needs "
                "a directory role that may manage app registrations (Application Developer to create "
                "them, Cloud Application Administrator to assign the writer role), or run this as an "
                "admin who has one."
            )
        raise EntraSetupError(f"Microsoft Graph could not {what}: HTTP {response.status_code} {code}: {message}")

    def application(self, app_id: str) -> dict[str, Any] | None:
        response = self._request("read an application", "GET", f"/applications(appId='{quote(app_id, safe='')}')")
        if response.status_code == 404:
            return None
        return dict(self._ok("read an application", response).json())

    def create_application(self, body: dict[str, Any]) -> dict[str, Any]:
        what = f"create the application {body.get('displayName')!r}"
        return dict(self._ok(what, self._request(what, "POST", "/applications", body)).json())

    def update_application(self, object_id: str, body: dict[str, Any]) -> None:
        what = "update an application"
        self._ok(what, self._request(what, "PATCH", f"/applications/{object_id}", body))

    def add_secret(self, object_id: str, name: str) -> str:
        what = "add a client secret"
        body = {"passwordCredential": {"displayName": name}}
        return str(
            self._ok(what, self._request(what, "POST", f"/applications/{object_id}/addPassword", body)).json()[
                "secretText"
            ]
        )

    def service_principal(self, app_id: str) -> dict[str, Any]:
        """The application's service principal in this tenant, created when there is none."""
        what = "read a service principal"
        response = self._request(what, "GET", f"/servicePrincipals(appId='{quote(app_id, safe='')}')")
        if response.status_code != 404:
            return dict(self._ok(what, response).json())
        what = "create a service principal"
        response = self._request(what, "POST", "/servicePrincipals", {"appId": app_id})
        if response.status_code == 409 or _graph_error(response)[0] == "Request_MultipleObjectsWithSameKeyValue":
            # created meanwhile (or replicating): read it again
            response = self._request(what, "GET", f"/servicePrincipals(appId='{quote(app_id, safe='')}')")
        return dict(self._ok(what, response).json())

    def assign_app_role(self, resource_sp: str, principal_sp: str, role_id: str) -> bool:
        """Grant `principal_sp` the app role `role_id` of `resource_sp`; False when it has it."""
        what = "read the API's app role assignments"
        response = self._ok(what, self._request(what, "GET", f"/servicePrincipals/{resource_sp}/appRoleAssignedTo"))
        for assignment in response.json().get("value", []):
            if assignment.get("principalId") == principal_sp and assignment.get("appRoleId") == role_id:
                return False
        what = "assign the writer app role"
        body = {"principalId": principal_sp, "resourceId": resource_sp, "appRoleId": role_id}
        self._ok(what, self._request(what, "POST", f"/servicePrincipals/{resource_sp}/appRoleAssignedTo", body))
        return True


def _graph_error(response: httpx.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error", {})
        return str(error.get("code", "")), str(error.get("message", ""))[:300]
    except ValueError:
        return "", response.reason_phrase


# ---- what each registration should be ---------------------------------------------------------------


def _scope(scope_id: str) -> dict[str, Any]:
    return {
        "id": scope_id,
        "value": SCOPE,
        "type": "User",
        "isEnabled": True,
        "adminConsentDisplayName": "Read sales insights",
        "adminConsentDescription": "Lets Copilot for Sales read the sales insights of the signed-in user's organization.",
        "userConsentDisplayName": "Read sales insights",
        "userConsentDescription": "Lets Copilot for Sales read sales insights for you.",
    }


def _writer_role(role_id: str) -> dict[str, Any]:
    return {
        "id": role_id,
        "value": WRITER_ROLE,
        "allowedMemberTypes": ["Application"],
        "displayName": "Write insights",
        "description": "Lets the partner's services write and delete insight documents.",
        "isEnabled": True,
    }


def _named(items: list[dict[str, Any]], value: str) -> dict[str, Any] | None:
    return next((item for item in items if item.get("value") == value), None)


def _api_changes(app: dict[str, Any], preauthorized: list[str]) -> dict[str, Any]:
    """The PATCH that makes the API registration what it should be ({} when it is)."""
    changes: dict[str, Any] = {}
    api = dict(app.get("api") or {})
    scopes = list(api.get("oauth2PermissionScopes") or [])
    scope = _named(scopes, SCOPE)
    scope_id = scope["id"] if scope else str(uuid.uuid4())
    new_api = dict(api)
    if scope is None or not scope.get("isEnabled", False):
        new_api["oauth2PermissionScopes"] = [s for s in scopes if s.get("value") != SCOPE] + [_scope(scope_id)]
    if api.get("requestedAccessTokenVersion") != 2:
        new_api["requestedAccessTokenVersion"] = 2
    existing = {p.get("appId"): p for p in api.get("preAuthorizedApplications") or []}
    wanted = []
    for entry in api.get("preAuthorizedApplications") or []:
        if entry.get("appId") not in preauthorized:
            wanted.append(entry)
    for client in preauthorized:
        entry = existing.get(client)
        ids = list((entry or {}).get("delegatedPermissionIds") or [])
        wanted.append({"appId": client, "delegatedPermissionIds": ids if scope_id in ids else [*ids, scope_id]})
    if sorted(map(repr, wanted)) != sorted(map(repr, api.get("preAuthorizedApplications") or [])):
        new_api["preAuthorizedApplications"] = wanted
    if new_api != api:
        changes["api"] = new_api
    uri = f"api://{app['appId']}"
    if uri not in (app.get("identifierUris") or []):
        changes["identifierUris"] = [*(app.get("identifierUris") or []), uri]
    if app.get("signInAudience") != "AzureADMultipleOrgs":
        changes["signInAudience"] = "AzureADMultipleOrgs"
    roles = list(app.get("appRoles") or [])
    role = _named(roles, WRITER_ROLE)
    if role is None or not role.get("isEnabled", False) or "Application" not in role.get("allowedMemberTypes", []):
        role_id = role["id"] if role else str(uuid.uuid4())
        changes["appRoles"] = [r for r in roles if r.get("value") != WRITER_ROLE] + [_writer_role(role_id)]
    return changes


def _client_changes(
    app: dict[str, Any], audience: str, redirect: str | None, api_app: str, access: dict[str, str]
) -> dict[str, Any]:
    """The PATCH that makes a client registration what it should be ({} when it is)."""
    changes: dict[str, Any] = {}
    if app.get("signInAudience") != audience:
        changes["signInAudience"] = audience
    if redirect is not None:
        web = dict(app.get("web") or {})
        uris = list(web.get("redirectUris") or [])
        if redirect not in uris:
            changes["web"] = {**web, "redirectUris": [*uris, redirect]}
    required = list(app.get("requiredResourceAccess") or [])
    ours = next((r for r in required if r.get("resourceAppId") == api_app), None)
    have = {(a.get("id"), a.get("type")) for a in (ours or {}).get("resourceAccess", [])}
    if (access["id"], access["type"]) not in have:
        entry = {
            "resourceAppId": api_app,
            "resourceAccess": [*((ours or {}).get("resourceAccess") or []), access],
        }
        changes["requiredResourceAccess"] = [r for r in required if r.get("resourceAppId") != api_app] + [entry]
    return changes


# ---- the run ----------------------------------------------------------------------------------------


@dataclass
class SetupResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    settings_changed: list[str] = field(default_factory=list)
    graph_changes: int = 0


@dataclass(frozen=True)
class _Client:
    key: str  # ENTRA_<key>_APP_ID
    label: str
    audience: str
    redirect: str | None
    kind: str  # "Scope" (delegated, through the API's scope) or "Role" (the writer app role)


_CLIENTS = (
    _Client("CONNECTOR", "connector", "AzureADMultipleOrgs", CONNECTOR_REDIRECT, "Scope"),
    _Client("CHAT", "Sales chat tools", "AzureADMultipleOrgs", CHAT_REDIRECT, "Scope"),
    _Client("WRITER", "writer service", "AzureADMyOrg", None, "Role"),
)


def run_setup(
    graph: GraphClient,
    env: EnvFile,
    *,
    tenant_id: str,
    name: str,
    show_secret: Callable[[str, str, str], None],
) -> SetupResult:
    """Create or update the four registrations and write the settings into `env`.

    `show_secret(label, app_id, secret)` is called once per secret made (a new client
    registration): the caller prints it; nothing else ever sees it."""
    result = SetupResult()

    def ensure(key: str, label: str, body: dict[str, Any]) -> dict[str, Any]:
        stored = env.get(f"ENTRA_{key}_APP_ID")
        app = graph.application(stored) if stored else None
        if app is None:
            app = graph.create_application(body)
            env.set(f"ENTRA_{key}_APP_ID", app["appId"])  # stored at once: a re-run never makes two
            result.created.append(label)
            if key != "API":
                show_secret(label, app["appId"], graph.add_secret(app["id"], f"{name} {label}"))
        return app

    api = ensure(
        "API",
        "API",
        {
            "displayName": f"{name} API",
            "signInAudience": "AzureADMultipleOrgs",
            "api": {"requestedAccessTokenVersion": 2},
        },
    )
    clients = {
        c.key: ensure(c.key, c.label, {"displayName": f"{name} {c.label}", "signInAudience": c.audience})
        for c in _CLIENTS
    }
    delegated = [clients["CONNECTOR"]["appId"], clients["CHAT"]["appId"]]

    # The scope and role first (a pre-authorization must name an existing scope), then the
    # pre-authorizations of the two delegated clients.
    changed = False
    for preauthorized in ([], delegated):
        patch = _api_changes(api, preauthorized)
        if patch:
            graph.update_application(api["id"], patch)
            api = graph.application(api["appId"]) or api
            changed = True
    if changed and "API" not in result.created:
        result.updated.append("API")

    scope = _named(api["api"]["oauth2PermissionScopes"], SCOPE)
    role = _named(api["appRoles"], WRITER_ROLE)
    assert scope is not None and role is not None  # just made so
    for c in _CLIENTS:
        app = clients[c.key]
        access = {"id": scope["id"] if c.kind == "Scope" else role["id"], "type": c.kind}
        patch = _client_changes(app, c.audience, c.redirect, api["appId"], access)
        if patch:
            graph.update_application(app["id"], patch)
            if c.label not in result.created:
                result.updated.append(c.label)

    # The writer holds the write role in the partner's tenant (app-only tokens carry it).
    api_sp = graph.service_principal(api["appId"])
    writer_sp = graph.service_principal(clients["WRITER"]["appId"])
    if graph.assign_app_role(api_sp["id"], writer_sp["id"], role["id"]) and "writer service" not in result.updated:
        result.updated.append("writer service")

    writer = clients["WRITER"]["appId"]
    settings = {
        "AUTH_AUDIENCES": f"api://{api['appId']},{api['appId']}",
        "AUTH_ALLOWED_CLIENT_APPS": ",".join(delegated),
        "AUTH_WRITER_CLIENT_APPS": writer,
        "AUTH_WRITER_HOME_TENANTS": tenant_id.lower(),
        "CONNECTOR_CLIENT_ID": clients["CONNECTOR"]["appId"],
        "API_APP_ID_URI": f"api://{api['appId']}",
    }
    # Which customer tenants the writer may write for is the partner's decision: a grant for
    # every tenant is made only when there is none for this writer yet.
    grants = env.get("AUTH_WRITER_TENANT_GRANTS")
    if not any(part.split("=", 1)[0].strip().lower() == writer.lower() for part in grants.split(";") if part):
        settings["AUTH_WRITER_TENANT_GRANTS"] = ";".join(p for p in [grants, f"{writer}=*"] if p)
    for setting, value in settings.items():
        if env.set(setting, value):
            result.settings_changed.append(setting)
    result.graph_changes = graph.changes
    return result


def describe(result: SetupResult) -> Iterator[str]:
    if not (result.created or result.updated or result.settings_changed):
        yield "Entra ID registrations are as they should be; nothing changed."
        return
    if result.created:
        yield "created: " + ", ".join(result.created)
    if result.updated:
        yield "updated: " + ", ".join(result.updated)
    if result.settings_changed:
        yield "settings written: " + ", ".join(result.settings_changed)
