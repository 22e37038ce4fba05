"""CRM record summary: activities in a time window, newest first, over real HTTP against Azurite."""

from __future__ import annotations

from typing import Any

import pytest

import shared.storage
from tests.conftest import TENANT_B, Service, attached

PATH = "/api/enhanceskills/activities"
BASE = {"recordType": "opportunity", "recordId": "opp-1"}


def titles(body: dict[str, Any]) -> list[str]:
    return [i["title"].removeprefix("Activity ") for i in body["value"]]


@pytest.fixture
def days(service: Service) -> Service:
    """Activities a1..a9 on March 1..9 at noon UTC."""
    service.load(
        [
            attached("recordSummary", id=f"a{d}", record_id="opp-1", date_time=f"2025-03-0{d}T12:00:00Z")
            for d in range(1, 10)
        ]
    )
    return service


def test_shape_newest_first_with_required_datetime(days: Service) -> None:
    body = days.get(PATH, {**BASE, "top": 2}).json()
    assert body == {
        "value": [
            {"title": "Activity a9", "description": "Did a9", "dateTime": "2025-03-09T12:00:00Z"},
            {"title": "Activity a8", "description": "Did a8", "dateTime": "2025-03-08T12:00:00Z"},
        ],
        "hasMoreResults": True,
    }


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (
            {"startDateTime": "2025-03-03T12:00:00Z", "endDateTime": "2025-03-05T12:00:00Z"},
            ["a4", "a3"],
        ),  # start in, end out
        ({"startDateTime": "2025-03-03T12:00:00.001Z", "endDateTime": "2025-03-05T12:00:00.001Z"}, ["a5", "a4"]),
        ({"startDateTime": "2025-03-08T00:00:00Z"}, ["a9", "a8"]),
        ({"endDateTime": "2025-03-02T12:00:00Z"}, ["a1"]),
        ({"startDateTime": "2025-03-05T12:00:00Z", "endDateTime": "2025-03-05T12:00:00Z"}, []),
        ({"startDateTime": "2025-03-05T14:00:00+02:00", "endDateTime": "2025-03-05T12:00:01Z"}, ["a5"]),  # offsets
        ({"startDateTime": "2025-03-05T12:00:00", "endDateTime": "2025-03-06T00:00:00"}, ["a5"]),  # no zone: UTC
        ({"startDateTime": "2030-01-01T00:00:00Z"}, []),
    ],
)
def test_window_edges(days: Service, window: dict[str, str], expected: list[str]) -> None:
    assert titles(days.get(PATH, {**BASE, **window}).json()) == expected


def test_paging_inside_a_window(days: Service) -> None:
    window = {"startDateTime": "2025-03-02T00:00:00Z", "endDateTime": "2025-03-07T00:00:00Z"}  # a2..a6
    first = days.get(PATH, {**BASE, **window, "top": 2}).json()
    assert titles(first) == ["a6", "a5"] and first["hasMoreResults"] is True
    last = days.get(PATH, {**BASE, **window, "top": 2, "skip": 4}).json()
    assert titles(last) == ["a2"] and last["hasMoreResults"] is False
    exact = days.get(PATH, {**BASE, **window, "top": 5}).json()
    assert len(exact["value"]) == 5 and exact["hasMoreResults"] is False
    short = days.get(PATH, {**BASE, **window, "top": 4}).json()
    assert short["hasMoreResults"] is True


def test_activities_outside_the_window_are_not_read(days: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shared.storage.StoredDocument.from_entity
    read: list[str] = []

    def counting(entity: dict[str, Any]) -> shared.storage.StoredDocument:
        read.append(entity["Id"])
        return real(entity)

    monkeypatch.setattr(shared.storage.StoredDocument, "from_entity", counting)
    window = {"startDateTime": "2025-03-04T00:00:00Z", "endDateTime": "2025-03-06T00:00:00Z"}
    assert titles(days.get(PATH, {**BASE, **window}).json()) == ["a5", "a4"]
    assert sorted(read) == ["a4", "a5"]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"startDateTime": "2025-03-05T00:00:00Z", "endDateTime": "2025-03-04T00:00:00Z"}, "endDateTime"),
        ({"startDateTime": "yesterday"}, "startDateTime"),
        ({"endDateTime": "2025-13-45T00:00:00Z"}, "endDateTime"),
        ({"top": "-3"}, "top"),
    ],
)
def test_bad_windows_are_400_naming_the_parameter(days: Service, params: dict[str, str], parameter: str) -> None:
    response = days.get(PATH, {**BASE, **params})
    assert response.status_code == 400
    assert response.json()["details"] == {"parameter": parameter}
    assert f"'{parameter}'" in response.json()["errorMessage"]


def test_localized_and_isolated(service: Service) -> None:
    service.load(
        [
            attached(
                "recordSummary",
                id="fr1",
                record_id="opp-1",
                localized={"fr": {"title": "Réunion", "description": "Revue"}},
            ),
            attached("recordSummary", id="other-tenant", record_id="opp-1", tenant=TENANT_B),
        ]
    )
    body = service.get(PATH, BASE, **{"Accept-Language": "fr-FR"}).json()
    assert [(i["title"], i["description"]) for i in body["value"]] == [("Réunion", "Revue")]


def test_loader_requires_a_datetime_for_activities() -> None:
    from shared.documents import validate_document

    _, errors = validate_document(attached("recordSummary", id="x", record_id="opp-1", date_time=None))
    assert errors and "dateTime is required" in errors[0].message
