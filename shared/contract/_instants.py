"""Instants on the wire and in storage: the one ISO-8601 reader, and the two ways of writing one.

Callers state their zone policy: a document's `dateTime` must carry a zone (`missing_zone="reject"`);
a request's window may leave it out and means UTC (`missing_zone="utc"`), as Copilot sends it.
Stored values written by the first storage form may have years without their zeros (`1-01-01`):
`short_years=True` reads those.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

__all__ = ["InstantError", "format_stored", "format_utc", "parse_instant"]

_SHORT_YEAR = re.compile(r"^(\d{1,3})-")


class InstantError(ValueError):
    """Why a text is not an instant: `kind` is `format` (not ISO-8601), `zone` (no zone where one
    is required) or `range` (outside year 1 to 9999 once in UTC)."""

    def __init__(self, kind: Literal["format", "zone", "range"]) -> None:
        super().__init__(kind)
        self.kind = kind


def parse_instant(text: str, *, missing_zone: Literal["reject", "utc"], short_years: bool = False) -> datetime:
    """`text` as an aware UTC datetime. `Z` and `z` are UTC; an offset is converted."""
    if short_years:
        text = _SHORT_YEAR.sub(lambda m: m.group(1).zfill(4) + "-", text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InstantError("format") from None
    if parsed.tzinfo is None:
        if missing_zone == "reject":
            raise InstantError("zone")
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InstantError("range") from None


def format_utc(value: datetime) -> str:
    """UTC ISO-8601 with `Z`, four-digit year; milliseconds only when there are any."""
    value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds" if value.microsecond else "seconds") + "Z"


def format_stored(value: datetime) -> str:
    """UTC ISO-8601 with `Z`, four-digit year and always milliseconds: one width for every
    instant, so stored values compare as instants when compared as strings."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
