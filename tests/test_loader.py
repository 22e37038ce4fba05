"""The loader: validation with line numbers, all-or-nothing files, idempotent upserts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TENANT_B, Service, doc

ROOT = Path(__file__).resolve().parent.parent


def run_load(service: Service, path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "load", str(path), *flags],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def table_rows(service: Service) -> list[dict[str, Any]]:
    return sorted(
        ({k: v for k, v in e.items()} for e in service.table.list_entities() if e["PartitionKey"] != "~meta"),
        key=lambda e: (e["PartitionKey"], e["RowKey"]),
    )


def write_jsonl(tmp_path: Path, docs: list[Any], name: str = "docs.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((d if isinstance(d, str) else json.dumps(d)) + "\n" for d in docs), encoding="utf-8")
    return path


def test_invalid_file_reports_lines_and_fields_and_writes_nothing(service: Service, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path,
        [
            doc(id="ok-1"),
            doc(id="long", fields={"title": "A partner name that is far too long", "description": "x"}),
            "{not json",
            doc(id="no-tz", date_time="2025-03-01T10:00:00"),
            doc(
                "recordDetails",
                id="bad-url",
                fields={
                    "recordId": "r",
                    "recordTypeDisplayName": "Quote",
                    "recordTypePluralDisplayName": "Quotes",
                    "recordType": "quote",
                    "recordTitle": "Q",
                    "url": "http://insecure.example/x",
                },
            ),
            {**doc(id="no-tenant"), "tenantId": "contoso"},
            doc(id="empty-desc", fields={"title": "Relecloud", "description": "  "}),
        ],
    )
    result = run_load(service, path)
    assert result.returncode == 1
    err = result.stderr
    assert f"{path}:2 (id long): fields.title:" in err and "20 characters" in err
    assert f"{path}:3: line: not valid JSON" in err
    assert f"{path}:4 (id no-tz): dateTime:" in err and "time zone" in err
    assert f"{path}:5 (id bad-url): fields.url:" in err and "https" in err
    assert f"{path}:6 (id no-tenant): tenantId:" in err
    assert f"{path}:7 (id empty-desc): fields.description:" in err
    assert ":1 " not in err
    assert "nothing written" in err
    assert table_rows(service) == []


def test_skip_bad_loads_the_valid_lines(service: Service, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path, [doc(id="ok-1"), "{oops", doc(id="ok-2")])
    result = run_load(service, path, "--skip-bad")
    assert result.returncode == 0, result.stderr
    assert "loaded 2 document(s)" in result.stdout and "skipped 1 invalid" in result.stdout
    ids = [e["Id"] for e in table_rows(service) if e["RowKey"].startswith("e|")]
    assert sorted(ids) == ["ok-1", "ok-2"]


def test_dry_run_writes_nothing(service: Service, tmp_path: Path) -> None:
    result = run_load(service, write_jsonl(tmp_path, [doc(id="ok-1")]), "--dry-run")
    assert result.returncode == 0 and "1 valid" in result.stdout
    assert table_rows(service) == []


def test_loading_the_same_file_twice_leaves_the_same_table(service: Service, tmp_path: Path) -> None:
    path = ROOT / "sample_data" / "insights.jsonl"
    assert run_load(service, path).returncode == 0
    first = table_rows(service)
    assert run_load(service, path).returncode == 0
    second = table_rows(service)
    assert len(first) > 10
    assert first == second


def test_a_moved_document_is_stored_once(service: Service) -> None:
    service.load([doc(id="m", date_time="2025-01-01T00:00:00Z"), doc(id="other", date_time="2025-02-01T00:00:00Z")])
    service.load([doc(id="m", date_time="2025-03-01T00:00:00Z", fields={"title": "Relecloud", "description": "moved"})])
    rows = [r for r in table_rows(service) if r["RowKey"].startswith("e|")]
    assert sorted(r["Id"] for r in rows) == ["m", "other"]
    body = service.get("/api/enhanceskills/sales-highlights", {"recordType": "opportunity", "recordId": "opp-1"}).json()
    assert [i["description"] for i in body["value"]] == ["moved", "Insight other"]


def test_more_than_100_operations_in_a_partition_are_chunked(service: Service) -> None:
    service.load([doc(id=f"bulk-{n:03d}", date_time=f"2025-01-01T00:{n // 60:02d}:{n % 60:02d}Z") for n in range(150)])
    rows = [r for r in table_rows(service) if r["RowKey"].startswith("e|")]
    assert len(rows) == 150


def test_sample_data_is_valid_and_covers_two_languages() -> None:
    from shared.documents import parse_jsonl

    with (ROOT / "sample_data" / "insights.jsonl").open(encoding="utf-8") as lines:
        parsed = list(parse_jsonl(lines))
    assert parsed and all(not p.errors for p in parsed)
    languages = {lang for p in parsed if p.document for lang in [p.document.language, *p.document.localized]}
    assert {"en", "fr"} <= languages


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"extensionPoint": "nope"}, "extensionPoint"),
        ({"recordId": None, "recordType": None}, "document"),
        ({"localized": {"fr": {"title": "x" * 21}}}, "localized.fr.title"),
        ({"localized": {"fr": {"url": "https://x.example"}}}, "document"),
        ({"fields": {"title": "Relecloud", "description": "x", "dateTime": "2025-01-01T00:00:00Z"}}, "document"),
        ({"expiresAt": "tomorrow"}, "expiresAt"),
        ({"language": "english!"}, "language"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_validation_names_the_field(data: dict[str, Any], field: str) -> None:
    from shared.documents import validate_document

    base = doc(id="v")
    base.update(data)
    base = {k: v for k, v in base.items() if v is not None}
    document, errors = validate_document(base)
    assert document is None
    assert errors[0].field == field, errors


def test_a_bulk_reload_that_moves_documents_keeps_one_row_each_and_looks_each_partition_up_once(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moves stay atomic in every partition, and a load reads each partition it touches once."""
    from tests.test_write_path import lookups_of

    lookups = lookups_of(monkeypatch)
    first = [
        doc(id=f"d{k}", record_id=f"opp-{r:02d}", date_time=f"2025-01-0{k + 1}T00:00:00Z")
        for r in range(30)
        for k in range(2)
    ] + [doc(id=f"b{r}", tenant=TENANT_B, record_id=f"opp-{r:02d}") for r in range(3)]

    def load(documents: list[dict[str, Any]]) -> Any:
        from shared.documents import validate_document
        from shared.storage import write_documents

        valid = [validate_document(d)[0] for d in documents]
        return service.run(write_documents(service.store, valid, optimistic=True))  # as `manage.py load` does

    assert load(first).count("written") == 63
    assert lookups == []  # new documents: written without looking first
    moved = load([{**d, "dateTime": d["dateTime"].replace("2025-", "2024-")} for d in first])
    assert moved.count("written") == 63 and moved.conflicts == 63  # each create met its document...
    assert len(lookups) == len(set(lookups)) == 33  # ...and its partition was looked up once
    rows = [r for r in table_rows(service) if r["RowKey"].startswith("e|")]
    assert len(rows) == 63
    assert all(r["DateTime"].startswith("2024-") for r in rows)
