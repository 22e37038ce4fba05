"""A deadline that stops work: at the request budget the handler is cancelled, so after the 503
no storage request starts and no throttle token is taken, whether the storage or the key
endpoint is what hangs. Counted at loopback proxies in front of Azurite and the identity."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import shared.storage
from devhost.azurite import Azurite
from shared.http import get_throttle
from shared.settings import get_settings
from tests.conftest import TENANT_A, Service, doc
from tests.proxies import LoopbackProxy

HIGHLIGHTS = "/api/enhanceskills/sales-highlights"
EMAIL = "/api/enhanceskills/email-insights-v2"
QUERY = {"recordType": "opportunity", "recordId": "opp-1"}


def _bucket_taken_at(tenant: str) -> float | None:
    """When the tenant's throttle bucket last took a token (None: never)."""
    bucket = get_throttle(get_settings())._buckets.get(f"reader:{tenant}")
    return None if bucket is None else bucket[1]


@pytest.fixture
def counted_storage(service: Service, azurite: Azurite) -> Iterator[LoopbackProxy]:
    service.load([doc(id="kept")])
    proxy = LoopbackProxy(azurite.port, hang=True)
    service.set(INSIGHTS_STORAGE_CONNECTION_STRING=proxy.url_of(azurite.connection_string, azurite.port))
    shared.storage.reset_store()
    yield proxy
    proxy.close()
    shared.storage.reset_store()


def test_storage_hanging_answers_503_in_budget_and_starts_nothing_after(
    service: Service, counted_storage: LoopbackProxy
) -> None:
    # Without cancellation, the storage client would go on retrying after the answer.
    service.set(
        REQUEST_BUDGET_SECONDS="1",
        STORAGE_READ_TIMEOUT_SECONDS="0.25",
        STORAGE_RETRIES="3",
        THROTTLE_REQUESTS_PER_MINUTE="600",
    )
    started = time.monotonic()
    response = service.get(HIGHLIGHTS, QUERY)
    answered = time.monotonic()
    assert response.status_code == 503
    assert response.json()["errorCode"] == "SERVICE_UNAVAILABLE"
    assert answered - started < 1.5
    time.sleep(1.5)
    assert counted_storage.started  # the storage was asked, and hung
    assert counted_storage.started_after(answered) == 0
    taken = _bucket_taken_at(TENANT_A)
    assert taken is not None and taken < answered  # the one token, taken before the storage call


def test_every_concurrent_read_of_a_request_stops_at_its_deadline(
    service: Service, counted_storage: LoopbackProxy
) -> None:
    service.set(REQUEST_BUDGET_SECONDS="1", STORAGE_READ_TIMEOUT_SECONDS="0.25", STORAGE_RETRIES="3")
    email = {
        "resourceData": {"from": "a@fabrikam.example", "to": ["b@fabrikam.example", "c@fabrikam.example"]},
        "relatedEntities": [{"entityId": "opp-1", "entityType": "opportunity"}],
    }
    response = service.post(EMAIL, email)
    answered = time.monotonic()
    assert response.status_code == 503
    time.sleep(1.5)
    assert len(counted_storage.started) >= 3  # the record's and both contacts' partitions, at once
    assert counted_storage.started_after(answered) == 0


def test_key_endpoint_slower_than_the_budget_answers_503_and_takes_nothing_after(
    service: Service, azurite: Azurite
) -> None:
    # The metadata arrives after the deadline but well inside the fetch timeout: without
    # cancellation the validation would finish after the answer, take a throttle token and
    # read the storage.
    service.load([doc(id="kept")])
    authority = LoopbackProxy(int(service.authority.url.rsplit(":", 1)[1]), delay=1.2)
    storage = LoopbackProxy(azurite.port)
    try:
        service.set(
            AUTH_AUTHORITY=f"http://127.0.0.1:{authority.port}",
            INSIGHTS_STORAGE_CONNECTION_STRING=storage.url_of(azurite.connection_string, azurite.port),
            REQUEST_BUDGET_SECONDS="0.8",
            THROTTLE_REQUESTS_PER_MINUTE="600",
        )
        shared.storage.reset_store()
        started = time.monotonic()
        response = service.get(HIGHLIGHTS, QUERY)
        answered = time.monotonic()
        assert response.status_code == 503
        assert answered - started < 1.3
        time.sleep(1.5)
        assert authority.started  # the metadata was asked for
        assert _bucket_taken_at(TENANT_A) is None
        assert storage.started == []
    finally:
        authority.close()
        storage.close()
        shared.storage.reset_store()
