"""Typed application settings, read from the environment (Function App settings). Built by
`shared.settings.get_settings()` on first use, never at import time."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.contract.normalize import is_guid
from shared.settings._urls import is_loopback_url

__all__ = ["Settings", "describe"]

CsvList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Every setting the app reads. Lists are comma-separated strings, as app settings are."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    insights_storage_connection_string: str = ""
    insights_storage_account_url: str = ""
    insights_table_name: str = "insights"

    auth_authority: str = "https://login.microsoftonline.com"
    auth_audiences: CsvList = Field(default_factory=list)
    auth_allowed_tenants: CsvList = Field(default_factory=list)
    auth_allowed_client_apps: CsvList = Field(default_factory=list)
    auth_required_scopes: CsvList = Field(default_factory=lambda: ["user_impersonation"])
    auth_required_roles: CsvList = Field(default_factory=list)
    auth_token_versions: CsvList = Field(default_factory=lambda: ["1.0", "2.0"])
    auth_leeway_seconds: int = Field(default=60, ge=0, le=300)

    auth_writer_home_tenants: CsvList = Field(default_factory=list)
    auth_writer_roles: CsvList = Field(default_factory=lambda: ["Insights.Write"])
    auth_writer_client_apps: CsvList = Field(default_factory=list)
    auth_writer_tenant_grants: str = ""

    max_request_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    ingest_max_documents: int = Field(default=1000, gt=0, le=10_000)
    request_budget_seconds: float = Field(default=4.0, gt=0, le=5.0)
    # Each storage call: bounded connect and read, then at most this many retries. The request
    # deadline answers 503 at the budget whatever is still running.
    storage_connect_timeout_seconds: float = Field(default=1.0, gt=0, le=5.0)
    storage_read_timeout_seconds: float = Field(default=1.5, gt=0, le=30.0)
    storage_retries: int = Field(default=1, ge=0, le=3)
    # The ceiling of the admission limit: units of storage work in flight at once from one instance
    # (a reader's request is one unit, a writer's call is one); the limit adapts below it to
    # measured latency, and work that could not finish in its budget is refused at once (0: no
    # limit, no admission). See shared.storage.Admission and docs/overload.md.
    storage_max_concurrent_reads: int = Field(default=8, ge=0, le=256)
    throttle_requests_per_minute: int = Field(default=1200, ge=0)
    # A write commits within this long of reading the watermarks (one write budget, 25 s, and its
    # storage calls' bound); a contact's or tenant's delete completes with a pass that starts
    # this long after its watermark was raised. See docs/write-rules.md.
    write_settle_seconds: float = Field(default=30.0, ge=0.1, le=600)
    # How long a tombstone or a delete's watermark is kept before the housekeeping timer collects
    # it (Cassandra's gc_grace_seconds is 10 days too): a late write or a retry that arrives
    # within it is refused as the delete's rules say; one arriving later lands. See
    # docs/write-rules.md.
    tombstone_grace_days: float = Field(default=10.0, ge=1.0, le=3650.0)

    @field_validator(
        "auth_audiences",
        "auth_allowed_tenants",
        "auth_allowed_client_apps",
        "auth_required_scopes",
        "auth_required_roles",
        "auth_token_versions",
        "auth_writer_home_tenants",
        "auth_writer_roles",
        "auth_writer_client_apps",
        mode="before",
    )
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("auth_allowed_tenants")
    @classmethod
    def _tenants_are_guids(cls, value: list[str]) -> list[str]:
        for tenant in value:
            if tenant != "*" and not is_guid(tenant):
                raise ValueError(f"{tenant!r} is neither a tenant GUID nor '*'")
        return [t.lower() for t in value]

    @field_validator("auth_writer_home_tenants")
    @classmethod
    def _home_tenants_are_guids(cls, value: list[str]) -> list[str]:
        for tenant in value:
            if not is_guid(tenant):
                raise ValueError(f"{tenant!r} is not a tenant GUID (writers come from named tenants only)")
        return [t.lower() for t in value]

    @field_validator("auth_writer_tenant_grants")
    @classmethod
    def _grants_parse(cls, value: str) -> str:
        _parse_grants(value)
        return value

    @field_validator("auth_token_versions")
    @classmethod
    def _known_versions(cls, value: list[str]) -> list[str]:
        unknown = set(value) - {"1.0", "2.0"}
        if unknown or not value:
            raise ValueError("must list 1.0 and/or 2.0")
        return value

    @field_validator("auth_authority")
    @classmethod
    def _https_authority(cls, value: str) -> str:
        value = value.rstrip("/")
        scheme = urlsplit(value).scheme
        if scheme != "https" and not (scheme == "http" and is_loopback_url(value)):
            raise ValueError("must be an https URL (plain http only on a loopback address)")
        return value

    @model_validator(mode="after")
    def _storage_and_audience(self) -> Settings:
        if not (self.insights_storage_connection_string or self.insights_storage_account_url):
            raise ValueError("INSIGHTS_STORAGE_CONNECTION_STRING or INSIGHTS_STORAGE_ACCOUNT_URL must be set")
        if not self.auth_audiences:
            raise ValueError("AUTH_AUDIENCES must name at least one audience")
        if not self.auth_allowed_tenants:
            raise ValueError("AUTH_ALLOWED_TENANTS must list tenant GUIDs or '*'")
        return self

    @cached_property
    def any_tenant(self) -> bool:
        return "*" in self.auth_allowed_tenants

    def tenant_allowed(self, tid: str) -> bool:
        return self.any_tenant or tid.lower() in self.auth_allowed_tenants

    @cached_property
    def writer_grants(self) -> dict[str, frozenset[str]]:
        return _parse_grants(self.auth_writer_tenant_grants)

    def writer_may_write(self, client_app: str, tenant: str) -> bool:
        """AUTH_WRITER_TENANT_GRANTS: `appIdA=t1|t2;appIdB=*`; an app with no grant writes nothing."""
        granted = self.writer_grants.get(client_app.lower(), frozenset())
        return "*" in granted or tenant.lower() in granted


def _parse_grants(value: str) -> dict[str, frozenset[str]]:
    grants: dict[str, frozenset[str]] = {}
    for part in value.split(";"):
        if not part.strip():
            continue
        app, sep, tenants = part.partition("=")
        names = [t.strip().lower() for t in tenants.split("|") if t.strip()]
        if not sep or not app.strip() or not names:
            raise ValueError(f"{part.strip()!r} is not appId=tenant|tenant or appId=*")
        for tenant in names:
            if tenant != "*" and not is_guid(tenant):
                raise ValueError(f"{tenant!r} in the grant of {app.strip()} is not a tenant GUID")
        grants[app.strip().lower()] = frozenset(names)
    return grants


def describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        name = "_".join(str(p) for p in err["loc"]).upper() or "settings"
        parts.append(f"{name}: {err['msg']}")
    return "invalid settings: " + "; ".join(parts)
