"""The sample data a new partner engineer first sees is complete in both of its languages: every
localizable field of every document, `additionalProperties` values included, has an English and a
French form, so a French seller never gets English beside French."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.contract import get_point
from shared.documents import parse_jsonl
from tests.conftest import Service

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "insights.jsonl"
LANGUAGES = ("en", "fr")
SAMPLE_TENANT = "3f9a1c2e-7b4d-4e6a-9c1f-2a8b5d7e4c10"
OPPORTUNITY = "8d2f6a1c-5b3e-4f7a-9c2d-1e4b6a8f3c50"


def _documents() -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [d for d in lines if "extensionPoint" in d]


@pytest.mark.parametrize("document", _documents(), ids=lambda d: f"{d['extensionPoint']}:{d['id']}")
def test_every_localizable_field_has_both_languages(document: dict[str, Any]) -> None:
    point = get_point(document["extensionPoint"])
    assert point is not None
    own = document.get("language", "en")
    assert own in LANGUAGES
    (other,) = set(LANGUAGES) - {own}
    translation = document.get("localized", {}).get(other, {})
    for name in sorted(point.localizable & set(document["fields"])):
        assert translation.get(name), f"{document['id']}: {name} has no {other} form"
        if name == "additionalProperties":  # a map: every value has its translation (keys may be translated too)
            original, translated = document["fields"][name], translation[name]
            assert len(translated) == len(original), f"{document['id']}: {other} additionalProperties has other entries"
            assert all(isinstance(v, str) and v.strip() for v in translated.values())


def test_content_suggestions_in_french_are_french_throughout(service: Service) -> None:
    with SAMPLE.open(encoding="utf-8") as lines:
        service.load([p.document.model_dump(mode="json", exclude_none=True) for p in parse_jsonl(lines) if p.document])
    service.set(AUTH_ALLOWED_TENANTS=SAMPLE_TENANT)
    body = {
        "resourceData": {"subject": "Proposition", "plaintextBody": "...", "from": "megan.bowen@fabrikam.example"},
        "resourceType": "email-thread",
        "recordType": "opportunity",
        "recordId": OPPORTUNITY,
        "crmType": "Dynamics365",
        "crmOrgUrl": "contoso.crm.dynamics.com",
        "inputPrompt": "Make a proposal",
    }
    response = service.post(
        "/api/enhanceskills/content-suggestions",
        json=body,
        token=service.token(tenant=SAMPLE_TENANT),
        **{"Accept-Language": "fr-FR"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-language"] == "fr"
    first = response.json()["value"][0]
    assert first["contentTitle"] == "Proposition Surface Hub pour Fabrikam"
    assert first["additionalProperties"] == {"Propriétaire": "Alex Wilber", "Version": "3"}
