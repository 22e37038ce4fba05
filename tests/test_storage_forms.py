"""Existing data keeps working: rows of the first storage form (13-digit `d|` keys, no index
entity) are read as before, replaced by one current row when written or deleted, and rewritten by
`manage.py migrate`; and the expiry purge runs as a timer, through the runtime."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from azure.data.tables import TableClient

from devhost.azurite import Azurite
from shared.settings import get_settings
from shared.storage import InsightsStore, build_table_client
from tests.conftest import Service, attached, doc
from tests.proxies import LoopbackProxy
from tests.test_data_cli import cli
from tests.test_ingestion import DELETE, UPSERT, document_delete, rows, writer, writer_token
from tests.test_write_path import activity, activity_ids, data_rows

__all__ = ["writer"]

_MAX_MS = 9_999_999_999_999


def _old_time(value: str) -> str:
    """How the first form wrote a date: `strftime` years (year 1 as `1`), milliseconds if any."""
    when = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{when.microsecond // 1000:03d}Z" if when.microsecond else "Z")


def first_form(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The entities the first form's writer stored for a document: one row per partition (the
    record's and the contact's), each naming the other as its twin."""
    enc = lambda value: quote(value, safe="")  # noqa: E731
    prefix = f"{enc(data['tenantId'])}|{enc(data['extensionPoint'])}"
    partitions = []
    if data.get("recordId"):
        partitions.append(f"{prefix}|r|{enc(data['recordType'])}|{enc(data['recordId'])}")
    if data.get("contactEmail"):
        partitions.append(f"{prefix}|c|{enc(data['contactEmail'])}")
    when = data.get("dateTime")
    millis = int(datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp() * 1000) if when else None
    row = f"d|{(_MAX_MS if millis is None else _MAX_MS - millis):013d}|{enc(data['id'])}"
    return [
        {
            "PartitionKey": pk,
            "RowKey": row,
            "V": 1,
            "Id": data["id"],
            "Ep": data["extensionPoint"],
            "Tenant": data["tenantId"],
            "RecordType": data.get("recordType", ""),
            "RecordId": data.get("recordId", ""),
            "Contact": data.get("contactEmail", ""),
            "Twin": next((other for other in partitions if other != pk), ""),
            "Crm": "",
            "Org": "",
            "DateTime": _old_time(when) if when else "",
            "Exp": _old_time(data["expiresAt"]) if data.get("expiresAt") else "",
            "Lang": "en",
            "Fields": json.dumps(data["fields"]),
            "Localized": "{}",
            "Prompts": "[]",
        }
        for pk in partitions
    ]


def store_first_form(service: Service, *documents: dict[str, Any]) -> None:
    """Rows as the first form stored them, in a table as it was then (no marker saying it holds
    only the current form)."""
    service.table.delete_entity("~meta", "schema")
    for data in documents:
        for entity in first_form(data):
            service.table.upsert_entity(entity)


def test_first_form_rows_are_read_in_date_order_among_current_rows(writer: Service) -> None:
    # year 1 was stored as "1-01-01T00:00:00Z" under a 14-digit key: it made every read a 500
    store_first_form(
        writer,
        activity("old-2024", "2024-01-01T00:00:00Z"),
        activity("old-2025", "2025-06-01T00:00:00Z"),
        activity("old-year-1", "0001-01-01T00:00:00Z"),
    )
    assert any(r["DateTime"] == "1-01-01T00:00:00Z" for r in rows(writer))
    token = writer_token(writer)
    writer.post(
        UPSERT,
        {"documents": [activity("new-2025", "2025-01-01T00:00:00Z"), activity("new-2026", "2026-01-01T00:00:00Z")]},
        token=token,
    )
    assert activity_ids(writer) == ["new-2026", "old-2025", "new-2025", "old-2024", "old-year-1"]
    assert activity_ids(writer, top=2, skip=1) == ["old-2025", "new-2025"]
    window = {"startDateTime": "2024-06-01T00:00:00Z", "endDateTime": "2025-12-31T00:00:00Z"}
    assert activity_ids(writer, **window) == ["old-2025", "new-2025"]


def test_writing_or_deleting_a_first_form_document_leaves_one_current_row(writer: Service) -> None:
    both = attached("emailSummary", id="mail", record_id="opp-1", contact="megan@fabrikam.example")
    store_first_form(writer, both, doc(id="gone"))
    assert len([r for r in rows(writer) if r["RowKey"].startswith("d|")]) == 3
    token = writer_token(writer)
    changed = {**both, "dateTime": "2025-09-01T00:00:00Z"}
    assert writer.post(UPSERT, {"documents": [changed]}, token=token).json()["summary"]["written"] == 1
    target = document_delete("gone")
    assert writer.post(DELETE, target, token=token).json()["deleted"] == 1
    stored = data_rows(writer)
    assert sorted((r["RowKey"][:2], r["Id"], r["PartitionKey"].split("|")[2]) for r in stored) == [
        ("e|", "mail", "c"),
        ("e|", "mail", "r"),
    ]
    assert all(r["DateTime"] == "2025-09-01T00:00:00.000Z" for r in stored)


def test_migrate_rewrites_the_first_form_resumably_and_idempotently(writer: Service) -> None:
    documents = [
        activity("a1", "2025-01-01T00:00:00Z"),
        activity("a2", "0001-01-01T00:00:00Z"),
        attached("emailSummary", id="mail", record_id="opp-1", contact="megan@fabrikam.example"),
        attached("emailSummary", id="mail", contact="megan@fabrikam.example", date_time="2025-02-01T00:00:00Z"),
        doc(id="expired", expiresAt="2001-01-01T00:00:00Z"),
    ]
    store_first_form(writer, *documents)
    broken = {**first_form(activity("broken", "2025-03-01T00:00:00Z"))[0], "Fields": "{not json"}
    writer.table.upsert_entity(broken)
    before = activity_ids(writer)
    # a current-form write of a1 already happened: its first-form row is a leftover
    writer.post(
        UPSERT,
        {
            "documents": [
                {**activity("a1", "2025-01-01T00:00:00Z"), "fields": {"title": "Activity a1", "description": "new"}}
            ]
        },
        token=writer_token(writer),
    )
    store_first_form(writer, activity("a1", "2025-01-01T00:00:00Z"))

    first = cli("migrate")
    assert first.returncode == 0, first.stderr
    assert "migrated 4 document(s); deleted 1 leftover row(s); left 1 invalid row(s)" in first.stdout
    assert "left as it is: row d|" in first.stderr and "unreadable" in first.stderr
    legacy = [r for r in rows(writer) if r["RowKey"].startswith("d|")]
    assert [r["Id"] for r in legacy] == ["broken"]
    assert activity_ids(writer) == before
    described = writer.get("/api/enhanceskills/activities", {"recordType": "opportunity", "recordId": "opp-1"}).json()[
        "value"
    ]
    assert next(i for i in described if i["title"] == "Activity a1")["description"] == "new"  # the newer write kept
    current = data_rows(writer)
    assert len([r for r in current if r["Id"] == "mail"]) == 3  # the record's (and its copy), the contact's own
    assert all(r["V"] == 2 for r in current if r["RowKey"].startswith("e|"))

    second = cli("migrate")
    assert "migrated 0 document(s); deleted 0 leftover row(s); left 1 invalid row(s)" in second.stdout
    assert data_rows(writer) == current


def test_the_purge_timer_deletes_expired_documents_through_the_runtime(writer: Service) -> None:
    token = writer_token(writer)
    documents = [
        doc(id="expired", expiresAt="2001-01-01T00:00:00Z"),
        doc(id="rewritten", expiresAt="2001-01-01T00:00:00Z"),
        doc(id="future", expiresAt="2999-01-01T00:00:00Z"),
        attached("emailSummary", id="both", record_id="opp-1", contact="a@b.example", expiresAt="2001-01-01T00:00:00Z"),
    ]
    writer.post(UPSERT, {"documents": documents}, token=token)
    # rewritten without an expiry: its old listing must not delete it
    writer.post(UPSERT, {"documents": [doc(id="rewritten")]}, token=token)
    listed = [r for r in rows(writer) if r["PartitionKey"].startswith("~expiry|")]
    assert sorted(r["PartitionKey"] for r in listed) == ["~expiry|2001-01-01"] * 3 + ["~expiry|2999-01-01"]

    with httpx.Client(base_url=writer.url, timeout=10) as client:
        assert client.post("/admin/functions/purge_expired", json={"input": ""}).status_code == 202
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        remaining = sorted({r["Id"] for r in data_rows(writer)})
        if remaining == ["future", "rewritten"]:
            break
        time.sleep(0.2)
    assert sorted({r["Id"] for r in data_rows(writer)}) == ["future", "rewritten"]
    listed = [r for r in rows(writer) if r["PartitionKey"].startswith("~expiry|")]
    assert [r["PartitionKey"] for r in listed] == ["~expiry|2999-01-01"]


def _store_through(proxy: LoopbackProxy, azurite: Azurite, table: str) -> InsightsStore:
    settings = get_settings().model_copy(
        update={
            "insights_storage_connection_string": proxy.url_of(azurite.connection_string, azurite.port),
            "insights_table_name": table,
        }
    )
    return InsightsStore(build_table_client(settings))


def test_a_table_the_infrastructure_created_is_used_as_it_is(service: Service, azurite: Azurite) -> None:
    # Deployed, the table comes from Bicep and the data commands' caller may hold data rights on
    # that table only: asking to create it would be refused, so it is never asked.
    made_by_infra = "t" + uuid.uuid4().hex[:20]
    TableClient.from_connection_string(azurite.connection_string, table_name=made_by_infra).create_table()
    proxy = LoopbackProxy(azurite.port)
    try:
        store = _store_through(proxy, azurite, made_by_infra)
        service.run(store.ensure_table())
        assert not any(line.startswith("POST /devstoreaccount1/Tables") for line in proxy.lines), proxy.lines
        # empty: it holds the current form only, as a table created here does
        assert service.run(store.first_form_possible()) is False
        service.run(store.close())
        missing = "t" + uuid.uuid4().hex[:20]
        store = _store_through(proxy, azurite, missing)
        service.run(store.ensure_table())
        assert any(line.startswith("POST /devstoreaccount1/Tables") for line in proxy.lines)
        assert service.run(store.first_form_possible()) is False
        service.run(store.close())
    finally:
        proxy.close()


def test_an_existing_table_with_first_form_rows_is_not_marked(service: Service) -> None:
    store_first_form(service, activity("old", "2025-01-02T00:00:00Z"))
    fresh = InsightsStore(build_table_client(get_settings()))
    service.run(fresh.ensure_table())
    assert service.run(fresh.first_form_possible()) is True
    assert "~meta" not in {e["PartitionKey"] for e in service.table.list_entities()}
    service.run(fresh.close())
