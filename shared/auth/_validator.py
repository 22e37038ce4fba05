"""Entra ID bearer-token validation.

Follows Microsoft's guidance (access tokens, claims validation, signing-key rollover):

* RS256 only, `kid` required; `ver` decides v1 (`https://sts.windows.net/{tid}/`) or v2
  (`https://login.microsoftonline.com/{tid}/v2.0`) and which metadata document gives the issuer;
  issuers are read from the authority's metadata, never hard-coded, so a local authority can
  stand in for Entra.
* `tid` must be a GUID in `AUTH_ALLOWED_TENANTS` before anything is fetched for it; with `*` the
  tenant-independent `common` metadata is used and its `{tenantid}` template is filled in.
* Signing keys are cached per key-set URL and `kid`. A key set is refreshed when stale (hourly)
  or when a token names an unknown `kid`: the first such refresh at once, later ones at most once
  per 5 minutes (Microsoft.IdentityModel's rule); a failed refresh keeps the last good keys. Fetches time out well inside the 5-second answer budget.
* Access is granted only after verification: client app (`azp`/`appid`), then a required scope
  for delegated tokens (`scp`) or a required role for app-only tokens (`roles`). Identity comes
  from `tid`/`oid`/`azp`, never from `upn`, `email` or `preferred_username`.

A bad token is `InvalidToken` (401); a good token without the right tenant, client app, scope or
role is `InsufficientPermissions` (403). Why a token failed goes to the log, not to the caller.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.auth._keys import (
    ALGORITHM,
    FETCH_CONNECT_TIMEOUT_SECONDS,
    FETCH_TIMEOUT_SECONDS,
    KeySetCache,
    Metadata,
    MetadataCache,
)
from shared.auth._principal import Principal
from shared.contract.errors import InsufficientPermissions, InvalidToken, ServiceUnavailable
from shared.contract.normalize import is_guid

if TYPE_CHECKING:
    import httpx

    from shared.settings import Settings

# httpx and PyJWT (with cryptography) are imported on first use, not when the Functions host
# indexes the app: together they are about half of the cold import time.

__all__ = ["TokenValidator", "monotonic"]

ACCEPTED_TOKEN_TTL = 300.0
ACCEPTED_TOKENS_MAX = 10_000


def monotonic() -> float:
    """The caches' clock (a module function so tests can move time forward)."""
    return time.monotonic()


class TokenValidator:
    def __init__(
        self,
        settings: Settings,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import httpx  # with the first request, not when the worker indexes the app

        self.settings = settings
        timeout = httpx.Timeout(FETCH_TIMEOUT_SECONDS, connect=FETCH_CONNECT_TIMEOUT_SECONDS)
        self._client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        clock = clock or (lambda: monotonic())
        self.metadata = MetadataCache(self._client, clock)
        self.keys = KeySetCache(self._client, clock)
        self._accepted: OrderedDict[tuple[str, bytes], tuple[float, Principal]] = OrderedDict()

    async def close(self) -> None:
        await self._client.aclose()

    # -- the one entry point ---------------------------------------------------------------

    async def validate(self, authorization: str | None, role: str = "reader") -> Principal:
        """A verified, authorized caller. `role` is `reader` (Copilot for Sales, on behalf of a
        seller of a customer tenant) or `writer` (a partner backend service, app-only, from a
        partner home tenant)."""
        token = _bearer(authorization)
        cache_key = (role, hashlib.sha256(token.encode()).digest())
        now = time.time()
        hit = self._accepted.get(cache_key)
        if hit is not None and hit[0] > now:
            self._accepted.move_to_end(cache_key)
            return hit[1]
        header, unverified = _unverified(token)
        version = unverified.get("ver")
        if version not in ("1.0", "2.0"):
            raise InvalidToken(log_detail=f"ver {version!r} is neither 1.0 nor 2.0")
        if version not in self.settings.auth_token_versions:
            raise InvalidToken(log_detail=f"v{version} tokens are not accepted (AUTH_TOKEN_VERSIONS)")
        tid = unverified.get("tid")
        if not isinstance(tid, str) or not is_guid(tid) or tid != tid.lower():
            raise InvalidToken(log_detail="tid is missing or not a lower-case GUID")

        writer = role == "writer"
        if writer and tid not in self.settings.auth_writer_home_tenants:
            self._reject_untrusted_tenant(token, header["kid"], tid, "AUTH_WRITER_HOME_TENANTS")
        if not writer and not self.settings.tenant_allowed(tid):
            self._reject_untrusted_tenant(token, header["kid"], tid, "AUTH_ALLOWED_TENANTS")

        metadata = await self._metadata(version, tid, tenant_independent=self.settings.any_tenant and not writer)
        expected_issuer = metadata.issuer.replace("{tenantid}", tid)
        if unverified.get("iss") != expected_issuer:
            raise InvalidToken(log_detail=f"iss {unverified.get('iss')!r} is not {expected_issuer!r}")
        key = await self.keys.key(metadata.jwks_uri, header["kid"])
        if key is None:
            if self.keys.peek(metadata.jwks_uri) is None:
                raise ServiceUnavailable(log_detail=f"signing keys unavailable from {metadata.jwks_uri}")
            raise InvalidToken(log_detail=f"kid {header['kid']!r} is not in {metadata.jwks_uri}")
        claims = self._verify(token, key, expected_issuer)
        principal = self._principal(claims, version, tid)
        if writer:
            self._authorize_writer(principal)
        else:
            self._authorize_reader(principal)
        self._remember(cache_key, principal, float(claims["exp"]), now)
        return principal

    def _remember(self, key: tuple[str, bytes], principal: Principal, exp: float, now: float) -> None:
        """Copilot for Sales sends a seller's token with every call for its whole lifetime: an
        accepted token is kept (by hash, never the token) until it expires, at most 5 minutes,
        so verification runs once per token rather than once per request."""
        self._accepted[key] = (min(exp, now + ACCEPTED_TOKEN_TTL), principal)
        self._accepted.move_to_end(key)
        while len(self._accepted) > ACCEPTED_TOKENS_MAX:
            self._accepted.popitem(last=False)

    # -- steps ----------------------------------------------------------------------------------

    def _reject_untrusted_tenant(self, token: str, kid: str, tid: str, setting: str) -> None:
        """Nothing is fetched for a tenant outside the allow-list. A token we can check with keys
        already cached is checked, so a forged one is still a 401; otherwise it is refused."""
        key = self.keys.cached_key(kid)
        if key is not None:
            self._verify(token, key, issuer=None)
        raise InsufficientPermissions(log_detail=f"tenant {tid} is not in {setting}")

    async def _metadata(self, version: str, tid: str, tenant_independent: bool) -> Metadata:
        tenant = "common" if tenant_independent else tid
        suffix = "v2.0/.well-known/openid-configuration" if version == "2.0" else ".well-known/openid-configuration"
        url = f"{self.settings.auth_authority}/{tenant}/{suffix}"
        metadata = await self.metadata.get(url)
        if metadata is None:
            raise ServiceUnavailable(log_detail=f"OpenID metadata unavailable from {url}")
        return metadata  # type: ignore[no-any-return]

    def _verify(self, token: str, key: Any, issuer: str | None) -> dict[str, Any]:
        import jwt  # with the first token (see the module's note)

        try:
            return jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.settings.auth_audiences,
                issuer=issuer,
                leeway=self.settings.auth_leeway_seconds,
                options={"require": ["exp", "iat", "aud", "iss"], "verify_iss": issuer is not None},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(log_detail=f"{type(exc).__name__}: {exc}") from None

    def _principal(self, claims: dict[str, Any], version: str, tid: str) -> Principal:
        client_app = claims.get("azp") if version == "2.0" else claims.get("appid")
        if not isinstance(client_app, str) or not client_app:
            raise InvalidToken(log_detail="azp/appid is missing")
        scp = claims.get("scp")
        roles = claims.get("roles", [])
        if scp is not None and not isinstance(scp, str):
            raise InvalidToken(log_detail="scp is not a string")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise InvalidToken(log_detail="roles is not a list of strings")
        oid = claims.get("oid", "")
        if not isinstance(oid, str):
            raise InvalidToken(log_detail="oid is not a string")
        return Principal(
            tenant_id=tid,
            object_id=oid,
            client_app=client_app,
            version=version,
            scopes=frozenset(scp.split()) if scp else frozenset(),
            roles=frozenset(roles),
        )

    def _authorize_reader(self, principal: Principal) -> None:
        settings = self.settings
        allowed_apps = {a.lower() for a in settings.auth_allowed_client_apps}
        if allowed_apps and "*" not in allowed_apps and principal.client_app.lower() not in allowed_apps:
            raise InsufficientPermissions(
                log_detail=f"client app {principal.client_app} is not in AUTH_ALLOWED_CLIENT_APPS"
            )
        if principal.scopes:
            required = set(settings.auth_required_scopes)
            if required and not principal.scopes & required:
                raise InsufficientPermissions(log_detail=f"scp lacks one of {sorted(required)}")
        else:
            required_roles = set(settings.auth_required_roles)
            if not required_roles or not principal.roles & required_roles:
                raise InsufficientPermissions(log_detail="app-only token without a role in AUTH_REQUIRED_ROLES")

    def _authorize_writer(self, principal: Principal) -> None:
        """Writers are partner services: app-only tokens with a write role, from a listed app."""
        settings = self.settings
        if principal.scopes:
            raise InsufficientPermissions(log_detail="a delegated (user) token cannot write")
        if principal.client_app.lower() not in {a.lower() for a in settings.auth_writer_client_apps}:
            raise InsufficientPermissions(
                log_detail=f"client app {principal.client_app} is not in AUTH_WRITER_CLIENT_APPS"
            )
        if not principal.roles & set(settings.auth_writer_roles):
            raise InsufficientPermissions(log_detail=f"token lacks one of the roles {settings.auth_writer_roles}")


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise InvalidToken(log_detail="no Authorization header", token_given=False)
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise InvalidToken(log_detail="Authorization scheme is not Bearer", token_given=False)
    token = token.strip()
    if not token:
        raise InvalidToken(log_detail="empty bearer token", token_given=False)
    if token.count(".") != 2 or len(token) > 16_384:
        raise InvalidToken(log_detail="token is not a compact JWS")
    return token


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    import jwt  # with the first token (see the module's note)

    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise InvalidToken(log_detail=f"malformed token: {type(exc).__name__}") from None
    if header.get("alg") != ALGORITHM:
        raise InvalidToken(log_detail=f"alg {header.get('alg')!r} is not {ALGORITHM}")
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        raise InvalidToken(log_detail="kid is missing")
    return header, claims
