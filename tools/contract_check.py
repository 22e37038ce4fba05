"""Contract check for a deployed instance.

Calls every extension operation the app registers (the same triggers and models the connector is
generated from) at a base URL, for one CRM record, and reports per operation: HTTP status, whether
the body conforms to the contract (envelope, required non-empty fields, lengths, enums, UTC
dates), and the time against the 5-second budget.

A token comes from `--token`, or from Microsoft Entra ID through msal: client credentials
(an app-only token for `{app-id-uri}/.default`) or the device-code flow (a delegated token).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import ValidationError

from shared.contract import Page
from shared.http import Operation

__all__ = ["BUDGET_SECONDS", "CheckResult", "acquire_token", "check_operations"]

BUDGET_SECONDS = 5.0


@dataclass
class Target:
    record_type: str
    record_id: str
    crm_type: str = ""
    crm_org_url: str = ""
    participants: list[str] = field(default_factory=list)
    top: int = 5


@dataclass
class CheckResult:
    operation_id: str
    method: str
    path: str
    status: int | None
    seconds: float
    items: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _inputs(spec: Operation[Any], target: Target) -> dict[str, Any]:
    model = spec.body_model or spec.query_model
    if model is None:
        return {}
    names = set(model.model_fields)
    values: dict[str, Any] = {}
    if "recordType" in names:
        values["recordType"] = target.record_type
    if "recordId" in names:
        values["recordId"] = target.record_id
    if "crmType" in names and target.crm_type:
        values["crmType"] = target.crm_type
    if "crmOrgUrl" in names and target.crm_org_url:
        values["crmOrgUrl"] = target.crm_org_url
    if "top" in names:
        values["top"] = target.top
    if "resourceData" in names:
        addresses = target.participants or []
        values["resourceData"] = {
            "subject": "Contract check",
            "plaintextBody": "Contract check of a deployed instance.",
            "from": addresses[0] if addresses else "",
            "to": addresses[1:],
            "cc": [],
            "sentDateTime": "2025-01-01T00:00:00Z",
        }
    if "relatedEntities" in names:
        values["relatedEntities"] = [{"entityId": target.record_id, "entityType": target.record_type}]
    if "resourceType" in names:
        values["resourceType"] = "email-thread"
    return values


def _conformance(spec: Operation[Any], response: httpx.Response, top: int) -> tuple[int, list[str]]:
    problems: list[str] = []
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith("application/json"):
        problems.append(f"content-type is {content_type!r}, not application/json")
    try:
        body = response.json()
    except ValueError:
        return 0, [*problems, "body is not JSON"]
    if spec.response_model is not None:
        try:
            spec.response_model.model_validate(body)
        except ValidationError as exc:
            problems += _describe(exc)
        return 0, problems
    if not isinstance(body, dict) or set(body) != {"value", "hasMoreResults"}:
        return 0, [*problems, "body is not the {value, hasMoreResults} envelope"]
    assert spec.item_model is not None
    try:
        page = Page[spec.item_model].model_validate(body)  # type: ignore[name-defined]
    except ValidationError as exc:
        return len(body.get("value") or []), problems + _describe(exc)
    if len(page.value) > top:
        problems.append(f"{len(page.value)} items for top={top}")
    for index, item in enumerate(body["value"]):
        for name, value in item.items():
            if name.lower() == "datetime" and isinstance(value, str) and not value.endswith("Z"):
                problems.append(f"value.{index}.{name}: {value!r} is not UTC with Z")
    return len(page.value), problems


def _describe(exc: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10]]


def check_operations(
    operations: list[tuple[str, str, Operation[Any]]],
    base_url: str,
    token: str,
    target: Target,
    client: httpx.Client | None = None,
) -> list[CheckResult]:
    """`operations` are (method, path, spec) as the app registers them; every one is called."""
    own = client is None
    client = client or httpx.Client(timeout=BUDGET_SECONDS + 5)
    results = []
    try:
        for method, path, spec in operations:
            headers = {
                "Authorization": f"Bearer {token}",
                "x-ms-client-request-id": f"contract-check-{int(time.time() * 1000)}-{spec.operation_id}",
                "x-ms-user-agent": "sales-copilot",
                "Accept-Language": "en-US",
            }
            inputs = _inputs(spec, target)
            url = base_url.rstrip("/") + "/" + path.lstrip("/")
            started = time.perf_counter()
            try:
                if method == "POST":
                    response = client.post(url, json=inputs, headers=headers)
                else:
                    response = client.get(url, params=inputs, headers=headers)
            except httpx.HTTPError as exc:
                elapsed = time.perf_counter() - started
                results.append(
                    CheckResult(spec.operation_id, method, path, None, elapsed, problems=[f"no answer: {exc}"])
                )
                continue
            elapsed = time.perf_counter() - started
            result = CheckResult(spec.operation_id, method, path, response.status_code, elapsed)
            if response.status_code != 200:
                result.problems.append(f"status {response.status_code}: {response.text[:200]}")
            else:
                result.items, problems = _conformance(spec, response, target.top)
                result.problems += problems
            if elapsed > BUDGET_SECONDS:
                result.problems.append(f"answered in {elapsed:.2f}s, past the {BUDGET_SECONDS:.0f}-second budget")
            results.append(result)
    finally:
        if own:
            client.close()
    return results


def acquire_token(
    *,
    tenant: str,
    client_id: str,
    scope: str,
    client_secret: str | None = None,
    device_code: bool = False,
    authority_host: str = "https://login.microsoftonline.com",
) -> str:
    """A token from Entra ID via msal (which only talks to https authorities)."""
    import msal  # a laptop tool's dependency (requirements-dev.txt), only for a token from Entra ID

    authority = f"{authority_host.rstrip('/')}/{tenant}"
    if device_code:
        public = msal.PublicClientApplication(client_id, authority=authority)
        flow = public.initiate_device_flow(scopes=[scope])
        if "user_code" not in flow:
            raise RuntimeError(f"device flow failed: {flow.get('error_description', flow)}")
        print(flow["message"], flush=True)
        result = public.acquire_token_by_device_flow(flow)
    else:
        if not client_secret:
            raise RuntimeError("client credentials need a client secret")
        confidential = msal.ConfidentialClientApplication(
            client_id, authority=authority, client_credential=client_secret
        )
        result = confidential.acquire_token_for_client(scopes=[scope])
    if "access_token" not in result:
        raise RuntimeError(f"no token: {result.get('error')}: {result.get('error_description')}")
    return str(result["access_token"])


def format_report(results: list[CheckResult]) -> str:
    lines = [f"{'operation':32} {'status':>6} {'items':>5} {'time':>8}  result"]
    for r in results:
        status = str(r.status) if r.status is not None else "-"
        verdict = "conformant" if r.ok else "FAIL: " + "; ".join(r.problems)
        lines.append(f"{r.operation_id:32} {status:>6} {r.items:>5} {r.seconds * 1000:>6.0f}ms  {verdict}")
    failed = sum(not r.ok for r in results)
    lines.append(f"{len(results) - failed} conformant, {failed} failing, budget {BUDGET_SECONDS:.0f}s")
    return "\n".join(lines)


def registered_operations() -> list[tuple[str, str, Operation[Any]]]:
    """(method, path, spec) of every connector operation the FunctionApp registers, from its
    triggers (the ingestion API is the partner's own and not part of the connector)."""
    from devhost.server import route_prefix  # beside the app's own import, below
    from function_app import create_app  # importing the app builds it: only when asked for its operations

    prefix = route_prefix()
    found = []
    for function in create_app().get_functions():
        trigger = function.get_trigger()
        spec = getattr(function.get_user_function(), "operation", None)
        if getattr(trigger, "type", "") == "httpTrigger" and isinstance(spec, Operation) and spec.in_connector:
            method = sorted(str(getattr(m, "value", m)).upper() for m in getattr(trigger, "methods", []))[0]
            found.append((method, f"{prefix}/{getattr(trigger, 'route', '')}", spec))
    return found
