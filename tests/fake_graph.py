"""A Microsoft Graph v1.0 stand-in for the Entra setup's tests (`httpx.MockTransport`).

It answers the calls the setup makes with the shapes Graph documents: `POST /applications` 201
with the whole object (empty collections, `requestedAccessTokenVersion` null), `GET
/applications(appId='...')` 200 or 404 `Request_ResourceNotFound`, `PATCH` 204 without a body,
`addPassword` 200 with `secretText`, `POST /servicePrincipals` 409
`Request_MultipleObjectsWithSameKeyValue` when one exists, a duplicate app role assignment 400,
and 403 `Authorization_RequestDenied` where a test denies an operation. Like Graph, it refuses a
pre-authorization naming a scope the application does not have, and an App ID URI that is not
`api://{appId}` on a multi-tenant app (no verified domain here).
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["FakeCredential", "FakeGraph", "FakeToken"]


@dataclass
class FakeToken:
    token: str = "graph-token"
    expires_on: int = 2_000_000_000


class FakeCredential:
    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str) -> FakeToken:
        self.scopes.append(scopes)
        return FakeToken()


def _error(status: int, code: str, message: str) -> httpx.Response:
    body = {"error": {"code": code, "message": message, "innerError": {"request-id": str(uuid.uuid4())}}}
    return httpx.Response(status, json=body)


_BY_APP_ID = re.compile(r"^/v1\.0/(applications|servicePrincipals)\(appId='([^']*)'\)$")


@dataclass
class FakeGraph:
    applications: dict[str, dict[str, Any]] = field(default_factory=dict)  # by object id
    service_principals: dict[str, dict[str, Any]] = field(default_factory=dict)
    assignments: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    denied: set[tuple[str, str]] = field(default_factory=set)  # (method, path prefix)
    secrets_issued: list[str] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] != "GET"]

    def app(self, app_id: str) -> dict[str, Any]:
        return next(a for a in self.applications.values() if a["appId"] == app_id)

    # ---- dispatch

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append((request.method, path))
        assert request.headers.get("authorization") == "Bearer graph-token"
        for method, prefix in self.denied:
            if request.method == method and path.startswith(prefix):
                return _error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        body = json.loads(request.content) if request.content else None
        if match := _BY_APP_ID.match(path):
            collection = self.applications if match.group(1) == "applications" else self.service_principals
            found = next((o for o in collection.values() if o["appId"] == match.group(2)), None)
            if found is None:
                return _error(
                    404,
                    "Request_ResourceNotFound",
                    f"Resource '{match.group(2)}' does not exist or one of its queried reference-property objects are not present.",
                )
            return httpx.Response(200, json=copy.deepcopy(found))
        parts = path.removeprefix("/v1.0/").split("/")
        if parts == ["applications"] and request.method == "POST":
            return self._create_application(body)
        if parts[0] == "applications" and len(parts) == 2 and request.method == "PATCH":
            return self._patch_application(parts[1], body)
        if parts[0] == "applications" and parts[2:] == ["addPassword"] and request.method == "POST":
            return self._add_password(parts[1], body)
        if parts == ["servicePrincipals"] and request.method == "POST":
            return self._create_service_principal(body)
        if parts[0] == "servicePrincipals" and parts[2:] == ["appRoleAssignedTo"]:
            return self._assignments(request.method, parts[1], body)
        return _error(400, "Request_BadRequest", f"Unsupported request {request.method} {path}")

    # ---- applications

    def _create_application(self, body: dict[str, Any]) -> httpx.Response:
        object_id, app_id = str(uuid.uuid4()), str(uuid.uuid4())
        app: dict[str, Any] = {
            "id": object_id,
            "appId": app_id,
            "displayName": None,
            "signInAudience": "AzureADMyOrg",
            "identifierUris": [],
            "api": {
                "acceptMappedClaims": None,
                "knownClientApplications": [],
                "oauth2PermissionScopes": [],
                "preAuthorizedApplications": [],
                "requestedAccessTokenVersion": None,
            },
            "appRoles": [],
            "web": {"homePageUrl": None, "logoutUrl": None, "redirectUris": []},
            "requiredResourceAccess": [],
            "passwordCredentials": [],
        }
        problem = self._apply(app, body)
        if problem:
            return problem
        self.applications[object_id] = app
        return httpx.Response(201, json=copy.deepcopy(app))

    def _patch_application(self, object_id: str, body: dict[str, Any]) -> httpx.Response:
        app = self.applications.get(object_id)
        if app is None:
            return _error(404, "Request_ResourceNotFound", f"Resource '{object_id}' does not exist.")
        candidate = copy.deepcopy(app)
        problem = self._apply(candidate, body)
        if problem:
            return problem
        self.applications[object_id] = candidate
        return httpx.Response(204)

    def _apply(self, app: dict[str, Any], body: dict[str, Any]) -> httpx.Response | None:
        for key, value in body.items():
            if isinstance(value, dict) and isinstance(app.get(key), dict):
                app[key] = {**app[key], **value}  # a complex property: the properties sent replace
            else:
                app[key] = value
        scopes = {s["id"] for s in app["api"].get("oauth2PermissionScopes") or []}
        for pre in app["api"].get("preAuthorizedApplications") or []:
            if not set(pre.get("delegatedPermissionIds") or []) <= scopes:
                return _error(
                    400,
                    "InvalidValue",
                    "Property PreAuthorizedApplication references applications or scopes that do not exist.",
                )
        for uri in app.get("identifierUris") or []:
            if app["signInAudience"] != "AzureADMyOrg" and uri != f"api://{app['appId']}":
                return _error(
                    400,
                    "HostNameNotOnVerifiedDomain",
                    "Values of identifierUris property must use a verified domain of the organization or its subdomain.",
                )
        return None

    def _add_password(self, object_id: str, body: dict[str, Any]) -> httpx.Response:
        secret = secrets.token_urlsafe(30)
        self.secrets_issued.append(secret)
        credential = {
            "customKeyIdentifier": None,
            "displayName": body["passwordCredential"].get("displayName"),
            "endDateTime": "2028-11-23T10:00:00Z",
            "hint": secret[:3],
            "keyId": str(uuid.uuid4()),
            "startDateTime": "2026-11-23T10:00:00Z",
        }
        self.applications[object_id]["passwordCredentials"].append({**credential, "secretText": None})
        return httpx.Response(200, json={**credential, "secretText": secret})

    # ---- service principals and app role assignments

    def _create_service_principal(self, body: dict[str, Any]) -> httpx.Response:
        if any(sp["appId"] == body["appId"] for sp in self.service_principals.values()):
            return _error(
                409,
                "Request_MultipleObjectsWithSameKeyValue",
                f"The service principal cannot be created, updated, or restored because the service principal name {body['appId']} is already in use.",
            )
        sp = {"id": str(uuid.uuid4()), "appId": body["appId"], "servicePrincipalType": "Application"}
        self.service_principals[sp["id"]] = sp
        return httpx.Response(201, json=copy.deepcopy(sp))

    def _assignments(self, method: str, resource: str, body: dict[str, Any] | None) -> httpx.Response:
        mine = [a for a in self.assignments if a["resourceId"] == resource]
        if method == "GET":
            return httpx.Response(200, json={"value": copy.deepcopy(mine)})
        assert body is not None
        if any(a["principalId"] == body["principalId"] and a["appRoleId"] == body["appRoleId"] for a in mine):
            return _error(400, "Request_BadRequest", "Permission being assigned already exists on the object")
        assignment = {"id": secrets.token_urlsafe(16), **body}
        self.assignments.append(assignment)
        return httpx.Response(201, json=assignment)
