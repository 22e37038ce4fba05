"""What the table takes, as the write path and document validation count it (Azure's limits;
Azurite's are the same or lower, and are what the tests run against)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_TRANSACTION", "MAX_TRANSACTION_BYTES", "OPERATION_OVERHEAD", "wire_size"]

MAX_TRANSACTION = 100
"""Operations in one entity group transaction (Azurite answers more with a bare protocol error)."""
MAX_TRANSACTION_BYTES = 3_500_000
"""A transaction's body, as the SDK sends it: Azure and Azurite take 4 MiB; the rest is room for
the multipart framing the estimate leaves out."""
OPERATION_OVERHEAD = 600
"""Bytes of multipart framing and headers an operation adds to a transaction's body."""


def wire_size(entity: dict[str, Any]) -> int:
    """An entity's bytes as the SDK sends it: JSON with every non-ASCII character escaped."""
    return len(json.dumps({k: getattr(v, "value", v) for k, v in entity.items()}, default=str))
