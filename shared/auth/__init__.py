"""Entra ID bearer tokens: the validator (the token rules, then the reader's or writer's
authorization), the caches of signing keys and OpenID metadata it reads, and the principal it
answers. Failures are `InvalidToken` (401) and `InsufficientPermissions` (403) of the contract's
error tree; why goes to the log, never to the caller."""

from shared.auth._keys import KeySetCache, Metadata, MetadataCache
from shared.auth._principal import Principal
from shared.auth._validator import TokenValidator

__all__ = ["KeySetCache", "Metadata", "MetadataCache", "Principal", "TokenValidator"]
