"""The local preview of the Copilot for Sales cards: static files and a few helper endpoints,
served by the dev host under /preview. Never a Functions trigger, never deployed.

The page itself calls the backend the way Copilot for Sales does: it reads the generated
connector definition, finds operations and fields by the contract's description strings (its
own copy, `preview/contract.json`, as Copilot has its own), and sends a locally minted token.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from devhost.server import ExtraRoute
from shared.contract import all_points, normalize
from shared.documents import parse_jsonl
from shared.settings import get_settings
from shared.storage import InsightsStore, RecordRef, Scope, as_int, is_copy, partition_key
from tools.data import with_store

__all__ = ["CONNECTOR", "STATIC", "preview_routes"]

ROOT = Path(__file__).resolve().parent.parent
STATIC = Path(__file__).resolve().parent / "preview"
CONNECTOR = ROOT / "connector"
AGENT = ROOT / "agent"
ADAPTIVE_CARDS = ROOT / "node_modules" / "adaptivecards" / "dist" / "adaptivecards.min.js"
EXPAND = Path(__file__).resolve().parent / "expand_card.js"
MAX_EXPAND_BYTES = 1024 * 1024
MAX_LINT_BYTES = 5 * 1024 * 1024
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".json": "application/json; charset=utf-8",
}

Minter = Callable[[str], str]


def _file(path: Path) -> ExtraRoute:
    def serve(handler: Any, query: str, body: bytes) -> None:
        handler.send_bytes(200, path.read_bytes(), TYPES[path.suffix], {"Cache-Control": "no-store"})

    return serve


def _json(produce: Callable[[dict[str, list[str]], bytes], Any]) -> ExtraRoute:
    def serve(handler: Any, query: str, body: bytes) -> None:
        try:
            payload = produce(parse_qs(query), body)
            status = 200
        except ValueError as exc:
            payload, status = {"error": str(exc)}, 400
        handler.send_bytes(
            status, json.dumps(payload, ensure_ascii=False).encode(), TYPES[".json"], {"Cache-Control": "no-store"}
        )

    return serve


def _tenants(query: dict[str, list[str]], body: bytes) -> Any:
    return [t for t in get_settings().auth_allowed_tenants if t != "*"]


def _tenant(query: dict[str, list[str]]) -> str:
    tenant = (query.get("tenant") or [""])[0].lower()
    if tenant not in get_settings().auth_allowed_tenants:
        raise ValueError("unknown tenant")
    return tenant


def _most_common(values: list[str]) -> str:
    """The value most documents carry ("" when most carry none); ties by name."""
    counts = Counter(values)
    return min(counts, key=lambda v: (-counts[v], v)) if counts else ""


def _records(query: dict[str, list[str]], body: bytes) -> Any:
    """The CRM records a tenant has insights for (at most 200), named and typed as sellers know
    them, with the CRM org and type most of their documents are scoped to (what a seller's request
    would name), and their contacts."""
    tenant = _tenant(query)
    records: dict[tuple[str, str], dict[str, Any]] = {}

    async def collect(store: InsightsStore) -> None:
        async for entity in store.iter_entities(tenant=tenant):
            if not entity.get("RecordType") or is_copy(entity):  # a copy is its record's document again
                continue
            key = (entity["RecordType"], entity["RecordId"])
            if key not in records and len(records) >= 200:
                break
            record = records.setdefault(key, {"names": [], "contacts": set(), "orgs": [], "crms": []})
            if entity.get("Name"):
                record["names"].append((as_int(entity.get("Ver")), entity["Name"]))
            if entity.get("Contact"):
                record["contacts"].add(entity["Contact"])
            record["orgs"].append(entity.get("Org") or "")
            record["crms"].append(entity.get("Crm") or "")

    with_store(collect)
    found = [
        {
            "recordType": record_type,
            "recordId": record_id,
            "name": max(record["names"])[1] if record["names"] else "",
            "crmOrgUrl": _most_common(record["orgs"]),
            "crmType": _most_common(record["crms"]),
            "contacts": sorted(record["contacts"]),
            "documents": len(record["orgs"]),
        }
        for (record_type, record_id), record in records.items()
    ]
    return sorted(found, key=lambda r: (not r["name"], r["name"].casefold(), r["recordType"], r["recordId"]))


def _hidden(query: dict[str, list[str]], body: bytes) -> Any:
    """Per extension point, the record's documents a request with this org and CRM type is not
    served because of their scope, with why (the store's own scoping rule, `Scope.admits`)."""
    tenant = _tenant(query)
    record_type = normalize.record_type((query.get("recordType") or [""])[0])
    record_id = normalize.record_id((query.get("recordId") or [""])[0])
    org = (query.get("crmOrgUrl") or [""])[0].strip()
    crm = (query.get("crmType") or [""])[0].strip()
    scope = Scope(org=normalize.org_host(org) if org else "", crm=normalize.crm_type(crm) if crm else "")
    if not record_type or not record_id:
        raise ValueError("name the record")
    answer: dict[str, Any] = {}

    async def collect(store: InsightsStore) -> None:
        partitions = {partition_key(tenant, p, RecordRef.record(record_type, record_id)): p for p in all_points()}
        async for entity in store.iter_entities(partitions=list(partitions)):
            doc_org, doc_crm = entity.get("Org") or "", entity.get("Crm") or ""
            if scope.admits(doc_org, doc_crm):
                continue
            point = answer.setdefault(entity["Ep"], {"hidden": 0, "orgs": Counter(), "crms": Counter()})
            point["hidden"] += 1
            if doc_org and doc_org != scope.org:
                point["orgs"][doc_org] += 1
            elif doc_crm:
                point["crms"][doc_crm] += 1

    with_store(collect)
    out = {}
    for point, found in answer.items():
        reasons = []
        for value, count in sorted(found["orgs"].items()):
            named = f"named {scope.org}" if scope.org else "named no org"
            reasons.append(f"{count} document(s) of this record are scoped to {value}; this request {named}")
        for value, count in sorted(found["crms"].items()):
            named = f"named {scope.crm}" if scope.crm else "named no CRM type"
            reasons.append(f"{count} document(s) of this record are scoped to CRM type {value}; this request {named}")
        out[point] = {"hidden": found["hidden"], "reasons": reasons}
    return out


def _lint(query: dict[str, list[str]], body: bytes) -> Any:
    """The loader's own validation in report mode: every document it would reject, and why."""
    if len(body) > MAX_LINT_BYTES:
        raise ValueError("the file is larger than the preview checks (5 MB)")
    text = body.decode("utf-8", errors="replace")
    problems = []
    documents = 0
    for parsed in parse_jsonl(text.splitlines()):
        documents += 1
        for error in parsed.errors:
            problems.append({"line": parsed.line, "id": parsed.raw_id, "field": error.field, "message": error.message})
    return {"documents": documents, "rejected": len({p["line"] for p in problems}), "problems": problems}


def _expand(query: dict[str, list[str]], body: bytes) -> Any:
    """An Adaptive Card template expanded with data by Microsoft's templating library (Node), as
    Copilot expands a plugin's card with a function's answer."""
    if len(body) > MAX_EXPAND_BYTES:
        raise ValueError("the template and data are larger than the preview expands (1 MB)")
    try:
        request = json.loads(body)
        if not isinstance(request, dict) or not isinstance(request.get("template"), dict):
            raise ValueError
    except ValueError:
        raise ValueError("send {template, data} as JSON") from None
    result = subprocess.run(
        ["node", str(EXPAND)], input=json.dumps(request), capture_output=True, text=True, timeout=20, cwd=ROOT
    )
    if result.returncode != 0:
        raise ValueError("the template could not be expanded")
    return json.loads(result.stdout)


def preview_routes(mint: Minter) -> dict[str, ExtraRoute]:
    """The preview's routes for DevHost(extra_routes=...). `mint(tenant)` signs a local token."""
    routes: dict[str, ExtraRoute] = {
        "preview": _file(STATIC / "index.html"),
        "preview/app.js": _file(STATIC / "app.js"),
        "preview/style.css": _file(STATIC / "style.css"),
        "preview/contract.json": _file(STATIC / "contract.json"),
        "preview/icon.png": _file(CONNECTOR / "icon.png"),
        "preview/definition.json": _file(CONNECTOR / "apiDefinition.swagger.json"),
        "preview/api/tenants": _json(_tenants),
        "preview/api/records": _json(_records),
        "preview/api/hidden": _json(_hidden),
        "preview/api/lint": _json(_lint),
        "preview/api/token": _json(lambda q, b: {"token": mint((q.get("tenant") or [""])[0])}),
        "preview/chat": _file(STATIC / "chat.html"),
        "preview/chat.js": _file(STATIC / "chat.js"),
        "preview/chat.css": _file(STATIC / "chat.css"),
        "preview/vendor/adaptivecards.js": _file(ADAPTIVE_CARDS),
        "preview/agent/ai-plugin.json": _file(AGENT / "ai-plugin.json"),
        "preview/agent/openapi.json": _file(AGENT / "openapi.json"),
        "preview/api/expand": _json(_expand),
    }
    return routes
