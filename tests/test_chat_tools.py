"""The Sales chat tools over HTTP against Azurite: records found by name (case, accents, word
prefixes), tenants apart, the name index kept by the write path (versions, deletes, claims,
concurrency), and the record digest (localized, capped, inside the budget)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from shared.storage import as_int, names_partition, words_of
from tests.conftest import TENANT_A, TENANT_B, Service, attached, doc
from tests.test_ingestion import DELETE, UPSERT, writer, writer_token

__all__ = ["writer"]

FIND = "/api/chat/records"
DIGEST = "/api/chat/record-insights"
SAMPLE_TENANT = "3f9a1c2e-7b4d-4e6a-9c1f-2a8b5d7e4c10"
LITWARE_TENANT = "b2e4d6f8-1a3c-4e5f-8a7b-9c0d1e2f3a4b"
FABRIKAM_RENEWAL = "8d2f6a1c-5b3e-4f7a-9c2d-1e4b6a8f3c50"


def named(id: str, record_id: str, name: str | None, **extra: Any) -> dict[str, Any]:
    data = doc(id=id, record_id=record_id, **extra)
    if name is not None:
        data["recordName"] = name
    return data


def found(service: Service, name: str, token: str | None = None, **params: Any) -> list[dict[str, Any]]:
    response = service.get(FIND, {"name": name, **params}, token=token)
    assert response.status_code == 200, response.text
    return list(response.json()["records"])


def names(service: Service, name: str, **params: Any) -> list[str]:
    return [r["name"] for r in found(service, name, **params)]


def index_rows(service: Service, tenant: str = TENANT_A) -> list[dict[str, Any]]:
    return list(service.table.query_entities("PartitionKey eq @pk", parameters={"pk": names_partition(tenant)}))


def test_names_are_found_across_case_accents_and_word_prefixes(service: Service) -> None:
    service.load(
        [
            named("a", "opp-sg", "Société Générale – renouvellement 2026", crmOrgUrl="contoso.crm.dynamics.com"),
            named("b", "opp-fab", "Fabrikam Surface Hub renewal", recordUrl="https://crm.example/opp-fab"),
            named("c", "opp-con", "Contoso rollout"),
            named("d", "acc-fab", "Fabrikam, Inc.", record_type="account"),
        ]
    )
    assert names(service, "societe generale") == ["Société Générale – renouvellement 2026"]
    assert names(service, "SOCIÉTÉ gén") == ["Société Générale – renouvellement 2026"]
    assert names(service, "renouv") == ["Société Générale – renouvellement 2026"]
    assert names(service, "fabrikam ren") == ["Fabrikam Surface Hub renewal"]
    assert names(service, "hub") == ["Fabrikam Surface Hub renewal"]
    # whole words first, then the shorter name
    assert names(service, "fabrikam") == ["Fabrikam, Inc.", "Fabrikam Surface Hub renewal"]
    assert names(service, "fab", recordType="account") == ["Fabrikam, Inc."]
    assert names(service, "fab", top="1") == ["Fabrikam, Inc."]
    assert names(service, "abrikam") == []  # a word's start, not any part of it
    assert names(service, "contoso renewal") == []  # every word must match
    (fabrikam,) = found(service, "surface")
    assert fabrikam == {
        "recordType": "opportunity",
        "recordId": "opp-fab",
        "name": "Fabrikam Surface Hub renewal",
        "url": "https://crm.example/opp-fab",
    }  # no CRM scope: its document names none
    (generale,) = found(service, "generale")
    assert generale["crmOrgUrl"] == "contoso.crm.dynamics.com"


def test_turkish_dotted_and_dotless_i_match_one_another(service: Service) -> None:
    """ı, i, I and İ are one letter to a seller typing a Turkish name on any keyboard, on stored
    names and on queries alike; so are the other marked letters Unicode does not decompose."""
    service.load(
        [
            named("a", "opp-isik", "Işık Yazılım A.Ş."),
            named("b", "opp-muh", "IŞIK Mühendislik"),
            named("c", "opp-lodz", "Łódź Søndergaard Logistik"),
        ]
    )
    for query in ("ışık yazılım", "IŞIK YAZILIM", "isik yazilim", "İŞIK YAZILIM", "Işık yaz"):
        assert names(service, query) == ["Işık Yazılım A.Ş."], query
    for query in ("ışık", "Işık", "isik", "ISIK", "İşık"):
        assert sorted(names(service, query)) == ["IŞIK Mühendislik", "Işık Yazılım A.Ş."], query
    assert names(service, "muhendislik") == ["IŞIK Mühendislik"]
    assert names(service, "lodz sondergaard") == ["Łódź Søndergaard Logistik"]
    assert words_of("Işık Yazılım A.Ş.") == ["isik", "yazilim", "a", "s"]


def test_names_folded_by_older_rules_are_found_after_migrate(service: Service) -> None:
    """An index written before the folding learnt ı: its word rows are keys folded the old way, so
    no query reaches them until `manage.py migrate` re-folds them (once: a second run finds none)."""
    import unicodedata
    from urllib.parse import quote

    from tests.test_data_cli import cli

    def old_fold(text: str) -> str:
        decomposed = unicodedata.normalize("NFKD", text)
        return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()

    service.load([named("a", "opp-isik", "Işık Yazılım A.Ş.")])
    # the entry and word rows as the previous release wrote them
    rows_now = index_rows(service)
    (entry,) = [row for row in rows_now if row["RowKey"].startswith("n|")]
    suffix = {row["RowKey"].rsplit("|", 1)[1] for row in rows_now if row["RowKey"].startswith("w|")}.pop()
    for row in rows_now:
        if row["RowKey"].startswith("w|"):
            service.table.delete_entity(row["PartitionKey"], row["RowKey"])
    old_words = [old_fold(w) for w in ("Işık", "Yazılım", "A", "Ş")]
    assert old_words == ["isık", "yazılım", "a", "s"]
    old_entry = {k: v for k, v in entry.items() if k != "Fold"}
    old_entry["Words"] = json.dumps(old_words, ensure_ascii=False)
    service.table.upsert_entity(old_entry, mode="replace")
    shown = {k: v for k, v in old_entry.items() if k not in ("PartitionKey", "RowKey")}
    for word in old_words:
        key = f"w|{quote(word, safe='')}|{suffix}"
        service.table.upsert_entity({"PartitionKey": entry["PartitionKey"], "RowKey": key, **shown}, mode="replace")
    assert names(service, "isik") == []  # the old keys are out of the new folding's reach
    first = cli("migrate")
    assert first.returncode == 0, first.stderr
    assert "re-folded 1 record name(s)" in first.stdout
    for query in ("isik", "ışık yazılım", "IŞIK"):
        assert names(service, query) == ["Işık Yazılım A.Ş."], query
    words = sorted(r["RowKey"].split("|")[1] for r in index_rows(service) if r["RowKey"].startswith("w|"))
    assert words == ["a", "isik", "s", "yazilim"]  # the old rows went
    assert "re-folded 0 record name(s)" in cli("migrate").stdout


def test_tenants_never_see_each_others_records_or_names(service: Service) -> None:
    service.load(
        [
            named("a", "opp-1", "Alpine Ski House expansion"),
            named("b", "opp-1", "Bellows College pilot", tenant=TENANT_B),
        ]
    )
    assert names(service, "alpine") == ["Alpine Ski House expansion"]
    assert names(service, "bellows") == []
    token_b = service.token(tenant=TENANT_B)
    service.set(AUTH_ALLOWED_TENANTS=f"{TENANT_A},{TENANT_B}")
    assert [r["name"] for r in found(service, "bellows", token=token_b)] == ["Bellows College pilot"]
    assert found(service, "alpine", token=token_b) == []
    digest = service.get(DIGEST, {"recordType": "opportunity", "recordId": "opp-1"}, token=token_b).json()
    assert digest["name"] == "Bellows College pilot"
    assert [k["description"] for k in digest["keySalesInfo"]] == ["Insight b"]


def test_the_name_of_the_highest_version_wins_and_old_words_go(writer: Service) -> None:
    def send(*documents: dict[str, Any]) -> None:
        response = writer.post(UPSERT, json={"documents": list(documents)}, token=writer_token(writer))
        assert response.status_code == 200, response.text

    send(named("a", "opp-9", "Alpha deal", version=1))
    send(named("b", "opp-9", "Bravo deal", version=5))
    send(named("c", "opp-9", None, version=9))  # an unnamed newer document changes no name
    assert names(writer, "deal") == ["Bravo deal"]
    send(named("a", "opp-9", "Alpha deal", version=3))  # older than Bravo's: Bravo stays
    assert names(writer, "deal") == ["Bravo deal"]
    send(named("a", "opp-9", "Charlie deal", version=7))
    assert names(writer, "charlie") == ["Charlie deal"]
    assert names(writer, "bravo") == []
    words = sorted(r["RowKey"].split("|")[1] for r in index_rows(writer) if r["RowKey"].startswith("w|"))
    assert words == ["charlie", "deal"]


def test_a_record_whose_last_document_leaves_drops_out(writer: Service) -> None:
    writer.load([named("a", "opp-5", "Echo launch"), named("b", "opp-5", None)])
    assert names(writer, "echo") == ["Echo launch"]
    delete = {"tenantId": TENANT_A, "scope": "document", "extensionPoint": "opportunityInsights"}
    token = writer_token(writer)
    assert (
        writer.post(
            DELETE, json={**delete, "recordType": "opportunity", "recordId": "opp-5", "id": "a"}, token=token
        ).status_code
        == 200
    )
    # the named document left; the unnamed one has no name to give: the record is no longer found
    assert names(writer, "echo") == []
    writer.load([named("a", "opp-5", "Echo launch")])
    assert names(writer, "echo") == ["Echo launch"]
    assert (
        writer.post(
            DELETE,
            json={"tenantId": TENANT_A, "scope": "record", "recordType": "opportunity", "recordId": "opp-5"},
            token=token,
        ).status_code
        == 200
    )
    assert names(writer, "echo") == []
    assert [r["RowKey"] for r in index_rows(writer)] == ["m|names"]  # no entry, no word, no claim


def test_a_name_given_on_its_own_backfills_a_record(writer: Service) -> None:
    writer.load([named("a", "opp-7", None, crmOrgUrl="contoso.crm.dynamics.com")])
    assert names(writer, "foxtrot") == []
    line = {"tenantId": TENANT_A, "recordType": "Opportunity", "recordId": "opp-7", "recordName": "Foxtrot upgrade"}
    response = writer.post(UPSERT, json={"documents": [line]}, token=writer_token(writer))
    assert response.status_code == 200, response.text
    assert response.json()["results"] == [{"index": 0, "id": "opp-7", "status": "written"}]
    (record,) = found(writer, "foxtrot")
    assert (record["recordId"], record["crmOrgUrl"]) == ("opp-7", "contoso.crm.dynamics.com")
    # a name given for a record with no document waits for its documents
    writer.post(
        UPSERT, json={"documents": [{**line, "recordId": "opp-8", "recordName": "Golf"}]}, token=writer_token(writer)
    )
    assert names(writer, "golf") == []
    writer.load([named("g", "opp-8", None)])
    assert names(writer, "golf") == ["Golf"]
    # an older explicit version of a name is stale
    stale = {**line, "recordName": "Hotel", "version": 1}
    response = writer.post(UPSERT, json={"documents": [stale]}, token=writer_token(writer))
    assert response.json()["results"][0]["status"] == "stale"
    assert names(writer, "foxtrot") == ["Foxtrot upgrade"]


def test_the_name_index_stays_right_under_concurrent_writers(writer: Service) -> None:
    # 8 writers, 3 rounds, each writing the record's documents with its own name and version,
    # some deleting: at the end the entry is what the documents say, whatever the interleaving.
    token = writer_token(writer)
    barrier = threading.Barrier(8)
    errors: list[str] = []

    def worker(n: int, round_: int) -> None:
        version = round_ * 10 + n + 1
        data = named(f"doc-{n % 3}", "opp-c", f"Kilo{version} lima", version=version)
        with httpx.Client(base_url=writer.url, timeout=30) as client:
            barrier.wait()
            if n == 7 and round_ == 1:
                body = {
                    "tenantId": TENANT_A,
                    "scope": "document",
                    "extensionPoint": "opportunityInsights",
                    "recordType": "opportunity",
                    "recordId": "opp-c",
                    "id": "doc-0",
                    "version": version,
                }
                response = client.post(DELETE, json=body, headers={"Authorization": f"Bearer {token}"})
            else:
                response = client.post(UPSERT, json={"documents": [data]}, headers={"Authorization": f"Bearer {token}"})
            if response.status_code != 200:
                errors.append(response.text)

    for round_ in range(3):
        threads = [threading.Thread(target=worker, args=(n, round_)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    live = [
        r for r in writer.table.list_entities() if r["RowKey"].startswith("e|") and r["PartitionKey"].endswith("opp-c")
    ]
    truth = max(live, key=lambda r: as_int(r["Ver"]))
    (entry,) = [r for r in index_rows(writer) if r["RowKey"].startswith("n|")]
    assert (entry["Name"], as_int(entry["Ver"])) == (truth["Name"], as_int(truth["Ver"]))
    words = sorted(r["RowKey"].split("|")[1] for r in index_rows(writer) if r["RowKey"].startswith("w|"))
    assert words == sorted(words_of(truth["Name"]))
    assert names(writer, "lima") == [truth["Name"]]


# ---- the digest ---------------------------------------------------------------------------------


def load_sample(service: Service) -> None:
    from pathlib import Path

    from shared.documents import parse_jsonl

    path = Path(__file__).resolve().parent.parent / "sample_data" / "insights.jsonl"
    with path.open(encoding="utf-8") as lines:
        service.load([p.document.to_json() for p in parse_jsonl(lines) if p.document])
    service.set(AUTH_ALLOWED_TENANTS=f"{SAMPLE_TENANT},{LITWARE_TENANT}")


def test_the_digest_of_a_sample_record(service: Service) -> None:
    load_sample(service)
    token = service.token(tenant=SAMPLE_TENANT)
    (record,) = found(service, "fabrikam renewal", token=token)
    # one document names no org, the others contoso's: scoped to contoso's, which shows them all
    assert record["crmOrgUrl"] == "contoso.crm.dynamics.com"
    response = service.get(
        DIGEST,
        {"recordType": record["recordType"], "recordId": record["recordId"], "crmOrgUrl": record.get("crmOrgUrl", "")},
        token=token,
    )
    assert response.status_code == 200, response.text
    digest = response.json()
    assert (digest["name"], digest["language"]) == ("Fabrikam Surface Hub renewal", "en")
    assert digest["url"].startswith("https://contoso.crm.dynamics.com/")
    assert len(digest["keySalesInfo"]) == 4
    assert all(k["url"] for k in digest["keySalesInfo"])  # each cites something
    assert len(digest["relatedRecords"]) == 5  # all it has (4 scoped to contoso, 1 unscoped)
    assert digest["more"] == {"keySalesInfo": False, "relatedRecords": False, "activities": False}
    first = digest["relatedRecords"][0]
    assert set(first) == {"title", "type", "properties", "url"} and len(first["properties"]) <= 2
    dates = [a["dateTime"] for a in digest["activities"]]
    assert len(dates) == 4 and dates == sorted(dates, reverse=True)
    assert all(a["url"] for a in digest["activities"])
    assert len(json.dumps(digest)) < 8000  # small enough for a chat answer


def test_the_digest_is_localized(service: Service) -> None:
    load_sample(service)
    token = service.token(tenant=SAMPLE_TENANT)
    query = {"recordType": "opportunity", "recordId": FABRIKAM_RENEWAL, "crmOrgUrl": "contoso.crm.dynamics.com"}
    french = service.get(DIGEST, {**query, "language": "fr"}, token=token).json()
    assert french["language"] == "fr"
    assert "Contrat-cadre" in json.dumps(french, ensure_ascii=False) or "Devis" in json.dumps(
        french, ensure_ascii=False
    )
    by_header = service.get(DIGEST, query, token=token, **{"Accept-Language": "fr-CA,fr;q=0.9"}).json()
    assert by_header["language"] == "fr" and by_header["relatedRecords"] == french["relatedRecords"]
    # the parameter wins over the header
    english = service.get(DIGEST, {**query, "language": "en"}, token=token, **{"Accept-Language": "fr"}).json()
    assert english["language"] == "en"
    # without either, the documents' own language: Litware's are French
    litware = service.token(tenant=LITWARE_TENANT)
    (record,) = found(service, "quebec", token=litware)
    assert record["name"] == "Renouvellement du contrat Litware – Québec"
    litware_record = {"recordType": "opportunity", "recordId": record["recordId"], "crmOrgUrl": record["crmOrgUrl"]}
    own = service.get(DIGEST, litware_record, token=litware).json()
    assert own["language"] == "fr"
    assert own["keySalesInfo"][0]["description"] == "Litware a ouvert 2 tickets de support cette semaine."
    asked = service.get(DIGEST, litware_record, token=litware, **{"Accept-Language": "en"}).json()
    assert asked["keySalesInfo"][0]["description"] == "Litware opened 2 support tickets this week."


def test_a_record_with_hundreds_of_documents_answers_a_small_digest(service: Service) -> None:
    many = [
        named(
            f"h{n}",
            "opp-big",
            "India account plan" if n == 0 else None,
            date_time=f"2025-0{1 + n % 9}-1{n % 10}T10:00:00Z",
        )
        for n in range(300)
    ]
    many += [
        attached(
            "recordSummary",
            id=f"a{n}",
            record_id="opp-big",
            date_time=f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}T08:{n % 60:02d}:00Z",
        )
        for n in range(300)
    ]
    service.load(many)
    started = time.perf_counter()
    response = service.get(DIGEST, {"recordType": "opportunity", "recordId": "opp-big"})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    digest = response.json()
    assert len(digest["keySalesInfo"]) == 5 and len(digest["activities"]) == 5
    assert digest["more"] == {"keySalesInfo": True, "relatedRecords": False, "activities": True}
    assert digest["activities"][0]["dateTime"] == max(a["dateTime"] for a in digest["activities"])
    print(f"digest of 600 documents: {elapsed * 1000:.0f} ms, {len(response.content)} bytes")


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        (FIND, {}, "name"),
        (FIND, {"name": "!!! ---"}, "name"),
        (FIND, {"name": "x" * 201}, "name"),
        (FIND, {"name": "fab", "top": "0"}, "top"),
        (FIND, {"name": "fab", "top": "many"}, "top"),
        (DIGEST, {"recordId": "opp-1"}, "recordType"),
        (DIGEST, {"recordType": "opportunity"}, "recordId"),
        (DIGEST, {"recordType": "opportunity", "recordId": "opp-1", "language": "english!"}, "language"),
    ],
)
def test_bad_inputs_are_a_400_naming_the_parameter(
    service: Service, path: str, params: dict[str, str], parameter: str
) -> None:
    response = service.get(path, params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["errorCode"] == "INVALID_REQUEST"
    assert parameter in body["errorMessage"]


def test_the_tools_need_a_token_and_an_allowed_tenant(service: Service) -> None:
    assert service.client.get(FIND, params={"name": "x"}).status_code == 401
    outsider = service.token(tenant="99999999-9999-4999-8999-999999999999")
    assert service.get(FIND, {"name": "x"}, token=outsider).status_code == 403


def test_names_load_from_csv_and_survive_an_export(service: Service, tmp_path: Any) -> None:
    from tests.test_data_cli import cli

    csv = tmp_path / "names.csv"
    csv.write_text(
        "tenantId,extensionPoint,id,recordType,recordId,recordName,recordUrl,dateTime,fields.title,fields.description\n"
        f"{TENANT_A},opportunityInsights,n1,opportunity,opp-csv,Juliet rollout,https://crm.example/juliet,2025-03-01T10:00:00Z,Relecloud,One\n"
        f"{TENANT_A},opportunityInsights,n2,opportunity,opp-kilo,,,2025-03-01T10:00:00Z,Relecloud,Two\n"
        f"{TENANT_A},,,opportunity,opp-kilo,Kilo expansion,,,,\n",
        encoding="utf-8",
    )
    result = cli("load", str(csv))
    assert result.returncode == 0, result.stdout + result.stderr
    assert names(service, "juliet") == ["Juliet rollout"]
    assert names(service, "kilo") == ["Kilo expansion"]
    exported = tmp_path / "all.jsonl"
    result = cli("export", "--tenant", TENANT_A, "-o", str(exported))
    assert "exported 2 document(s) and 1 record name(s)" in result.stderr
    lines = [json.loads(line) for line in exported.read_text(encoding="utf-8").splitlines()]
    assert lines[-1]["recordName"] == "Kilo expansion" and "extensionPoint" not in lines[-1]
    service.table.delete_table()
    service.run(service.store.ensure_table())
    assert names(service, "kilo") == []
    assert cli("load", str(exported)).returncode == 0
    assert names(service, "kilo") == ["Kilo expansion"] and names(service, "juliet") == ["Juliet rollout"]
