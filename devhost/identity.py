"""A local identity authority that stands in for Microsoft Entra ID on loopback.

It serves OpenID metadata and a JWKS in Entra's shapes — issuers `https://login.microsoftonline.com
/{tid}/v2.0` (v2) and `https://sts.windows.net/{tid}/` (v1), the `common` documents with the
`{tenantid}` template — so locally minted tokens look like real ones; only the metadata and key
URLs point at loopback. It signs with an RSA key generated on first use.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["V1_ISSUER", "V2_ISSUER", "LocalAuthority", "SigningKey"]

V2_ISSUER = "https://login.microsoftonline.com/{tenant}/v2.0"
V1_ISSUER = "https://sts.windows.net/{tenant}/"


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    private_key: rsa.RSAPrivateKey
    kid: str

    @classmethod
    def generate(cls) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(key, cls._thumbprint(key))

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        if path.exists():
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            assert isinstance(loaded, rsa.RSAPrivateKey)
            return cls(loaded, cls._thumbprint(loaded))
        key = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(
            key.private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)
        return key

    @staticmethod
    def _thumbprint(key: rsa.RSAPrivateKey) -> str:
        der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:15]).decode()

    def jwk(self) -> dict[str, str]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _b64(numbers.n),
            "e": _b64(numbers.e),
        }

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class LocalAuthority:
    """Serve metadata and keys on `host:port`; mint tokens. Counts every request by path so
    tests can prove what was (not) fetched; `available = False` makes it answer 503."""

    def __init__(self, keys: list[SigningKey] | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.keys = list(keys or [SigningKey.generate()])
        self.hits: Counter[str] = Counter()
        self.available = True
        self._address = (host, port)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- serving -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the authority is not serving; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def signing_key(self) -> SigningKey:
        return self.keys[-1]

    def rotate(self) -> SigningKey:
        """Publish a new key and sign with it from now on (the old one stays published)."""
        key = SigningKey.generate()
        self.keys.append(key)
        return key

    def key_fetches(self) -> int:
        return sum(n for path, n in self.hits.items() if "/keys" in path)

    def metadata_fetches(self) -> int:
        return sum(n for path, n in self.hits.items() if "openid-configuration" in path)

    def document(self, path: str) -> dict[str, Any] | None:
        parts = path.strip("/").split("/")
        if len(parts) < 2:
            return None
        tenant, rest = parts[0], "/".join(parts[1:])
        issuer_tenant = "{tenantid}" if tenant in ("common", "organizations") else tenant
        if rest == "v2.0/.well-known/openid-configuration":
            return self._metadata(
                V2_ISSUER.format(tenant=issuer_tenant), f"{self.url}/{tenant}/discovery/v2.0/keys", tenant, "v2.0/"
            )
        if rest == ".well-known/openid-configuration":
            return self._metadata(
                V1_ISSUER.format(tenant=issuer_tenant), f"{self.url}/{tenant}/discovery/keys", tenant, ""
            )
        if rest in ("discovery/v2.0/keys", "discovery/keys"):
            return {"keys": [k.jwk() for k in self.keys]}
        return None

    def _metadata(self, issuer: str, jwks_uri: str, tenant: str, v: str) -> dict[str, Any]:
        return {
            "issuer": issuer,
            "jwks_uri": jwks_uri,
            "authorization_endpoint": f"{self.url}/{tenant}/oauth2/{v}authorize",
            "token_endpoint": f"{self.url}/{tenant}/oauth2/{v}token",
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
            "subject_types_supported": ["pairwise"],
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        authority = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                authority.hits[path] += 1
                doc = authority.document(path) if authority.available else None
                status = 200 if doc is not None else (503 if not authority.available else 404)
                body = json.dumps(
                    doc if doc is not None else {"error": "unavailable" if status == 503 else "not found"}
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def start(self) -> LocalAuthority:
        self._server = ThreadingHTTPServer(self._address, self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="authority", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalAuthority:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- minting -----------------------------------------------------------------------------

    def claims(
        self,
        *,
        tenant: str,
        audience: str,
        client_app: str,
        version: str = "2.0",
        scopes: list[str] | None = None,
        roles: list[str] | None = None,
        lifetime: int = 3600,
        object_id: str | None = None,
        now: float | None = None,
    ) -> dict[str, Any]:
        now = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": (V2_ISSUER if version == "2.0" else V1_ISSUER).format(tenant=tenant),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "tid": tenant,
            "oid": object_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"local-user:{tenant}")),
            "sub": str(uuid.uuid4()),
            "ver": version,
            "uti": uuid.uuid4().hex[:22],
        }
        claims["azp" if version == "2.0" else "appid"] = client_app
        if version == "2.0":
            claims["azpacr"] = "1"
        if scopes:
            claims["scp"] = " ".join(scopes)
            claims["name"] = "Local Seller"
            claims["preferred_username" if version == "2.0" else "upn"] = "seller@contoso.example"
        if roles:
            claims["roles"] = roles
        if not scopes:
            claims["idtyp"] = "app"
        return claims

    def sign(self, claims: dict[str, Any], key: SigningKey | None = None, headers: dict[str, Any] | None = None) -> str:
        key = key or self.signing_key
        return jwt.encode(
            claims, key.private_key, algorithm="RS256", headers={"kid": key.kid, "typ": "JWT", **(headers or {})}
        )

    def mint(self, **kwargs: Any) -> str:
        return self.sign(self.claims(**kwargs))
