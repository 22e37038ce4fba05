"""The data CLI against Azurite: load (JSONL and CSV), export, delete, purge-expired, stats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devhost.azurite import free_port
from tests.conftest import TENANT_A, TENANT_B, Service, attached, doc

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "insights.jsonl"


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
    )


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


def documents(service: Service) -> int:
    return sum(r["RowKey"].startswith("e|") for r in rows(service))


def test_load_export_load_round_trip_is_identical(service: Service, tmp_path: Path) -> None:
    assert cli("load", str(SAMPLE)).returncode == 0
    first = rows(service)
    exported = tmp_path / "all.jsonl"
    result = cli("export", "-o", str(exported))
    assert result.returncode == 0, result.stderr
    assert "exported 31 document(s)" in result.stderr
    service.table.delete_table()
    service.run(service.store.ensure_table())
    assert rows(service) == []
    assert cli("load", str(exported)).returncode == 0
    assert rows(service) == first
    again = tmp_path / "again.jsonl"
    cli("export", "-o", str(again))
    assert sorted(again.read_text().splitlines()) == sorted(exported.read_text().splitlines())


def test_export_a_tenant_and_a_record(service: Service) -> None:
    service.load(
        [
            doc(id="a1"),
            doc(id="a2", record_id="opp-2"),
            doc(id="b1", tenant=TENANT_B),
            attached("emailSummary", id="e", record_id="opp-1", contact="x@y.example"),
        ]
    )
    tenant = cli("export", "--tenant", TENANT_A)
    assert sorted(json.loads(line)["id"] for line in tenant.stdout.splitlines()) == ["a1", "a2", "e"]
    record = cli("export", "--tenant", TENANT_A, "--record-type", "Opportunity", "--record-id", "opp-1")
    assert sorted(json.loads(line)["id"] for line in record.stdout.splitlines()) == ["a1", "e"]
    both = next(json.loads(line) for line in record.stdout.splitlines() if '"e"' in line)
    assert both["contactEmail"] == "x@y.example" and both["recordId"] == "opp-1"


CSV = """tenantId,extensionPoint,id,recordType,recordId,dateTime,language,fields.title,fields.description,fields.additionalProperties,localized.fr.description,localized.fr.additionalProperties
{t},opportunityInsights,c1,opportunity,opp-1,2025-03-01T10:00:00Z,en,Relecloud,"Budget approved, $3.1M","{{""Zeta"": ""1"", ""Alpha"": ""2""}}",Budget approuvé,"{{""Zêta"": ""1""}}"
{t},opportunityInsights,c2,opportunity,opp-1,2025-03-02T10:00:00Z,en,Relecloud,"Multi
line description",,,
"""


def test_csv_loading_keeps_map_order_and_translations(service: Service, tmp_path: Path) -> None:
    path = tmp_path / "docs.csv"
    path.write_text(CSV.format(t=TENANT_A), encoding="utf-8")
    result = cli("load", str(path))
    assert result.returncode == 0, result.stderr
    body = service.get("/api/enhanceskills/sales-highlights", {"recordType": "opportunity", "recordId": "opp-1"}).json()
    assert [i["description"] for i in body["value"]] == ["Multi\nline description", "Budget approved, $3.1M"]
    assert list(body["value"][1]["additionalProperties"]) == ["Zeta", "Alpha"]
    fr = service.get(
        "/api/enhanceskills/sales-highlights",
        {"recordType": "opportunity", "recordId": "opp-1"},
        **{"Accept-Language": "fr"},
    ).json()
    assert fr["value"][1] == {
        "title": "Relecloud",
        "description": "Budget approuvé",
        "dateTime": "2025-03-01T10:00:00Z",
        "additionalProperties": {"Zêta": "1"},
    }


def test_csv_errors_name_the_line_and_column(service: Service, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "tenantId,extensionPoint,id,recordType,recordId,fields.title,fields.description,fields.additionalProperties\n"
        f"{TENANT_A},opportunityInsights,ok,opportunity,opp-1,Relecloud,fine,\n"
        f"{TENANT_A},opportunityInsights,bad-json,opportunity,opp-1,Relecloud,x,{{not json\n"
        f"{TENANT_A},opportunityInsights,long,opportunity,opp-1,Relecloud Insights Ltd.,x,\n",
        encoding="utf-8",
    )
    result = cli("load", str(path))
    assert result.returncode == 1
    assert f"{path}:3 (id bad-json): fields.additionalProperties: must be JSON" in result.stderr
    assert f"{path}:4 (id long): fields.title:" in result.stderr
    assert documents(service) == 0
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("tenantId,colour\n", encoding="utf-8")
    assert "unknown column(s) colour" in cli("load", str(unknown)).stderr


def test_delete_asks_for_confirmation_unless_yes(service: Service) -> None:
    service.load([doc(id="a1"), doc(id="a2", record_id="opp-2")])
    refused = cli("delete", "--tenant", TENANT_A, "--all", stdin="n\n")
    assert refused.returncode == 1 and "nothing deleted" in refused.stdout
    no_stdin = cli("delete", "--tenant", TENANT_A, "--all")
    assert no_stdin.returncode == 1
    assert documents(service) == 2
    confirmed = cli("delete", "--tenant", TENANT_A, "--all", stdin="y\n")
    assert confirmed.returncode == 0 and "deleted 2 document(s)" in confirmed.stdout
    assert documents(service) == 0


def test_delete_at_every_level(service: Service) -> None:
    service.load(
        [
            doc(id="d1"),
            doc(id="d2"),
            doc("recordDetails", id="r1", record_id="opp-2"),
            doc(id="r2", record_id="opp-2"),
            attached("emailDraftFiles", id="f1", contact="megan@fabrikam.example", record_id="opp-3"),
            attached("emailSummary", id="e1", contact="megan@fabrikam.example"),
            doc(id="b1", tenant=TENANT_B),
            doc(id="b2", tenant=TENANT_B, record_id="opp-2"),
        ]
    )
    b_rows = [r for r in rows(service) if r["PartitionKey"].startswith(TENANT_B)]
    out = cli(
        "delete",
        "--tenant",
        TENANT_A,
        "--extension-point",
        "opportunityInsights",
        "--record-type",
        "opportunity",
        "--record-id",
        "opp-1",
        "--id",
        "d1",
        "--yes",
    )
    assert "deleted 1 document(s)" in out.stdout
    assert (
        "deleted 2 document(s)"
        in cli("delete", "--tenant", TENANT_A, "--record-type", "opportunity", "--record-id", "opp-2", "--yes").stdout
    )
    assert (
        "deleted 2 document(s)"
        in cli("delete", "--tenant", TENANT_A, "--contact-email", "Megan@Fabrikam.example", "--yes").stdout
    )
    opp3 = [r for r in rows(service) if "opp-3" in r["PartitionKey"]]
    assert [(r["RowKey"], r["Row"]) for r in opp3] == [("i|f1", "")]  # f1 went from its record too: a tombstone
    assert "deleted 1 document(s)" in cli("delete", "--tenant", TENANT_A, "--all", "--yes").stdout
    assert not [r for r in rows(service) if r["PartitionKey"].startswith(TENANT_A)]
    assert [r for r in rows(service) if r["PartitionKey"].startswith(TENANT_B)] == b_rows


def test_purge_expired_removes_only_expired_documents(service: Service) -> None:
    service.load(
        [
            doc(id="old", expiresAt="2001-01-01T00:00:00Z"),
            doc(id="future", expiresAt="2999-01-01T00:00:00Z"),
            doc(id="forever"),
            attached(
                "emailSummary",
                id="old-both",
                record_id="opp-1",
                contact="a@b.example",
                expiresAt="2001-01-01T00:00:00Z",
            ),
        ]
    )
    result = cli("purge-expired")
    assert (
        result.returncode == 0 and "purged 2 expired document(s); collected 0 tombstone(s)" in result.stdout
    )  # old-both, and its copy
    ids = sorted(r["Id"] for r in rows(service) if r["RowKey"].startswith("e|"))
    assert ids == ["forever", "future"]


def test_stats_counts_documents_per_tenant_and_point(service: Service) -> None:
    service.load(
        [
            doc(id="a1"),
            doc(id="a2"),
            doc("recordDetails", id="r"),
            attached("emailSummary", id="e", record_id="opp-1", contact="a@b.example"),
            doc(id="b", tenant=TENANT_B),
        ]
    )
    out = cli("stats").stdout.splitlines()
    header = out[0].split()
    a_row = dict(zip(header, next(line for line in out if line.startswith(TENANT_A)).split(), strict=True))
    assert (
        a_row["opportunityInsights"] == "2"
        and a_row["recordDetails"] == "1"
        and a_row["emailSummary"] == "1"
        and a_row["total"] == "4"
    )
    assert out[-1].split()[-1] == "5"


@pytest.mark.parametrize("command", [("stats",), ("purge-expired",), ("export", "--tenant", TENANT_A)])
def test_a_store_that_cannot_be_reached_is_one_line_and_exit_2(command: tuple[str, ...]) -> None:
    closed = free_port()  # nothing listens there
    account = "devstoreaccount1"
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    unreachable = (
        f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
        f"TableEndpoint=http://127.0.0.1:{closed}/{account};"
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *command],
        cwd=ROOT,
        env={**os.environ, "INSIGHTS_STORAGE_CONNECTION_STRING": unreachable, "STORAGE_RETRIES": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"manage.py {command[0]}: "), result.stderr
    assert f"127.0.0.1:{closed}" in lines[0]


def test_every_command_has_help() -> None:
    for command in (
        "run",
        "test",
        "serve",
        "load",
        "export",
        "delete",
        "purge-expired",
        "stats",
        "mint-token",
        "check",
        "connector",
        "authority",
        "azurite",
    ):
        result = cli(command, "--help")
        assert result.returncode == 0 and "usage:" in result.stdout, command


def test_an_interrupted_load_run_again_ends_in_the_same_state(service: Service, tmp_path: Path) -> None:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    assert cli("load", str(SAMPLE)).returncode == 0
    complete = rows(service)
    service.table.delete_table()
    service.run(service.store.ensure_table())
    partial = tmp_path / "first-half.jsonl"
    partial.write_text("".join(lines[: len(lines) // 2]), encoding="utf-8")
    assert cli("load", str(partial)).returncode == 0  # the run that was interrupted
    assert cli("load", str(SAMPLE)).returncode == 0  # run again
    assert rows(service) == complete


def test_commands_get_batch_sized_storage_timeouts() -> None:
    """The data commands are not bound by a request's budget: a 100-row transaction against a
    large table may take longer than STORAGE_READ_TIMEOUT_SECONDS allows an answer's read."""
    from shared.settings import Settings, batch_settings

    request_path = Settings(
        insights_storage_connection_string="UseDevelopmentStorage=true",
        auth_audiences=["api://insights"],
        auth_allowed_tenants=["*"],
        storage_read_timeout_seconds=1.5,
        storage_retries=1,
    )
    batch = batch_settings(request_path)
    assert (batch.storage_read_timeout_seconds, batch.storage_retries) == (30.0, 3)
    assert request_path.storage_read_timeout_seconds == 1.5  # the service's own settings are untouched
    generous = request_path.model_copy(update={"storage_read_timeout_seconds": 45.0})
    assert batch_settings(generous).storage_read_timeout_seconds == 45.0  # never shortened
