"""Input types shared by the operations' request models (query strings and JSON bodies).

Each extension declares its own request model with the contract's description strings; the
parsing rules for a parameter live here once. Unknown parameters are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import annotated_types
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, StringConstraints

from shared.contract import normalize
from shared.contract._instants import InstantError, parse_instant
from shared.contract._models import BUILT_ON_FIRST_USE

__all__ = [
    "DEFAULT_TOP",
    "MAX_SKIP",
    "MAX_TOP",
    "CrmTypeIn",
    "DateTimeIn",
    "OrgUrlIn",
    "RecordIdIn",
    "RecordTypeIn",
    "RequestModel",
    "Skip",
    "Top",
    "top_capped_at",
]

MAX_TOP = 100
DEFAULT_TOP = 10
MAX_SKIP = 1000
"""A read fetches skip + top + 1 rows: a seller pages a card, never a thousand items deep."""
_INT32_MAX = 2**31 - 1
_INTEGER = re.compile(r"^[+-]?\d{1,12}$")


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, **BUILT_ON_FIRST_USE)


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise ValueError("must be an integer")
    if abs(number) > _INT32_MAX:
        raise ValueError("must be a 32-bit integer")
    return number


def _top(value: Any) -> int:
    number = _integer(value)
    if number < 1:
        raise ValueError("must be 1 or more")
    return min(number, MAX_TOP)


def top_capped_at(limit: int) -> Callable[[Any], int]:
    """The `top` rule (a 32-bit integer, 1 or more) with larger values taken as `limit`: for a
    model whose answers are shorter than MAX_TOP."""

    def capped(value: Any) -> int:
        return min(_top(value), limit)

    return capped


def _skip(value: Any) -> int:
    number = _integer(value)
    if number < 0:
        raise ValueError("must be 0 or more")
    if number > MAX_SKIP:
        raise ValueError(f"must be at most {MAX_SKIP}")
    return number


def _org(value: str) -> str:
    """A host name when one can be read; otherwise the value as given (lower case), which scopes
    to no stored org, so the seller still gets the unscoped insights rather than an error."""
    try:
        return normalize.org_host(value)
    except ValueError:
        return value.strip().lower()


def _datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        value = value.isoformat()
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 date-time")
    try:
        return parse_instant(value.strip(), missing_zone="utc")  # a zone-less value is UTC, as Copilot sends it
    except InstantError as exc:
        if exc.kind == "range":
            raise ValueError("must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z once in UTC") from None
        raise ValueError("must be an ISO-8601 date-time") from None


Top = Annotated[int, BeforeValidator(_top), annotated_types.Ge(1), annotated_types.Le(_INT32_MAX)]
Skip = Annotated[int, BeforeValidator(_skip), annotated_types.Ge(0), annotated_types.Le(MAX_SKIP)]
RecordTypeIn = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(normalize.record_type),
]
RecordIdIn = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=normalize.MAX_KEY_VALUE_LENGTH),
    AfterValidator(normalize.record_id),
]
CrmTypeIn = Annotated[str, StringConstraints(max_length=100), AfterValidator(normalize.crm_type)]
OrgUrlIn = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_org)]
DateTimeIn = Annotated[datetime, BeforeValidator(_datetime)]
