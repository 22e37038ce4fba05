"""CRM record details and key sales info over real HTTP, through the dev host, against Azurite."""

from __future__ import annotations

import pytest

from tests.conftest import ORG, TENANT_A, TENANT_B, Service, doc

RELATED = "/api/enhanceskills/related-records"
HIGHLIGHTS = "/api/enhanceskills/sales-highlights"


def _ids(response_json: dict) -> list[str]:
    return [item["description"].removeprefix("Insight ") for item in response_json["value"]]


@pytest.fixture
def five(service: Service) -> Service:
    service.load([doc(id=f"i{n}", date_time=f"2025-03-0{n}T10:00:00Z") for n in range(1, 6)])
    return service


def test_key_sales_info_newest_first_with_contract_shape(five: Service) -> None:
    response = five.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": "opp-1"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"  # as the runtime writes it (no charset)
    body = response.json()
    assert body["hasMoreResults"] is False
    assert _ids(body) == ["i5", "i4", "i3", "i2", "i1"]
    assert body["value"][0] == {"title": "Relecloud", "description": "Insight i5", "dateTime": "2025-03-05T10:00:00Z"}


@pytest.mark.parametrize(
    ("skip", "top", "expected", "more"),
    [
        (0, 5, ["i5", "i4", "i3", "i2", "i1"], False),  # top = count
        (0, 4, ["i5", "i4", "i3", "i2"], True),  # top = count - 1
        (0, 6, ["i5", "i4", "i3", "i2", "i1"], False),
        (4, 1, ["i1"], False),
        (3, 1, ["i2"], True),
        (5, 10, [], False),  # skip = count
        (50, 10, [], False),  # skip past the end
        (1, 2, ["i4", "i3"], True),
    ],
)
def test_paging_boundaries(five: Service, skip: int, top: int, expected: list[str], more: bool) -> None:
    body = five.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": "opp-1", "skip": skip, "top": top}).json()
    assert _ids(body) == expected
    assert body["hasMoreResults"] is more


def test_top_defaults_to_ten_and_is_clamped_to_100(service: Service) -> None:
    service.load([doc(id=f"n{n:03d}", date_time=f"2025-01-01T00:{n // 60:02d}:{n % 60:02d}Z") for n in range(101)])
    default = service.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": "opp-1"}).json()
    assert len(default["value"]) == 10 and default["hasMoreResults"] is True
    clamped = service.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": "opp-1", "top": 500}).json()
    assert len(clamped["value"]) == 100
    assert clamped["hasMoreResults"] is True  # 101 stored, 100 applied
    rest = service.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": "opp-1", "top": 500, "skip": 1}).json()
    assert len(rest["value"]) == 100 and rest["hasMoreResults"] is False


def test_no_data_is_an_empty_page_not_404(service: Service) -> None:
    response = service.get(RELATED, {"recordType": "account", "recordId": "nothing-here"})
    assert response.status_code == 200
    assert response.json() == {"value": [], "hasMoreResults": False}


def test_record_details_shape_and_property_order(service: Service) -> None:
    props = {"Zeta": "1", "Alpha": "2", "Mid": "3"}
    service.load(
        [
            doc(
                "recordDetails",
                id="q1",
                fields={
                    "recordId": "Q-1",
                    "recordTypeDisplayName": "Quote",
                    "recordTypePluralDisplayName": "Quotes",
                    "recordType": "quote",
                    "recordTitle": "Quote one",
                    "url": "https://crm.example/q/1",
                    "additionalProperties": props,
                },
            )
        ]
    )
    item = service.get(RELATED, {"recordType": "opportunity", "recordId": "opp-1"}).json()["value"][0]
    assert item == {
        "recordId": "Q-1",
        "recordTypeDisplayName": "Quote",
        "recordTypePluralDisplayName": "Quotes",
        "recordType": "quote",
        "recordTitle": "Quote one",
        "url": "https://crm.example/q/1",
        "additionalProperties": props,
    }
    assert list(item["additionalProperties"]) == ["Zeta", "Alpha", "Mid"]
    assert "dateTime" not in item


@pytest.mark.parametrize(
    ("record_type", "crm_type"),
    [("Opportunity", "Dynamics 365"), (" OPPORTUNITY ", "dynamics365"), ("opportunity", "Dynamics365")],
)
def test_record_and_crm_type_spellings(service: Service, record_type: str, crm_type: str) -> None:
    service.load([doc(id="x", crmType="Dynamics 365")])
    body = service.get(HIGHLIGHTS, {"recordType": record_type, "recordId": "opp-1", "crmType": crm_type}).json()
    assert _ids(body) == ["x"]


def test_documents_of_another_crm_type_are_not_served(service: Service) -> None:
    service.load([doc(id="d365", crmType="Dynamics 365"), doc(id="sf", crmType="Salesforce"), doc(id="any")])
    body = service.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": "opp-1", "crmType": "Salesforce"}).json()
    assert sorted(_ids(body)) == ["any", "sf"]


def test_guid_record_ids_match_in_any_case_and_braces(service: Service) -> None:
    service.load([doc(id="g", record_id="8D2F6A1C-5B3E-4F7A-9C2D-1E4B6A8F3C50")])
    for spelling in ("8d2f6a1c-5b3e-4f7a-9c2d-1e4b6a8f3c50", "{8D2F6A1C-5B3E-4F7A-9C2D-1E4B6A8F3C50}"):
        assert _ids(service.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": spelling}).json()) == ["g"]


def test_tenants_with_the_same_record_ids_never_see_each_other(service: Service) -> None:
    service.load([doc(id="a-only", tenant=TENANT_A), doc(id="b-only", tenant=TENANT_B)])
    query = {"recordType": "opportunity", "recordId": "opp-1"}
    assert _ids(service.get(HIGHLIGHTS, query, token=service.token(tenant=TENANT_A)).json()) == ["a-only"]
    assert _ids(service.get(HIGHLIGHTS, query, token=service.token(tenant=TENANT_B)).json()) == ["b-only"]


def test_org_scoping(service: Service) -> None:
    service.load(
        [
            doc(id="contoso", crmOrgUrl=ORG, date_time="2025-03-03T00:00:00Z"),
            doc(id="other", crmOrgUrl="other.crm.dynamics.com", date_time="2025-03-02T00:00:00Z"),
            doc(id="unscoped", date_time="2025-03-01T00:00:00Z"),
        ]
    )
    base = {"recordType": "opportunity", "recordId": "opp-1"}
    assert _ids(service.get(HIGHLIGHTS, {**base, "crmOrgUrl": ORG}).json()) == ["contoso", "unscoped"]
    assert _ids(
        service.get(HIGHLIGHTS, {**base, "crmOrgUrl": "https://CONTOSO.crm.dynamics.com/main.aspx"}).json()
    ) == ["contoso", "unscoped"]
    assert _ids(service.get(HIGHLIGHTS, {**base, "crmOrgUrl": "other.crm.dynamics.com"}).json()) == [
        "other",
        "unscoped",
    ]
    assert _ids(service.get(HIGHLIGHTS, base).json()) == ["unscoped"]
    assert _ids(service.get(HIGHLIGHTS, {**base, "crmOrgUrl": "not a host ✓"}).json()) == ["unscoped"]


@pytest.fixture
def bilingual(service: Service) -> Service:
    service.load(
        [
            doc(
                "recordDetails",
                id="c1",
                language="en",
                fields={
                    "recordId": "C-1",
                    "recordTypeDisplayName": "Contract",
                    "recordTypePluralDisplayName": "Contracts",
                    "recordType": "contract",
                    "recordTitle": "Master agreement",
                    "additionalProperties": {"Status": "Active", "Value": "$10"},
                },
                localized={
                    "fr": {
                        "recordTypeDisplayName": "Contrat",
                        "recordTypePluralDisplayName": "Contrats",
                        "recordTitle": "Contrat-cadre",
                        "additionalProperties": {"Statut": "Actif"},
                    },
                    "de-CH": {"recordTitle": "Rahmenvertrag"},
                },
            )
        ]
    )
    return service


@pytest.mark.parametrize(
    ("accept", "title", "language"),
    [
        ("fr", "Contrat-cadre", "fr"),
        ("fr-CA", "Contrat-cadre", "fr"),  # falls back to the primary language
        ("es, fr;q=0.8, en;q=0.9", "Master agreement", "en"),  # quality values decide
        ("es, fr;q=0.9, en;q=0.8", "Contrat-cadre", "fr"),
        ("ja", "Master agreement", "en"),  # the document's own language
        ("de", "Rahmenvertrag", "de-ch"),  # any tag of the same primary language
        ("fr;q=0, en", "Master agreement", "en"),
        ("*", "Master agreement", "en"),
        ("", "Master agreement", "en"),
    ],
)
def test_accept_language_negotiation(bilingual: Service, accept: str, title: str, language: str) -> None:
    response = bilingual.get(RELATED, {"recordType": "opportunity", "recordId": "opp-1"}, **{"Accept-Language": accept})
    assert response.json()["value"][0]["recordTitle"] == title
    assert response.headers["content-language"] == language


def test_a_localized_map_replaces_the_whole_map(bilingual: Service) -> None:
    item = bilingual.get(
        RELATED, {"recordType": "opportunity", "recordId": "opp-1"}, **{"Accept-Language": "fr"}
    ).json()["value"][0]
    assert item["additionalProperties"] == {"Statut": "Actif"}
    assert item["recordType"] == "contract"  # not natural language: never translated


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"recordType": "opportunity"}, "recordId"),
        ({"recordId": "opp-1"}, "recordType"),
        ({"recordType": "opportunity", "recordId": "  "}, "recordId"),
        ({"recordType": "opportunity", "recordId": "opp-1", "top": "abc"}, "top"),
        ({"recordType": "opportunity", "recordId": "opp-1", "top": "0"}, "top"),
        ({"recordType": "opportunity", "recordId": "opp-1", "top": "1.5"}, "top"),
        ({"recordType": "opportunity", "recordId": "opp-1", "top": "99999999999"}, "top"),
        ({"recordType": "opportunity", "recordId": "opp-1", "skip": "-1"}, "skip"),
        ({"recordType": "opportunity", "recordId": "opp-1", "skip": "x"}, "skip"),
        ({"recordType": "opportunity", "recordId": "x" * 300}, "recordId"),
    ],
)
@pytest.mark.parametrize("path", [RELATED, HIGHLIGHTS])
def test_bad_inputs_are_400_naming_the_parameter(service: Service, path: str, params: dict, parameter: str) -> None:
    response = service.get(path, params, **{"x-ms-client-request-id": "req-42"})
    assert response.status_code == 400
    body = response.json()
    assert body["errorCode"] == "INVALID_REQUEST"
    assert f"'{parameter}'" in body["errorMessage"]
    assert body["activityId"] == "req-42"
    assert body["details"] == {"parameter": parameter}


def test_unknown_parameters_are_ignored(five: Service) -> None:
    response = five.get(
        HIGHLIGHTS, {"recordType": "opportunity", "recordId": "opp-1", "top": 1, "foo": "bar", "connectorId": "x"}
    )
    assert response.status_code == 200
    assert _ids(response.json()) == ["i5"]


def test_request_id_is_echoed_and_tags_every_log_line(five: Service, log_lines: pytest.LogCaptureFixture) -> None:
    response = five.get(
        HIGHLIGHTS,
        {"recordType": "opportunity", "recordId": "opp-1"},
        **{"x-ms-client-request-id": "trace-me-1", "x-ms-user-agent": "sales-copilot"},
    )
    assert response.headers["x-ms-client-request-id"] == "trace-me-1"
    ours = [r.getMessage() for r in log_lines.records if r.name.startswith("c4s") and "trace-me-1" in r.getMessage()]
    summary = [line for line in ours if "status=200" in line]
    assert summary and "operation=scp-get-sales-highlights" in summary[0] and f"tenant={TENANT_A}" in summary[0]
    assert "user_agent=sales-copilot" in summary[0] and "items=5" in summary[0] and "duration_ms=" in summary[0]


def test_a_request_id_is_generated_when_absent(five: Service) -> None:
    response = five.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": "opp-1"})
    assert len(response.headers["x-ms-client-request-id"]) == 36


def test_tokens_never_reach_the_log(five: Service, log_lines: pytest.LogCaptureFixture) -> None:
    token = five.token()
    five.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": "opp-1"}, token=token)
    five.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": "opp-1"}, token=token + "x")
    signature = token.split(".")[2]
    assert all(
        signature[:20] not in r.getMessage() and token.split(".")[1][:20] not in r.getMessage()
        for r in log_lines.records
    )


@pytest.mark.parametrize(
    "record_id",
    [
        "opp-1' or PartitionKey ne '",
        "' or 1 eq 1 or '",
        "opp-1') or (RowKey ne '",
        "opp-1/../opp-2",
        "opp#1?x=\\y",
        "opp-1%27",
    ],
)
def test_filter_injection_returns_nothing_it_should_not(service: Service, record_id: str) -> None:
    service.load([doc(id="secret", record_id="opp-2"), doc(id="mine", record_id="opp-1")])
    response = service.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": record_id})
    assert response.status_code == 200
    assert response.json() == {"value": [], "hasMoreResults": False}


def test_awkward_record_ids_round_trip(service: Service) -> None:
    odd = "a/b\\c#d?e'f|g%20h end"
    service.load([doc(id="odd-doc", record_id=odd)])
    assert _ids(service.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": odd}).json()) == ["odd-doc"]
    assert _ids(service.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": "a/b\\c#d?e'f|g%20h"}).json()) == []


def test_documents_without_a_date_come_after_dated_ones(service: Service) -> None:
    service.load([doc(id="undated", date_time=None), doc(id="dated", date_time="2020-01-01T00:00:00Z")])
    body = service.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": "opp-1"}).json()
    assert _ids(body) == ["dated", "undated"]
    assert "dateTime" not in body["value"][1]


def test_datetimes_are_served_in_utc_with_z(service: Service) -> None:
    service.load([doc(id="tz", date_time="2025-03-01T12:30:00.250+02:00")])
    item = service.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": "opp-1"}).json()["value"][0]
    assert item["dateTime"] == "2025-03-01T10:30:00.250Z"


def test_missing_setting_is_a_500_naming_it_in_the_log_only(
    service: Service, log_lines: pytest.LogCaptureFixture
) -> None:
    service.monkeypatch.delenv("AUTH_AUDIENCES")
    service.set()
    response = service.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": "opp-1"})
    assert response.status_code == 500
    assert response.json()["errorCode"] == "INTERNAL_SERVER_ERROR"
    assert "AUTH_AUDIENCES" not in response.text
    assert any("AUTH_AUDIENCES" in r.getMessage() for r in log_lines.records)


def test_malformed_setting_is_named(service: Service, log_lines: pytest.LogCaptureFixture) -> None:
    service.set(AUTH_ALLOWED_TENANTS="not-a-guid", AUTH_LEEWAY_SECONDS="soon")
    response = service.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": "opp-1"})
    assert response.status_code == 500
    messages = " ".join(r.getMessage() for r in log_lines.records)
    assert "AUTH_ALLOWED_TENANTS" in messages and "AUTH_LEEWAY_SECONDS" in messages


def test_wrong_method_and_unknown_route_are_empty_404s_as_the_host_answers(service: Service) -> None:
    for response in (service.client.post(HIGHLIGHTS), service.client.get("/api/enhanceskills/nothing")):
        assert (response.status_code, response.content) == (404, b"")


def test_expired_documents_are_never_served(service: Service) -> None:
    service.load(
        [
            doc(id="expired", expiresAt="2020-01-01T00:00:00Z"),
            doc(id="current", expiresAt="2999-01-01T00:00:00+01:00"),
            doc(id="forever"),
        ]
    )
    body = service.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": "opp-1", "top": 1}).json()
    assert len(body["value"]) == 1 and body["hasMoreResults"] is True
    assert sorted(_ids(service.get(HIGHLIGHTS, {"recordType": "opportunity", "recordId": "opp-1"}).json())) == [
        "current",
        "forever",
    ]


def test_every_setting_is_in_the_sample_local_settings() -> None:
    import json
    from pathlib import Path

    from shared.settings import Settings

    values = json.loads((Path(__file__).resolve().parent.parent / "local.settings.sample.json").read_text())["Values"]
    assert {name.upper() for name in Settings.model_fields} <= set(values)
