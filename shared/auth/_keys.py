"""The signing-key and OpenID-metadata caches, per URL: refreshed when stale and on demand (a token
naming an unknown `kid`), at most once per 5 minutes after the first on-demand refresh, keeping
the last good value when a refresh fails (Microsoft.IdentityModel's ConfigurationManager rules)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.runtime import get_logger
from shared.settings import is_loopback_url

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ALGORITHM",
    "FETCH_CONNECT_TIMEOUT_SECONDS",
    "FETCH_TIMEOUT_SECONDS",
    "KeySetCache",
    "Metadata",
    "MetadataCache",
]

log = get_logger("c4s.auth")

ALGORITHM = "RS256"
KEYS_MAX_AGE = 3600.0
METADATA_MAX_AGE = 24 * 3600.0
MIN_REFRESH_INTERVAL = 300.0
RETRY_AFTER_FAILED_FIRST_FETCH = 10.0
FETCH_TIMEOUT_SECONDS = 1.5
FETCH_CONNECT_TIMEOUT_SECONDS = 1.0


class _FetchError(Exception):
    pass


async def _fetch_json(client: httpx.AsyncClient, url: str) -> Any:
    import httpx  # with the first token: the Functions host's indexing does not pay for it

    if not (url.startswith("https://") or is_loopback_url(url)):
        raise _FetchError(f"refusing to fetch non-https URL {url}")
    try:
        response = await client.get(url)
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise _FetchError(f"{url}: {type(exc).__name__}: {exc}") from exc


@dataclass
class _Entry:
    value: Any = None
    fetched_at: float = float("-inf")
    attempted_at: float = float("-inf")
    refreshed_on_demand: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class _RefreshingCache:
    """Values fetched by URL, refreshed when stale and on demand; a failed refresh keeps the last
    good value. Like Microsoft.IdentityModel's ConfigurationManager, the first refresh asked for
    is made at once, even right after a fetch (a key published just after an instance started
    its cache is served on its first token); after that, at most one fetch per 5 minutes."""

    max_age: float = KEYS_MAX_AGE

    def __init__(self, client: httpx.AsyncClient, clock: Callable[[], float]) -> None:
        self._client = client
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self.fetches = 0

    def _entry(self, url: str) -> _Entry:
        return self._entries.setdefault(url, _Entry())

    def peek(self, url: str) -> Any:
        entry = self._entries.get(url)
        return entry.value if entry else None

    def cached_values(self) -> list[Any]:
        return [e.value for e in list(self._entries.values()) if e.value is not None]

    async def get(self, url: str, *, want_refresh: bool = False) -> Any:
        entry = self._entry(url)
        if entry.value is not None and not want_refresh and self._clock() - entry.fetched_at < self.max_age:
            return entry.value
        async with entry.lock:
            now = self._clock()
            fresh = entry.value is not None and now - entry.fetched_at < self.max_age
            if fresh and not want_refresh:
                return entry.value
            if entry.value is None:
                interval = RETRY_AFTER_FAILED_FIRST_FETCH
            elif want_refresh and not entry.refreshed_on_demand:
                interval = 0.0
            else:
                interval = MIN_REFRESH_INTERVAL
            if now - entry.attempted_at < interval:
                return entry.value
            entry.attempted_at = now
            entry.refreshed_on_demand |= want_refresh
            try:
                self.fetches += 1
                entry.value = self._parse(await _fetch_json(self._client, url))
                entry.fetched_at = now
                entry.attempted_at = now
            except (_FetchError, ValueError, KeyError, TypeError) as exc:
                if entry.value is None:
                    log.error("could not fetch %s: %s", url, exc)
                else:
                    log.warning("refresh of %s failed, keeping the cached copy: %s", url, exc)
            return entry.value

    def _parse(self, data: Any) -> Any:
        return data


@dataclass(frozen=True)
class Metadata:
    issuer: str
    jwks_uri: str


class MetadataCache(_RefreshingCache):
    max_age = METADATA_MAX_AGE

    def _parse(self, data: Any) -> Metadata:
        issuer, jwks_uri = data["issuer"], data["jwks_uri"]
        if not isinstance(issuer, str) or not isinstance(jwks_uri, str):
            raise TypeError("issuer and jwks_uri must be strings")
        return Metadata(issuer=issuer, jwks_uri=jwks_uri)


class KeySetCache(_RefreshingCache):
    max_age = KEYS_MAX_AGE

    def _parse(self, data: Any) -> dict[str, Any]:
        import jwt  # with the first key set: PyJWT and cryptography are not a cold start's cost

        keys: dict[str, Any] = {}
        for jwk in data["keys"]:
            if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or not jwk.get("kid"):
                continue
            if jwk.get("use", "sig") != "sig":
                continue
            try:
                keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm=ALGORITHM).key
            except jwt.PyJWTError:
                continue
        if not keys:
            raise ValueError("key set holds no usable RSA signing key")
        return keys

    async def key(self, url: str, kid: str) -> Any:
        keys = await self.get(url)
        if keys is not None and kid in keys:
            return keys[kid]
        keys = await self.get(url, want_refresh=True)
        return keys.get(kid) if keys else None

    def cached_key(self, kid: str) -> Any:
        for keys in self.cached_values():
            if kid in keys:
                return keys[kid]
        return None
