"""Tenant isolation as a property: whatever ids, record types and org URLs collide across
tenants, no response ever carries another tenant's document (or misses one of the caller's)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.contract import normalize
from tests.conftest import Service, attached, doc

TENANTS = [
    "aaaaaaaa-0000-4000-8000-000000000001",
    "aaaaaaaa-0000-4000-8000-000000000002",
    "bbbbbbbb-0000-4000-8000-000000000003",
]
HIGHLIGHTS = "/api/enhanceskills/sales-highlights"
EMAIL = "/api/enhanceskills/email-insights-v2"

record_ids = st.sampled_from(
    [
        "opp-1",
        "OPP-1",
        "a/b",
        "x'y",
        "q?#",
        "8D2F6A1C-5B3E-4F7A-9C2D-1E4B6A8F3C50",
        "{8d2f6a1c-5b3e-4f7a-9c2d-1e4b6a8f3c50}",
        "%41",
        "a|b",
    ]
)
record_types = st.sampled_from(["opportunity", "Opportunity", " opportunity", "account", "Acc ount"])
orgs = st.sampled_from([None, "contoso.crm.dynamics.com", "CONTOSO.crm.dynamics.com", "fabrikam.crm.dynamics.com"])
contacts = st.sampled_from(["megan@fabrikam.example", "MEGAN@fabrikam.example", "lee@fabrikam.example"])

documents = st.lists(
    st.tuples(
        st.sampled_from(TENANTS),
        record_types,
        record_ids,
        orgs,
        st.sampled_from(["d1", "d2", "d3"]),
        st.booleans(),
        contacts,
    ),
    min_size=1,
    max_size=8,
)
requests = st.lists(
    st.tuples(st.sampled_from(TENANTS), record_types, record_ids, orgs, contacts), min_size=1, max_size=3
)


def _visible(stored: dict[str, Any], tenant: str, rtype: str, rid: str, org: str | None) -> bool:
    return (
        stored["tenant"] == tenant
        and stored["rtype"] == normalize.record_type(rtype)
        and stored["rid"] == normalize.record_id(rid)
        and stored["org"] in ("", normalize.org_host(org or ""))
    )


def test_no_response_carries_another_tenants_document(service: Service) -> None:
    service.set(AUTH_ALLOWED_TENANTS="*")
    stored: dict[tuple[str, ...], dict[str, Any]] = {}  # accumulates over examples, like a real table
    serial = iter(range(10**9))

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(documents, requests)
    def check(docs: list[tuple[Any, ...]], asks: list[tuple[Any, ...]]) -> None:
        batch = []
        for tenant, rtype, rid, org, doc_id, also_email, contact in docs:
            n = next(serial)
            marker = f"{tenant}#{n}"
            extra = {"crmOrgUrl": org} if org else {}
            batch.append(
                doc(
                    id=doc_id,
                    tenant=tenant,
                    record_type=rtype,
                    record_id=rid,
                    fields={"title": "T", "description": marker},
                    **extra,
                )
            )
            key = (tenant, normalize.record_type(rtype), normalize.record_id(rid), doc_id)
            stored[key] = {
                "tenant": tenant,
                "rtype": key[1],
                "rid": key[2],
                "org": normalize.org_host(org or ""),
                "marker": marker,
            }
            if also_email:
                batch.append(
                    attached("emailSummary", id=f"e{n}", tenant=tenant, contact=contact, fields={"insight": marker})
                )
                stored[(tenant, "contact", contact.lower(), f"e{n}")] = {
                    "tenant": tenant,
                    "contact": contact.lower(),
                    "marker": marker,
                }
        service.load(batch)
        for tenant, rtype, rid, org, contact in asks:
            token = service.token(tenant=tenant)
            params = {"recordType": rtype, "recordId": rid, "top": 100, **({"crmOrgUrl": org} if org else {})}
            got = service.get(HIGHLIGHTS, params, token=token).json()["value"]
            markers = {item["description"] for item in got}
            assert all(m.startswith(tenant + "#") for m in markers), (tenant, markers)
            expected = {s["marker"] for s in stored.values() if "rtype" in s and _visible(s, tenant, rtype, rid, org)}
            assert markers == expected
            mail = service.post(EMAIL, {"resourceData": {"from": contact}, "top": 100}, token=token).json()["value"]
            insights = {item["insight"] for item in mail}
            assert all(m.startswith(tenant + "#") for m in insights), (tenant, insights)
            assert insights == {
                s["marker"] for s in stored.values() if s.get("contact") == contact.lower() and s["tenant"] == tenant
            }

    check()
