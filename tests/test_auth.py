"""Entra ID token validation through the HTTP pipeline: the bad-token matrix, key rotation,
fetch limits and an authority that goes away. Real RSA keys, a JWKS served on loopback."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest

import shared.auth._validator
from devhost.identity import V1_ISSUER, LocalAuthority, SigningKey
from tests.conftest import API_CLIENT_ID, AUDIENCE, CLIENT_APP, TENANT_A, TENANT_OUTSIDE, Service, doc

PATH = "/api/enhanceskills/sales-highlights"
QUERY = {"recordType": "opportunity", "recordId": "opp-1"}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class Tokens:
    """Token factories that read as what they build."""

    def __init__(self, authority: LocalAuthority) -> None:
        self.authority = authority

    MINT_OPTIONS = ("tenant", "audience", "client_app", "scopes", "roles", "version", "lifetime")

    def claims(self, raw: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
        """Mint options (tenant, audience, ...) shape the token; any other keyword, or `raw`,
        overrides a claim afterwards (`_DROP` removes it)."""
        options: dict[str, Any] = dict(
            tenant=TENANT_A, audience=AUDIENCE, client_app=CLIENT_APP, scopes=["user_impersonation"]
        )
        options.update({k: v for k, v in overrides.items() if k in self.MINT_OPTIONS})
        claims = self.authority.claims(**options)
        for name, value in {
            **{k: v for k, v in overrides.items() if k not in self.MINT_OPTIONS},
            **(raw or {}),
        }.items():
            if value is _DROP:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def build(self, **overrides: Any) -> str:
        return self.authority.sign(self.claims(**overrides))

    def build_v1(self, **overrides: Any) -> str:
        return self.build(version="1.0", **overrides)

    def build_signed_by_evil_key(self) -> str:
        """The right `kid`, the wrong key."""
        evil = SigningKey.generate()
        return jwt.encode(
            self.claims(), evil.private_key, algorithm="RS256", headers={"kid": self.authority.signing_key.kid}
        )

    def build_with_unknown_kid(self) -> str:
        return jwt.encode(
            self.claims(), SigningKey.generate().private_key, algorithm="RS256", headers={"kid": uuid.uuid4().hex}
        )

    def build_without_kid(self) -> str:
        return jwt.encode(self.claims(), self.authority.signing_key.private_key, algorithm="RS256")

    def build_alg_none(self) -> str:
        return f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': self.authority.signing_key.kid})}.{_b64(self.claims())}."

    def build_hs256_with_public_key(self) -> str:
        """The classic confusion attack: HMAC keyed with the published RSA public key."""
        import hashlib
        import hmac

        header = _b64({"alg": "HS256", "typ": "JWT", "kid": self.authority.signing_key.kid})
        payload = _b64(self.claims())
        mac = hmac.new(self.authority.signing_key.public_pem(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"

    def build_rs512(self) -> str:
        key = self.authority.signing_key
        return jwt.encode(self.claims(), key.private_key, algorithm="RS512", headers={"kid": key.kid})


_DROP = object()


@pytest.fixture
def tokens(service: Service) -> Tokens:
    service.load([doc(id="visible")])
    return Tokens(service.authority)


def _now() -> int:
    return int(time.time())


CASES: list[tuple[str, Callable[[Tokens], str | None], int]] = [
    ("missing header", lambda t: None, 401),
    ("non-Bearer scheme", lambda t: "Basic " + t.build(), 401),
    ("empty token", lambda t: "Bearer", 401),
    ("empty token after spaces", lambda t: "Bearer    x", 401),
    ("malformed segments", lambda t: "Bearer abc.def", 401),
    ("four segments", lambda t: "Bearer " + t.build() + ".x", 401),
    ("header-only token", lambda t: "Bearer " + t.build().split(".")[0], 401),
    ("garbage base64", lambda t: "Bearer @@@.###.$$$", 401),
    ("signature stripped", lambda t: "Bearer " + t.build().rsplit(".", 1)[0] + ".", 401),
    ("alg none", lambda t: "Bearer " + t.build_alg_none(), 401),
    ("HS256 signed with the public key", lambda t: "Bearer " + t.build_hs256_with_public_key(), 401),
    ("unknown alg RS512", lambda t: "Bearer " + t.build_rs512(), 401),
    ("missing kid", lambda t: "Bearer " + t.build_without_kid(), 401),
    ("unknown kid", lambda t: "Bearer " + t.build_with_unknown_kid(), 401),
    ("right kid wrong key", lambda t: "Bearer " + t.build_signed_by_evil_key(), 401),
    (
        "payload tampered",
        lambda t: (
            "Bearer "
            + (lambda p: f"{p[0]}.{_b64({**t.claims(), 'tid': TENANT_A, 'oid': 'x'})}.{p[2]}")(t.build().split("."))
        ),
        401,
    ),
    ("expired", lambda t: "Bearer " + t.build(exp=_now() - 600, iat=_now() - 4000, nbf=_now() - 4000), 401),
    ("exp missing", lambda t: "Bearer " + t.build(exp=_DROP), 401),
    ("nbf in the future", lambda t: "Bearer " + t.build(nbf=_now() + 600), 401),
    ("iat in the future beyond leeway", lambda t: "Bearer " + t.build(iat=_now() + 600), 401),
    ("exp inside leeway passes", lambda t: "Bearer " + t.build(exp=_now() - 45), 200),
    ("exp just past leeway", lambda t: "Bearer " + t.build(exp=_now() - 75), 401),
    ("nbf inside leeway passes", lambda t: "Bearer " + t.build(nbf=_now() + 45), 200),
    ("nbf just past leeway", lambda t: "Bearer " + t.build(nbf=_now() + 75), 401),
    ("wrong audience", lambda t: "Bearer " + t.build(audience="api://someone-else"), 401),
    ("token for another resource", lambda t: "Bearer " + t.build(audience="https://graph.microsoft.com"), 401),
    ("v2 token with a v1 issuer", lambda t: "Bearer " + t.build(iss=V1_ISSUER.format(tenant=TENANT_A)), 401),
    (
        "v1 token with a v2 issuer",
        lambda t: "Bearer " + t.build_v1(iss=f"https://login.microsoftonline.com/{TENANT_A}/v2.0"),
        401,
    ),
    (
        "iss of another tenant than tid",
        lambda t: "Bearer " + t.build(iss=f"https://login.microsoftonline.com/{TENANT_OUTSIDE}/v2.0"),
        401,
    ),
    (
        "iss lookalike host",
        lambda t: "Bearer " + t.build(iss=f"https://login.microsoftonline.com.evil.example/{TENANT_A}/v2.0"),
        401,
    ),
    ("tid not a GUID", lambda t: "Bearer " + t.build(tid="contoso.onmicrosoft.com"), 401),
    ("tid missing", lambda t: "Bearer " + t.build(tid=_DROP), 401),
    ("ver missing", lambda t: "Bearer " + t.build(ver=_DROP), 401),
    ("ver unknown", lambda t: "Bearer " + t.build(ver="3.0"), 401),
    ("tenant not allowed", lambda t: "Bearer " + t.build(tenant=TENANT_OUTSIDE), 403),
    ("client app not allowed", lambda t: "Bearer " + t.build(client_app=str(uuid.uuid4())), 403),
    ("v1 client app not allowed", lambda t: "Bearer " + t.build_v1(client_app=str(uuid.uuid4())), 403),
    ("scope missing", lambda t: "Bearer " + t.build(scopes=["Files.Read"]), 403),
    ("scp not a string", lambda t: "Bearer " + t.build(scp=["user_impersonation"]), 401),
    ("roles not a list", lambda t: "Bearer " + t.build(scopes=None, raw={"roles": "Insights.Read"}), 401),
    ("app-only token without role", lambda t: "Bearer " + t.build(scopes=None, roles=["Other.Role"]), 403),
    ("app-only token with no roles at all", lambda t: "Bearer " + t.build(scopes=None), 403),
    ("app-only token with role", lambda t: "Bearer " + t.build(scopes=None, roles=["Insights.Read"]), 200),
    ("azp missing", lambda t: "Bearer " + t.build(azp=_DROP), 401),
    ("happy path v2", lambda t: "Bearer " + t.build(), 200),
    ("happy path v2 with the client-id audience", lambda t: "Bearer " + t.build(audience=API_CLIENT_ID), 200),
    ("happy path v1", lambda t: "Bearer " + t.build_v1(), 200),
    ("scheme is case-insensitive", lambda t: "bearer " + t.build(), 200),
    ("upn cannot stand in for tid", lambda t: "Bearer " + t.build(tid=_DROP, upn=f"admin@{TENANT_A}"), 401),
]


@pytest.mark.parametrize(("name", "make", "status"), CASES, ids=[c[0] for c in CASES])
def test_bad_token_matrix(
    service: Service, tokens: Tokens, name: str, make: Callable[[Tokens], str | None], status: int
) -> None:
    authorization = make(tokens)
    headers = {} if authorization is None else {"Authorization": authorization}
    response = service.client.get(PATH, params=QUERY, headers={"x-ms-client-request-id": "auth-case", **headers})
    assert response.status_code == status, response.text
    body = response.json()
    if status == 200:
        assert [i["description"] for i in body["value"]] == ["Insight visible"]
        return
    expected = {401: "INVALID_TOKEN_SPECIFIED", 403: "INSUFFICIENT_PERMISSIONS"}[status]
    assert body == {
        "errorCode": expected,
        "errorMessage": body["errorMessage"],
        "activityId": "auth-case",
        "details": {},
    }
    if status == 401:
        # RFC 6750 §3.1: no error code when the request carried no bearer token at all
        carried_none = name in ("missing header", "non-Bearer scheme", "empty token")
        expected_challenge = "Bearer" if carried_none else 'Bearer error="invalid_token"'
        assert response.headers["www-authenticate"] == expected_challenge


def test_the_reason_goes_to_the_log_not_the_caller(
    service: Service, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    response = service.get(PATH, QUERY, token=tokens.build(audience="api://someone-else"))
    assert response.status_code == 401
    assert "aud" not in response.json()["errorMessage"].lower()
    assert any(
        "Audience" in r.getMessage() or "aud" in r.getMessage() for r in caplog.records if r.name.startswith("c4s")
    )


def test_token_versions_setting(service: Service, tokens: Tokens) -> None:
    service.set(AUTH_TOKEN_VERSIONS="2.0")
    assert service.get(PATH, QUERY, token=tokens.build_v1()).status_code == 401
    assert service.get(PATH, QUERY, token=tokens.build()).status_code == 200


def test_leeway_is_a_setting(service: Service, tokens: Tokens) -> None:
    token = tokens.build(exp=_now() - 45)
    assert service.get(PATH, QUERY, token=token).status_code == 200
    service.set(AUTH_LEEWAY_SECONDS="10")
    assert service.get(PATH, QUERY, token=token).status_code == 401


def test_a_disallowed_tenant_with_a_forged_signature_is_401_once_keys_are_cached(
    service: Service, tokens: Tokens
) -> None:
    assert service.get(PATH, QUERY, token=tokens.build()).status_code == 200  # warms the key cache
    evil = SigningKey.generate()
    forged = jwt.encode(
        tokens.claims(tenant=TENANT_OUTSIDE),
        evil.private_key,
        algorithm="RS256",
        headers={"kid": service.authority.signing_key.kid},
    )
    assert service.get(PATH, QUERY, token=forged).status_code == 401
    assert service.get(PATH, QUERY, token=tokens.build(tenant=TENANT_OUTSIDE)).status_code == 403


# ---- key rotation and fetch limits, at an authority of the test's own ------------------------------


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def own_authority(service: Service, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalAuthority, Clock, Tokens]]:
    clock = Clock()
    monkeypatch.setattr(shared.auth._validator, "monotonic", clock)
    with LocalAuthority() as authority:
        service.set(AUTH_AUTHORITY=authority.url)
        service.load([doc(id="visible")])
        yield authority, clock, Tokens(authority)


@pytest.mark.parametrize("published_after", [1, 301], ids=["a second after the fetch", "five minutes after"])
def test_a_rotated_key_is_served_on_its_first_token_after_one_refresh(
    service: Service, own_authority: tuple[LocalAuthority, Clock, Tokens], published_after: int
) -> None:
    authority, clock, tokens = own_authority
    assert service.get(PATH, QUERY, token=tokens.build()).status_code == 200
    assert authority.key_fetches() == 1
    clock.advance(published_after)
    authority.rotate()
    assert service.get(PATH, QUERY, token=tokens.build()).status_code == 200
    assert authority.key_fetches() == 2
    assert service.get(PATH, QUERY, token=tokens.build()).status_code == 200
    assert authority.key_fetches() == 2


def test_random_kids_cause_at_most_one_fetch_in_five_minutes(
    service: Service, own_authority: tuple[LocalAuthority, Clock, Tokens]
) -> None:
    authority, clock, tokens = own_authority
    assert service.get(PATH, QUERY, token=tokens.build()).status_code == 200
    before = authority.key_fetches()
    evil = SigningKey.generate()
    claims = tokens.claims()

    def flood(count: int) -> set[int]:
        statuses = set()
        for _ in range(count):
            forged = jwt.encode(claims, evil.private_key, algorithm="RS256", headers={"kid": uuid.uuid4().hex})
            statuses.add(service.get(PATH, QUERY, token=forged).status_code)
        return statuses

    assert flood(1000) == {401}
    assert authority.key_fetches() - before == 1  # the first refresh asked for, at once
    clock.advance(120)
    assert flood(1) == {401}
    assert authority.key_fetches() - before == 1
    clock.advance(181)  # 5 minutes after that refresh: one more, then none
    assert flood(500) == {401}
    assert authority.key_fetches() - before == 2


def test_random_tenants_cause_no_fetch(service: Service, own_authority: tuple[LocalAuthority, Clock, Tokens]) -> None:
    authority, _, tokens = own_authority
    statuses = set()
    for _ in range(1000):
        token = tokens.build(tenant=str(uuid.uuid4()))
        statuses.add(service.get(PATH, QUERY, token=token).status_code)
    assert statuses == {403}
    assert sum(authority.hits.values()) == 0


def test_cached_keys_keep_serving_while_the_authority_is_down(
    service: Service, own_authority: tuple[LocalAuthority, Clock, Tokens]
) -> None:
    authority, clock, tokens = own_authority
    assert service.get(PATH, QUERY, token=tokens.build()).status_code == 200
    authority.available = False
    clock.advance(2 * 3600)  # keys are stale: a refresh is tried, fails, and the cache is kept
    assert service.get(PATH, QUERY, token=tokens.build()).status_code == 200
    assert service.get(PATH, QUERY, token=tokens.build_v1()).status_code in (200, 503)  # v1 metadata never fetched
    authority.stop()
    clock.advance(2 * 3600)
    assert service.get(PATH, QUERY, token=tokens.build()).status_code == 200


def test_no_keys_at_all_is_503_not_a_hang(
    service: Service, own_authority: tuple[LocalAuthority, Clock, Tokens]
) -> None:
    authority, _, tokens = own_authority
    authority.available = False
    started = time.monotonic()
    response = service.get(PATH, QUERY, token=tokens.build())
    assert response.status_code == 503
    assert response.json()["errorCode"] == "SERVICE_UNAVAILABLE"
    assert "retry-after" in response.headers
    assert time.monotonic() - started < 4


def test_any_tenant_uses_the_common_metadata(
    service: Service, own_authority: tuple[LocalAuthority, Clock, Tokens]
) -> None:
    authority, _, tokens = own_authority
    service.set(AUTH_ALLOWED_TENANTS="*")
    stranger = str(uuid.uuid4())
    assert service.get(PATH, QUERY, token=tokens.build(tenant=stranger)).status_code == 200
    assert service.get(PATH, QUERY, token=tokens.build_v1(tenant=str(uuid.uuid4()))).status_code == 200
    assert set(p for p in authority.hits if "openid-configuration" in p) == {
        "/common/v2.0/.well-known/openid-configuration",
        "/common/.well-known/openid-configuration",
    }
    assert all(TENANT_A not in p and stranger not in p for p in authority.hits)


def test_specific_tenants_use_their_own_metadata(
    service: Service, own_authority: tuple[LocalAuthority, Clock, Tokens]
) -> None:
    authority, _, tokens = own_authority
    assert service.get(PATH, QUERY, token=tokens.build()).status_code == 200
    assert f"/{TENANT_A}/v2.0/.well-known/openid-configuration" in authority.hits


def test_authority_must_be_https_unless_loopback(service: Service) -> None:
    service.set(AUTH_AUTHORITY="http://login.example.com")
    assert service.get(PATH, QUERY).status_code == 500
