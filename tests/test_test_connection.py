"""Test connection: token and store checked, quickly; a clear error when the store is away."""

from __future__ import annotations

import socket
import time

from tests.conftest import TENANT_A, Service

PATH = "/api/diagnostics/testconnection"


def test_answers_with_a_small_body(service: Service) -> None:
    response = service.get(PATH)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["tenantId"] == TENANT_A
    assert body["storeLatencyMs"] < 1000
    assert len(response.content) < 200


def test_needs_a_valid_token(service: Service) -> None:
    response = service.client.get(PATH)
    assert response.status_code == 401
    assert response.json()["errorCode"] == "INVALID_TOKEN_SPECIFIED"


def test_unreachable_store_is_503_within_a_second_or_two(service: Service) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    service.set(
        INSIGHTS_STORAGE_CONNECTION_STRING=(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            f"TableEndpoint=http://127.0.0.1:{dead_port}/devstoreaccount1;"
        )
    )
    from shared.storage import reset_store

    reset_store()
    started = time.monotonic()
    response = service.get(PATH)
    assert response.status_code == 503
    assert response.json()["errorCode"] == "SERVICE_UNAVAILABLE"
    assert int(response.headers["retry-after"]) > 0
    assert time.monotonic() - started < 2.5


def test_a_missing_table_is_503(service: Service) -> None:
    service.set(INSIGHTS_TABLE_NAME="doesnotexist")
    from shared.storage import reset_store

    reset_store()
    assert service.get(PATH).status_code == 503
