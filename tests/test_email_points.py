"""Email summary and email draft file links: POST operations answered from the thread's records
and participants, over real HTTP against Azurite."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import ORG, TENANT_B, Service, attached

EMAIL = "/api/enhanceskills/email-insights-v2"
FILES = "/api/enhanceskills/content-suggestions"
SECRET = "Confidential-merger-codename-BLUEHERON"


def email(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "plaintextBody": f"Hi Alex, about {SECRET} ...",
        "fullHtmlBody": f"<p>Hi Alex, about {SECRET}</p>",
        "subject": f"Re: {SECRET}",
        "from": "Megan.Bowen@Fabrikam.example",
        "to": ["alex@contoso.example"],
        "cc": ["Lee Gu <LEE.GU@fabrikam.example>"],
        "bcc": ["hidden@fabrikam.example"],
        "sentDateTime": "2025-03-10T09:00:00-08:00",
        "messageId": "AAMkAGI2",
        "conversationId": "AAQkAGI2",
    }
    data.update(overrides)
    return data


def insights(body: dict[str, Any]) -> list[str]:
    return [i["insight"].removeprefix("Insight ") for i in body["value"]]


@pytest.fixture
def thread(service: Service) -> Service:
    service.load(
        [
            attached("emailSummary", id="rec-old", record_id="opp-1", date_time="2025-01-01T00:00:00Z"),
            attached("emailSummary", id="rec-new", record_id="opp-1", date_time="2025-02-01T00:00:00Z"),
            attached(
                "emailSummary", id="acct", record_id="acc-9", date_time="2025-01-15T00:00:00Z", recordType="account"
            ),
            attached(
                "emailSummary",
                id="megan-newest",
                contact="megan.bowen@fabrikam.example",
                date_time="2025-03-01T00:00:00Z",
            ),
            attached(
                "emailSummary",
                id="both",
                record_id="opp-1",
                contact="megan.bowen@fabrikam.example",
                date_time="2024-12-01T00:00:00Z",
            ),
            attached("emailSummary", id="lee", contact="lee.gu@fabrikam.example", date_time="2025-02-15T00:00:00Z"),
            attached(
                "emailSummary", id="bcc-only", contact="hidden@fabrikam.example", date_time="2025-03-05T00:00:00Z"
            ),
            attached("emailSummary", id="stranger", contact="someone@else.example", date_time="2025-03-05T00:00:00Z"),
        ]
    )
    return service


RELATED = [
    {"entityId": "opp-1", "entityType": "Opportunity", "entitySource": "connected"},
    {"entityId": "acc-9", "entityType": "account"},
]


def test_most_relevant_first_record_then_contact_then_newest(thread: Service) -> None:
    response = thread.post(EMAIL, {"resourceData": email(), "relatedEntities": RELATED})
    assert response.status_code == 200, response.text
    body = response.json()
    # record-attached (newest first), then contact-attached (newest first); "both" appears once,
    # as record-attached; bcc and unrelated addresses are not participants.
    assert insights(body) == ["rec-new", "acct", "rec-old", "both", "megan-newest", "lee"]
    assert body["hasMoreResults"] is False
    assert body["value"][0] == {"insight": "Insight rec-new"}


def test_without_related_records_the_newest_contact_insight_leads(thread: Service) -> None:
    body = thread.post(EMAIL, {"resourceData": email()}).json()
    assert insights(body) == ["megan-newest", "lee", "both"]


@pytest.mark.parametrize(
    ("skip", "top", "expected", "more"),
    [
        (0, 1, ["rec-new"], True),
        (0, 3, ["rec-new", "acct", "rec-old"], True),
        (2, 2, ["rec-old", "both"], True),  # the page crosses from records to contacts
        (4, 2, ["megan-newest", "lee"], False),
        (4, 3, ["megan-newest", "lee"], False),
        (5, 1, ["lee"], False),
        (6, 5, [], False),
    ],
)
def test_paging_across_records_and_contacts(
    thread: Service, skip: int, top: int, expected: list[str], more: bool
) -> None:
    body = thread.post(EMAIL, {"resourceData": email(), "relatedEntities": RELATED, "skip": skip, "top": top}).json()
    assert insights(body) == expected
    assert body["hasMoreResults"] is more


def test_a_contact_partition_that_repeats_record_documents_still_fills_the_page(service: Service) -> None:
    # every record-attached document is also on the contact; the contact's own one is oldest
    docs = [
        attached(
            "emailSummary", id=f"r{n}", record_id="opp-1", contact="x@y.example", date_time=f"2025-03-0{n}T00:00:00Z"
        )
        for n in range(1, 6)
    ]
    docs.append(attached("emailSummary", id="contact-only", contact="x@y.example", date_time="2024-01-01T00:00:00Z"))
    service.load(docs)
    body = service.post(
        EMAIL,
        {
            "resourceData": email(**{"from": "x@y.example", "cc": []}),
            "relatedEntities": [{"entityId": "opp-1", "entityType": "opportunity"}],
            "top": 6,
        },
    ).json()
    assert insights(body) == ["r5", "r4", "r3", "r2", "r1", "contact-only"]


def test_the_same_id_on_two_records_and_a_contact_is_three_documents(service: Service) -> None:
    """A document is (record or contact, id): `latest` on R1, on R2 and on a contact are three;
    a document stored with its record and its contact is still one."""
    service.load(
        [
            attached("emailSummary", id="latest", record_id="r1", date_time="2025-03-03T00:00:00Z"),
            attached("emailSummary", id="latest", record_id="r2", date_time="2025-03-02T00:00:00Z"),
            attached("emailSummary", id="latest", contact="x@y.example", date_time="2025-03-01T00:00:00Z"),
            attached(
                "emailSummary", id="twin", record_id="r1", contact="x@y.example", date_time="2025-02-01T00:00:00Z"
            ),
        ]
    )
    body = service.post(
        EMAIL,
        {
            "resourceData": email(**{"from": "x@y.example", "cc": []}),
            "relatedEntities": [
                {"entityId": "r1", "entityType": "opportunity"},
                {"entityId": "r2", "entityType": "opportunity"},
            ],
            "top": 10,
        },
    ).json()
    assert insights(body) == ["latest", "latest", "twin", "latest"]


def test_email_isolation_and_org_scope(service: Service) -> None:
    service.load(
        [
            attached("emailSummary", id="b", record_id="opp-1", tenant=TENANT_B),
            attached("emailSummary", id="other-org", record_id="opp-1", crmOrgUrl="other.crm.dynamics.com"),
            attached("emailSummary", id="ours", record_id="opp-1", crmOrgUrl=ORG),
        ]
    )
    body = service.post(EMAIL, {"resourceData": email(), "relatedEntities": RELATED, "crmOrgUrl": ORG}).json()
    assert insights(body) == ["ours"]


def test_email_localized(service: Service) -> None:
    service.load([attached("emailSummary", id="l", record_id="opp-1", localized={"fr": {"insight": "Bonjour"}})])
    response = service.post(
        EMAIL, {"resourceData": email(), "relatedEntities": RELATED}, **{"Accept-Language": "fr-CA"}
    )
    assert response.json()["value"] == [{"insight": "Bonjour"}]
    assert response.headers["content-language"] == "fr"


def test_to_as_a_single_string_is_accepted(thread: Service) -> None:
    body = thread.post(
        EMAIL, {"resourceData": email(**{"from": None, "to": "LEE.GU@fabrikam.example; nobody@x.example", "cc": None})}
    ).json()
    assert insights(body) == ["lee"]


@pytest.mark.parametrize(
    ("payload", "parameter"),
    [
        ({}, "resourceData"),
        ({"resourceData": None}, "resourceData"),
        ({"resourceData": "text"}, "resourceData"),
        ({"resourceData": {}, "relatedEntities": [{"entityType": "opportunity"}]}, "relatedEntities.0.entityId"),
        ({"resourceData": {}, "relatedEntities": [{"entityId": "x"}]}, "relatedEntities.0.entityType"),
        ({"resourceData": {}, "relatedEntities": "opp-1"}, "relatedEntities"),
        ({"resourceData": {}, "top": "many"}, "top"),
        ({"resourceData": {}, "skip": -2}, "skip"),
        ({"resourceData": {}, "top": True}, "top"),
        ({"resourceData": {"to": 5}}, "resourceData.to"),
    ],
)
def test_bad_email_bodies_are_400_naming_the_field(thread: Service, payload: dict[str, Any], parameter: str) -> None:
    response = thread.post(EMAIL, payload)
    assert response.status_code == 400, response.text
    assert response.json()["details"] == {"parameter": parameter}


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_malformed_json_is_400_naming_the_body(thread: Service, raw: bytes) -> None:
    response = thread.post(EMAIL, content=raw)
    assert response.status_code == 400
    assert response.json()["details"] == {"parameter": "body"}


def test_body_over_the_limit_is_413(thread: Service) -> None:
    thread.set(MAX_REQUEST_BYTES="2048")
    big = thread.post(EMAIL, {"resourceData": email(plaintextBody="x" * 4096)})
    assert big.status_code == 413
    assert big.json()["errorCode"] == "REQUEST_TOO_LARGE"
    assert thread.post(EMAIL, {"resourceData": email(plaintextBody="small")}).status_code == 200


def test_default_limit_is_4_mb(thread: Service) -> None:
    assert thread.post(EMAIL, {"resourceData": email(plaintextBody="x" * (4 * 1024 * 1024))}).status_code == 413
    assert thread.post(EMAIL, {"resourceData": email(plaintextBody="x" * (3 * 1024 * 1024))}).status_code == 200


def test_email_content_never_reaches_the_log(thread: Service, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    thread.post(EMAIL, {"resourceData": email(), "relatedEntities": RELATED}, **{"x-ms-client-request-id": "mail-1"})
    thread.post(EMAIL, {"resourceData": email(to=5)})
    thread.post(EMAIL, {"resourceData": email(), "top": SECRET})
    thread.post(FILES, {"resourceData": email(), "resourceType": SECRET})
    thread.post(FILES, {"resourceData": email(), "resourceType": "email-thread", "inputPrompt": SECRET})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "mail-1" in text  # the log was captured
    assert SECRET not in text and "Hi Alex" not in text


# ---- email draft file links ----------------------------------------------------------------------


@pytest.fixture
def files(service: Service) -> Service:
    service.load(
        [
            attached("emailDraftFiles", id="case-study", record_id="opp-1", date_time="2025-03-05T00:00:00Z"),
            attached(
                "emailDraftFiles",
                id="proposal",
                record_id="opp-1",
                date_time="2025-01-01T00:00:00Z",
                prompts=["Make a Proposal", "Draft a proposal"],
            ),
            attached(
                "emailDraftFiles",
                id="pricing",
                contact="megan.bowen@fabrikam.example",
                date_time="2025-02-01T00:00:00Z",
                prompts=["make a proposal"],
            ),
            attached(
                "emailDraftFiles",
                id="webinar",
                contact="megan.bowen@fabrikam.example",
                date_time="2025-03-09T00:00:00Z",
                prompts=["Follow up"],
            ),
            attached(
                "emailDraftFiles",
                id="shared",
                record_id="opp-1",
                contact="megan.bowen@fabrikam.example",
                date_time="2024-06-01T00:00:00Z",
            ),
        ]
    )
    return service


def titles(body: dict[str, Any]) -> list[str]:
    return [i["contentTitle"].removeprefix("File ") for i in body["value"]]


def request(**overrides: Any) -> dict[str, Any]:
    return {
        "resourceData": email(),
        "resourceType": "email-thread",
        "recordType": "Opportunity",
        "recordId": "opp-1",
        **overrides,
    }


def test_files_shape_and_order_without_prompt(files: Service) -> None:
    body = files.post(FILES, request()).json()
    assert titles(body) == ["case-study", "proposal", "shared", "webinar", "pricing"]
    assert body["value"][0] == {
        "contentType": "content-pdf",
        "content": "https://files.example/case-study.pdf",
        "contentTitle": "File case-study",
        "contentDescription": "About case-study",
    }


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Make a Proposal", ["proposal", "pricing", "case-study", "shared", "webinar"]),
        ("make a proposal for Fabrikam's 500 units", ["proposal", "pricing", "case-study", "shared", "webinar"]),
        ("Follow-up", ["webinar", "case-study", "proposal", "shared", "pricing"]),
        ("proposals", ["case-study", "proposal", "shared", "webinar", "pricing"]),  # whole words only
        ("", ["case-study", "proposal", "shared", "webinar", "pricing"]),
    ],
)
def test_prompt_matches_come_first(files: Service, prompt: str, expected: list[str]) -> None:
    assert titles(files.post(FILES, request(inputPrompt=prompt)).json()) == expected


def test_prompt_ranking_then_paging(files: Service) -> None:
    body = files.post(FILES, request(inputPrompt="Make a proposal", top=1, skip=1)).json()
    assert titles(body) == ["pricing"] and body["hasMoreResults"] is True


def test_record_is_optional_contacts_still_answer(files: Service) -> None:
    body = files.post(FILES, {"resourceData": email(), "resourceType": "teams-chat"}).json()
    assert titles(body) == ["webinar", "pricing", "shared"]


def test_message_ids_in_headers_are_accepted(files: Service) -> None:
    data = email()
    del data["messageId"], data["conversationId"]
    response = files.post(
        FILES, request(resourceData=data), **{"x-ms-message-id": "AAMk", "x-ms-conversation-id": "AAQk"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("payload", "parameter"),
    [
        ({"resourceData": {}}, "resourceType"),
        ({"resourceData": {}, "resourceType": "fax"}, "resourceType"),
        ({"resourceType": "email-thread"}, "resourceData"),
        ({"resourceData": {}, "resourceType": "email-thread", "top": 0}, "top"),
    ],
)
def test_bad_file_requests(files: Service, payload: dict[str, Any], parameter: str) -> None:
    response = files.post(FILES, payload)
    assert response.status_code == 400
    assert response.json()["details"] == {"parameter": parameter}


def test_loader_checks_file_links() -> None:
    from shared.documents import validate_document

    bad_type = attached("emailDraftFiles", id="x", record_id="r")
    bad_type["fields"]["contentType"] = "0"
    assert validate_document(bad_type)[1][0].field == "fields.contentType"
    bad_icon = attached("emailDraftFiles", id="x", record_id="r")
    bad_icon["fields"]["contentIconUrl"] = "icons/pdf.png"
    assert validate_document(bad_icon)[1][0].field == "fields.contentIconUrl"
    prompts_elsewhere = attached("emailSummary", id="x", record_id="r", prompts=["Make a proposal"])
    assert "prompts" in validate_document(prompts_elsewhere)[1][0].message
    contact_on_record_point = {**attached("recordSummary", id="x", record_id="r"), "contactEmail": "a@b.example"}
    assert "contactEmail" in validate_document(contact_on_record_point)[1][0].message


def test_json_body_declared_as_utf8(files: Service) -> None:
    raw = json.dumps(request(inputPrompt="Préparer une proposition")).encode("utf-8")
    assert files.post(FILES, content=raw).status_code == 200
