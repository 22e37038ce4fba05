"""Shared fixtures: a real Azurite, a real loopback identity with RSA keys, the dev host serving
the app through the Functions runtime library, and no network beyond loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devhost.azurite import Azurite
from devhost.identity import LocalAuthority, SigningKey
from devhost.server import DevHost
from extensions import POINTS
from shared.contract import install_points
from shared.documents import validate_document
from shared.http import reset_refusal_log, reset_throttle, reset_validator
from shared.settings import Settings, reset_settings
from shared.storage import InsightsStore, build_table_client, reset_store, write_documents

AUDIENCE = "api://c4s-insights-test"
API_CLIENT_ID = "6d1e8f2a-4b3c-4d5e-9f60-7a8b9c0d1e2f"
CLIENT_APP = "0f4e2d6c-8b1a-4c3d-9e5f-1a2b3c4d5e6f"
_REPO = Path(__file__).resolve().parent.parent
HANDBOOK_CONTRACT = _REPO.parent / "shared" / "contract" / "extension-points.md"
"""The contract in the team's handbook, beside the repository, when it is there."""
CONTRACT = HANDBOOK_CONTRACT if HANDBOOK_CONTRACT.exists() else _REPO / "contract" / "extension-points.md"
"""The contract the tests check against: the handbook's, or the repository's copy of it."""

TENANT_A = "11111111-1111-4111-8111-111111111111"
TENANT_B = "22222222-2222-4222-8222-222222222222"
TENANT_OUTSIDE = "99999999-9999-4999-8999-999999999999"
ORG = "contoso.crm.dynamics.com"


# ---- no network beyond loopback -------------------------------------------------------------------

_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConnectionRefusedError(f"tests may only reach loopback, not {host}")
    return _real_connect(self, address)


install_points(POINTS)  # the extension points documents name, for in-process validation


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]


# ---- real services ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite() as instance:
        yield instance


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="session")
def authority(signing_key: SigningKey) -> Iterator[LocalAuthority]:
    with LocalAuthority([signing_key]) as instance:
        yield instance


@pytest.fixture(scope="session")
def devhost(authority: LocalAuthority) -> Iterator[DevHost]:
    from devhost.preview_routes import preview_routes

    def mint(tenant: str) -> str:
        return authority.mint(tenant=tenant, audience=AUDIENCE, client_app=CLIENT_APP, scopes=["user_impersonation"])

    with DevHost(_REPO, port=0, extra_routes=preview_routes(mint)) as host:
        yield host


def base_env(azurite: Azurite, authority_url: str, table: str) -> dict[str, str]:
    return {
        "INSIGHTS_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "INSIGHTS_TABLE_NAME": table,
        "AUTH_AUTHORITY": authority_url,
        "AUTH_AUDIENCES": f"{AUDIENCE},{API_CLIENT_ID}",
        "AUTH_ALLOWED_TENANTS": f"{TENANT_A},{TENANT_B}",
        "AUTH_ALLOWED_CLIENT_APPS": CLIENT_APP,
        "AUTH_REQUIRED_SCOPES": "user_impersonation",
        "AUTH_REQUIRED_ROLES": "Insights.Read",
        "AUTH_TOKEN_VERSIONS": "1.0,2.0",
        "THROTTLE_REQUESTS_PER_MINUTE": "0",  # the throttling tests turn it on
        "WRITE_SETTLE_SECONDS": "0.3",  # a contact's or tenant's delete ends 0.3 s after its mark
    }


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts from no app settings and no cached settings, store or keys."""
    for name in list(os.environ):
        if name.startswith(
            ("INSIGHTS_", "AUTH_", "MAX_REQUEST", "REQUEST_BUDGET", "THROTTLE_", "INGEST_", "APPLICATIONINSIGHTS_")
        ):
            monkeypatch.delenv(name)
    reset_settings()
    reset_store()
    reset_validator()
    reset_throttle()
    reset_refusal_log()
    yield
    reset_settings()
    reset_store()
    reset_validator()
    reset_throttle()
    reset_refusal_log()


class LoopThread:
    """An event loop of the tests' own, in a thread: the tests' async store lives on it (an async
    client belongs to one loop), and synchronous test code runs coroutines there with `run`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self._thread.start()

    def run[T](self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


@pytest.fixture(scope="session")
def test_loop() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


@dataclass
class Service:
    """The running product for one test: its own table, settings, an HTTP client, the async
    store on the tests' own loop (`run`), and a plain synchronous client of the same table for
    looking at the rows as they are (`table`)."""

    url: str
    table_name: str
    authority: LocalAuthority
    client: httpx.Client
    store: InsightsStore
    table: Any
    monkeypatch: pytest.MonkeyPatch
    loop: LoopThread

    def run[T](self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run(coroutine)

    def token(self, **overrides: Any) -> str:
        claims = dict(tenant=TENANT_A, audience=AUDIENCE, client_app=CLIENT_APP, scopes=["user_impersonation"])
        claims.update(overrides)
        return self.authority.mint(**claims)

    def get(
        self, path: str, params: dict[str, Any] | None = None, token: str | None = None, **headers: str
    ) -> httpx.Response:
        hdrs = {"Authorization": f"Bearer {token or self.token()}", **headers}
        return self.client.get(path, params=params, headers=hdrs)

    def post(
        self, path: str, json: Any = None, token: str | None = None, content: bytes | None = None, **headers: str
    ) -> httpx.Response:
        hdrs = {"Authorization": f"Bearer {token or self.token()}", **headers}
        if content is not None:
            return self.client.post(path, content=content, headers={"Content-Type": "application/json", **hdrs})
        return self.client.post(path, json=json, headers=hdrs)

    def set(self, **settings: str) -> None:
        for name, value in settings.items():
            self.monkeypatch.setenv(name, value)
        reset_settings()
        reset_validator()

    def load(self, docs: list[dict[str, Any]]) -> None:
        valid = []
        for data in docs:
            doc, errors = validate_document(data)
            assert not errors, errors
            assert doc is not None
            valid.append(doc)
        self.run(write_documents(self.store, valid))


@pytest.fixture
def service(
    azurite: Azurite,
    authority: LocalAuthority,
    devhost: DevHost,
    monkeypatch: pytest.MonkeyPatch,
    test_loop: LoopThread,
) -> Iterator[Service]:
    from azure.data.tables import TableClient

    table = "t" + uuid.uuid4().hex[:20]
    for name, value in base_env(azurite, authority.url, table).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    store = InsightsStore(
        build_table_client(settings),
        settle_seconds=settings.write_settle_seconds,
        grace_seconds=settings.tombstone_grace_days * 86400,
    )
    test_loop.run(store.ensure_table())
    with (
        httpx.Client(base_url=devhost.base_url, timeout=10) as client,
        TableClient.from_connection_string(azurite.connection_string, table_name=table) as rows,
    ):
        yield Service(devhost.base_url, table, authority, client, store, rows, monkeypatch, test_loop)
    test_loop.run(store.close())


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


def doc(
    point: str = "opportunityInsights",
    *,
    id: str,
    tenant: str = TENANT_A,
    record_type: str = "opportunity",
    record_id: str = "opp-1",
    date_time: str | None = "2025-03-01T10:00:00Z",
    fields: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An insight document with sensible fields for its extension point."""
    defaults: dict[str, dict[str, Any]] = {
        "opportunityInsights": {"title": "Relecloud", "description": f"Insight {id}"},
        "recordDetails": {
            "recordId": f"rel-{id}",
            "recordTypeDisplayName": "Quote",
            "recordTypePluralDisplayName": "Quotes",
            "recordType": "quote",
            "recordTitle": f"Quote {id}",
        },
    }
    data: dict[str, Any] = {
        "tenantId": tenant,
        "extensionPoint": point,
        "id": id,
        "recordType": record_type,
        "recordId": record_id,
        "fields": fields if fields is not None else defaults[point],
    }
    if date_time is not None:
        data["dateTime"] = date_time
    data.update(extra)
    return data


FIELDS_BY_POINT: dict[str, Any] = {
    "recordSummary": lambda id: {"title": f"Activity {id}", "description": f"Did {id}"},
    "emailSummary": lambda id: {"insight": f"Insight {id}"},
    "emailDraftFiles": lambda id: {
        "contentType": "content-pdf",
        "content": f"https://files.example/{id}.pdf",
        "contentTitle": f"File {id}",
        "contentDescription": f"About {id}",
    },
}


def attached(
    point: str,
    *,
    id: str,
    record_id: str | None = None,
    contact: str | None = None,
    tenant: str = TENANT_A,
    date_time: str | None = "2025-03-01T10:00:00Z",
    **extra: Any,
) -> dict[str, Any]:
    """A document of a point that may be attached to a record, a contact, or both."""
    data: dict[str, Any] = {"tenantId": tenant, "extensionPoint": point, "id": id, "fields": FIELDS_BY_POINT[point](id)}
    if record_id:
        data.update(recordType="opportunity", recordId=record_id)
    if contact:
        data["contactEmail"] = contact
    if date_time:
        data["dateTime"] = date_time
    data.update(extra)
    return data
