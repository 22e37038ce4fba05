"""The ingestion API: partner backends write, Copilot's readers never can; per-item results,
idempotent batches, all-or-nothing partitions, deletes at every level, no double reads."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AUDIENCE, CLIENT_APP, TENANT_A, TENANT_B, Service, attached, doc

UPSERT = "/api/ingest/documents"
DELETE = "/api/ingest/delete"
HIGHLIGHTS = "/api/enhanceskills/sales-highlights"
HOME = "5c1e9a7d-2b4f-4c6e-8a1d-3f5b7c9e1a20"
WRITER = "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
OTHER_WRITER = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"


@pytest.fixture
def writer(service: Service) -> Service:
    service.set(
        AUTH_WRITER_HOME_TENANTS=HOME,
        AUTH_WRITER_CLIENT_APPS=f"{WRITER},{OTHER_WRITER}",
        AUTH_WRITER_ROLES="Insights.Write",
        AUTH_WRITER_TENANT_GRANTS=f"{WRITER}={TENANT_A}|{TENANT_B};{OTHER_WRITER}={TENANT_A}",
    )
    return service


def writer_token(service: Service, **overrides: Any) -> str:
    claims: dict[str, Any] = dict(
        tenant=HOME, audience=AUDIENCE, client_app=WRITER, scopes=None, roles=["Insights.Write"]
    )
    claims.update(overrides)
    return service.authority.mint(**claims)


def rows(service: Service) -> list[dict[str, Any]]:
    """The table's rows, but its schema marker and salt (`~meta`) and the watermarks (a record's
    `~w`, a tenant's contacts' `{tenant}|~w`, `~tenants`), which hold no document's content."""
    return sorted(
        (
            dict(e)
            for e in service.table.list_entities()
            if e["PartitionKey"] not in ("~meta", "~tenants")
            and e["RowKey"] != "~w"
            and not e["PartitionKey"].endswith("|~w")
        ),
        key=lambda e: (e["PartitionKey"], e["RowKey"]),
    )


def delete_fully(service: Service, body: dict[str, Any], token: str) -> dict[str, Any]:
    """Send a delete, and its continuation while the answer says it is not complete (a contact's or
    tenant's delete runs in steps); the answers' counts summed, and how many answers it took."""
    import time

    total = {"deleted": 0, "stale": 0, "failed": 0, "answers": 0}
    request = dict(body)
    while True:
        answer = service.post(DELETE, request, token=token)
        assert answer.status_code == 200, answer.text
        reply = answer.json()
        for key in ("deleted", "stale", "failed"):
            total[key] += reply[key]
        total["answers"] += 1
        if reply["complete"]:
            assert "continuation" not in reply
            return total
        assert total["answers"] < 50, "a delete that never completes"
        request["continuation"] = reply["continuation"]
        time.sleep(reply["retryAfterSeconds"])


def document_delete(id: str, record_id: str = "opp-1", **extra: Any) -> dict[str, Any]:
    """A delete request for one opportunity insight of TENANT_A."""
    return {
        "tenantId": TENANT_A,
        "scope": "document",
        "extensionPoint": "opportunityInsights",
        "recordType": "opportunity",
        "recordId": record_id,
        "id": id,
        **extra,
    }


def highlights(service: Service, tenant: str = TENANT_A, record: str = "opp-1") -> list[str]:
    body = service.get(
        HIGHLIGHTS, {"recordType": "opportunity", "recordId": record, "top": 100}, token=service.token(tenant=tenant)
    ).json()
    return [i["description"].removeprefix("Insight ") for i in body["value"]]


def test_a_writer_upserts_and_sellers_read(writer: Service) -> None:
    response = writer.post(
        UPSERT,
        {"documents": [doc(id="w1"), doc(id="w2", date_time="2025-04-01T00:00:00Z")]},
        token=writer_token(writer),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["summary"] == {
        "received": 2,
        "written": 2,
        "stale": 0,
        "invalid": 0,
        "failed": 0,
        "partitions": 1,
        "transactions": 1,
    }
    assert body["results"] == [
        {"index": 0, "id": "w1", "status": "written", "version": 1, "transaction": 1},
        {"index": 1, "id": "w2", "status": "written", "version": 1, "transaction": 1},
    ]
    assert highlights(writer) == ["w2", "w1"]


@pytest.mark.parametrize(
    ("who", "make"),
    [
        ("Copilot's read token", lambda s: s.token()),
        ("an app-only reader token", lambda s: s.token(scopes=None, roles=["Insights.Read"])),
        ("a writer without the write role", lambda s: writer_token(s, roles=["Insights.Read"])),
        ("a writer token from outside the home tenants", lambda s: writer_token(s, tenant=TENANT_A)),
        (
            "a delegated token from the home tenant with the role",
            lambda s: writer_token(s, scopes=["user_impersonation"]),
        ),
        ("an app that is not a writer", lambda s: writer_token(s, client_app=CLIENT_APP)),
    ],
)
def test_who_may_not_write(writer: Service, who: str, make: Any) -> None:
    response = writer.post(UPSERT, {"documents": [doc(id="nope")]}, token=make(writer))
    assert response.status_code == 403, who
    assert response.json()["errorCode"] == "INSUFFICIENT_PERMISSIONS"
    assert rows(writer) == []


def test_a_writer_granted_a_cannot_write_b(writer: Service) -> None:
    token = writer_token(writer, client_app=OTHER_WRITER)
    response = writer.post(
        UPSERT, {"documents": [doc(id="a", tenant=TENANT_A), doc(id="b", tenant=TENANT_B)]}, token=token
    )
    assert response.status_code == 403
    assert rows(writer) == []  # nothing written, not even tenant A's
    delete = writer.post(DELETE, {"tenantId": TENANT_B, "scope": "tenant"}, token=token)
    assert delete.status_code == 403


def test_a_bad_writer_token_is_401(writer: Service) -> None:
    response = writer.post(UPSERT, {"documents": []}, token="x.y.z")
    assert response.status_code == 401


def test_per_item_errors_in_a_partly_valid_batch(writer: Service) -> None:
    documents = [
        doc(id="good-1"),
        doc(id="too-long", fields={"title": "x" * 21, "description": "d"}),
        "not an object",
        {**doc(id="bad-tenant"), "tenantId": "nope"},
        doc(id="good-2"),
    ]
    body = writer.post(UPSERT, {"documents": documents}, token=writer_token(writer)).json()
    assert body["summary"]["written"] == 2 and body["summary"]["invalid"] == 3
    results = body["results"]
    assert [r["status"] for r in results] == ["written", "invalid", "invalid", "invalid", "written"]
    assert results[1]["id"] == "too-long" and results[1]["error"].startswith("fields.title:")
    assert results[2]["index"] == 2 and "id" not in results[2] and results[2]["error"].startswith("document:")
    assert results[3]["error"].startswith("tenantId:")
    assert sorted(highlights(writer)) == ["good-1", "good-2"]


def test_a_key_too_long_once_encoded_is_invalid_and_spares_the_documents_beside_it(writer: Service) -> None:
    """256 x 'é' passes the 256-character limit but percent-encodes to a 1,552-character RowKey:
    it is refused on its own, naming its field; the valid document in the same partition (and so
    the same transaction) is written."""
    documents = [doc(id="é" * 256), doc(id="fine"), doc(id="other", record_id="é" * 256)]
    body = writer.post(UPSERT, {"documents": documents}, token=writer_token(writer)).json()
    assert [(r["status"], r["id"]) for r in body["results"]] == [
        ("invalid", "é" * 256),
        ("written", "fine"),
        ("invalid", "other"),
    ]
    assert body["results"][0]["error"].startswith("id: makes a table key of 1558 characters")
    assert body["results"][2]["error"].startswith("recordId: makes a table key of")
    assert highlights(writer) == ["fine"]
    assert [r["Id"] for r in rows(writer)] == ["fine", "fine"]  # its row and its index entity


def test_resending_a_batch_changes_nothing(writer: Service) -> None:
    batch = {
        "documents": [doc(id=f"r{n}", date_time=f"2025-03-0{n}T00:00:00Z") for n in range(1, 6)]
        + [attached("emailSummary", id="e", record_id="opp-1", contact="x@y.example")]
    }
    token = writer_token(writer)
    assert writer.post(UPSERT, batch, token=token).status_code == 200
    before = rows(writer)
    assert writer.post(UPSERT, batch, token=token).status_code == 200
    assert rows(writer) == before


def test_batch_size_limit(writer: Service) -> None:
    writer.set(INGEST_MAX_DOCUMENTS="3")
    response = writer.post(UPSERT, {"documents": [doc(id=f"d{n}") for n in range(4)]}, token=writer_token(writer))
    assert response.status_code == 413
    assert "at most 3" in response.json()["errorMessage"]
    assert rows(writer) == []


def test_malformed_batches_are_400(writer: Service) -> None:
    token = writer_token(writer)
    assert writer.post(UPSERT, {"docs": []}, token=token).json()["details"] == {"parameter": "documents"}
    assert writer.post(UPSERT, {"documents": "x"}, token=token).json()["details"] == {"parameter": "documents"}


def test_a_large_partition_is_chunked_and_reported(writer: Service) -> None:
    body = writer.post(
        UPSERT, {"documents": [doc(id=f"c{n:03d}") for n in range(120)]}, token=writer_token(writer)
    ).json()
    assert body["summary"]["written"] == 120
    assert body["summary"]["transactions"] == 3  # 240 operations (row + index entity each), 100 a transaction
    assert len(highlights(writer)) == 100


def test_deletes_at_every_level(writer: Service) -> None:
    token = writer_token(writer)
    writer.post(
        UPSERT,
        {
            "documents": [
                doc(id="keep", record_id="opp-1"),
                doc(id="gone", record_id="opp-1"),
                doc("recordDetails", id="rd", record_id="opp-2"),
                doc(id="opp2", record_id="opp-2"),
                attached("emailSummary", id="both", record_id="opp-3", contact="megan@fabrikam.example"),
                attached("emailSummary", id="contact-only", contact="megan@fabrikam.example"),
                doc(id="b-1", tenant=TENANT_B),
                doc(id="b-2", tenant=TENANT_B, record_id="opp-9"),
            ]
        },
        token=token,
    )

    one = writer.post(
        DELETE,
        document_delete("gone"),
        token=token,
    )
    assert one.json() == {"deleted": 1, "stale": 0, "failed": 0, "complete": True}
    assert highlights(writer) == ["keep"]

    record = writer.post(
        DELETE, {"tenantId": TENANT_A, "scope": "record", "recordType": "Opportunity", "recordId": "opp-2"}, token=token
    )
    assert record.json() == {"deleted": 2, "stale": 0, "failed": 0, "complete": True}
    assert highlights(writer, record="opp-2") == []

    contact = delete_fully(
        writer, {"tenantId": TENANT_A, "scope": "contact", "contactEmail": "MEGAN@fabrikam.example"}, token
    )
    assert contact["deleted"] == 2 and contact["stale"] == contact["failed"] == 0
    email = writer.post(
        "/api/enhanceskills/email-insights-v2",
        {
            "resourceData": {"from": "megan@fabrikam.example"},
            "relatedEntities": [{"entityId": "opp-3", "entityType": "opportunity"}],
        },
    )
    assert email.json()["value"] == []  # the copy attached to the record went too

    b_rows_before = [r for r in rows(writer) if r["PartitionKey"].startswith(TENANT_B)]
    tenant = delete_fully(writer, {"tenantId": TENANT_A, "scope": "tenant"}, token)
    assert tenant["deleted"] == 1 and tenant["stale"] == tenant["failed"] == 0
    remaining = rows(writer)
    assert not [r for r in remaining if r["PartitionKey"].startswith(TENANT_A)]
    assert [r for r in remaining if r["PartitionKey"].startswith(TENANT_B)] == b_rows_before
    assert len([r for r in remaining if r["RowKey"].startswith("e|")]) == 2


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({"scope": "tenant"}, "tenantId"),
        ({"tenantId": TENANT_A, "scope": "everything"}, "scope"),
        ({"tenantId": TENANT_A, "scope": "record", "recordType": "opportunity"}, "recordId"),
        (
            {"tenantId": TENANT_A, "scope": "document", "id": "x", "recordType": "opportunity", "recordId": "r"},
            "extensionPoint",
        ),
        ({"tenantId": TENANT_A, "scope": "document", "id": "x", "extensionPoint": "opportunityInsights"}, "recordId"),
        (
            {
                "tenantId": TENANT_A,
                "scope": "document",
                "id": "x",
                "extensionPoint": "nope",
                "recordType": "o",
                "recordId": "r",
            },
            "extensionPoint",
        ),
        ({"tenantId": TENANT_A, "scope": "contact"}, "contactEmail"),
        ({"tenantId": TENANT_A, "scope": "tenant", "continuation": "not-a-token"}, "continuation"),
        (
            {"tenantId": TENANT_A, "scope": "record", "recordType": "o", "recordId": "r", "continuation": "x"},
            "continuation",
        ),
        ({"tenantId": TENANT_A, "scope": "tenant", "version": 0}, "version"),
    ],
)
def test_bad_deletes_are_400_naming_the_field(writer: Service, body: dict[str, Any], parameter: str) -> None:
    response = writer.post(DELETE, body, token=writer_token(writer))
    assert response.status_code == 400
    assert response.json()["details"] == {"parameter": parameter}


def test_a_moved_document_never_appears_twice_or_not_at_all_to_concurrent_readers(writer: Service) -> None:
    token = writer_token(writer)
    writer.post(
        UPSERT,
        {
            "documents": [doc(id=f"still-{n}", date_time=f"2025-02-{n + 10}T00:00:00Z") for n in range(5)]
            + [doc(id="moving", date_time="2025-01-01T00:00:00Z")]
        },
        token=token,
    )
    stop = threading.Event()
    seen: list[int] = []
    errors: list[str] = []

    def read() -> None:
        reader_token = writer.token()
        import httpx

        with httpx.Client(base_url=writer.url, timeout=10) as client:
            while not stop.is_set():
                response = client.get(
                    HIGHLIGHTS,
                    params={"recordType": "opportunity", "recordId": "opp-1", "top": 100},
                    headers={"Authorization": f"Bearer {reader_token}"},
                )
                if response.status_code != 200:
                    errors.append(response.text)
                    continue
                seen.append(sum(i["description"] == "Insight moving" for i in response.json()["value"]))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    try:
        for n in range(60):
            when = "2025-03-01T00:00:00Z" if n % 2 == 0 else "2025-01-01T00:00:00Z"
            assert (
                writer.post(UPSERT, {"documents": [doc(id="moving", date_time=when)]}, token=token).status_code == 200
            )
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert not errors
    assert len(seen) > 30
    assert set(seen) == {1}


def test_expired_documents_are_not_served_after_ingestion(writer: Service) -> None:
    writer.post(
        UPSERT,
        {"documents": [doc(id="old", expiresAt="2001-01-01T00:00:00Z"), doc(id="new")]},
        token=writer_token(writer),
    )
    assert highlights(writer) == ["new"]


def test_ingestion_is_not_in_the_connector() -> None:
    definition = json.loads(
        (Path(__file__).resolve().parent.parent / "connector" / "apiDefinition.swagger.json").read_text()
    )
    assert not [path for path in definition["paths"] if "ingest" in path]


def test_an_entity_stored_by_the_first_format_is_still_read(service: Service) -> None:
    """Schema evolution: an entity as the first format (V=1) wrote it, kept as a fixture, in a
    table as it was then (no marker saying it holds only the current form)."""
    service.table.delete_entity("~meta", "schema")
    for entity in json.loads((Path(__file__).parent / "fixtures" / "entities_v1.json").read_text()):
        service.table.upsert_entity(entity)
    body = service.get(
        HIGHLIGHTS,
        {"recordType": "opportunity", "recordId": "fixture-opp", "crmType": "Dynamics 365"},
        **{"Accept-Language": "fr"},
    ).json()
    assert body == {
        "value": [
            {
                "title": "Relecloud",
                "description": "Budget approuvé",
                "dateTime": "2025-03-02T12:30:00Z",
                "additionalProperties": {"Source": "Appel"},
            }
        ],
        "hasMoreResults": False,
    }
