"""Who is calling, once their token is verified: the tenant decides whose insights they see."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Principal"]


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    object_id: str
    client_app: str
    version: str
    scopes: frozenset[str]
    roles: frozenset[str]

    @property
    def app_only(self) -> bool:
        return not self.scopes
