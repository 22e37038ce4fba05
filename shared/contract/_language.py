"""`Accept-Language` negotiation (RFC 9110 quality values, RFC 4647 lookup with fallback)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["choose_language", "is_language_tag", "parse_accept_language"]

MAX_RANGES = 20
_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def is_language_tag(value: str) -> bool:
    """A language tag as documents and callers name languages: `en`, `fr-CA`, `zh-Hant-TW`."""
    return bool(_TAG.fullmatch(value))


def parse_accept_language(header: str | None) -> list[str]:
    """Language ranges in preference order, lower-cased; `q=0` ranges dropped; `*` kept.

    A malformed part is skipped rather than failing the request: a header the caller's client
    built badly should not cost the seller their insights.
    """
    if not header:
        return []
    ranges: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[: MAX_RANGES * 2]):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower().replace("_", "-")
        if not tag or len(tag) > 35 or not all(c.isalnum() or c in "-*" for c in tag):
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = -1.0
        if not 0 < quality <= 1:
            continue
        ranges.append((-quality, position, tag))
    ranges.sort()
    seen: list[str] = []
    for _, _, tag in ranges[:MAX_RANGES]:
        if tag not in seen:
            seen.append(tag)
    return seen


def choose_language(preferred: Sequence[str], available: Iterable[str], default: str) -> str:
    """The best of `available` for the caller, else `default` (the document's own language).

    For each preferred range in order: an exact match, then the range truncated (`fr-ca` -> `fr`),
    then any available tag of the same primary language (`fr` -> `fr-ca`).
    """
    by_lower = {tag.lower(): tag for tag in available}
    for wanted in preferred:
        if wanted == "*":
            return default
        parts = wanted.split("-")
        while parts:
            candidate = "-".join(parts)
            if candidate in by_lower:
                return by_lower[candidate]
            parts.pop()
        primary = wanted.split("-")[0]
        for lower, tag in by_lower.items():
            if lower.split("-")[0] == primary:
                return tag
    return default
