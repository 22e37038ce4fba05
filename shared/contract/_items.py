"""Stored insights as contract items: the caller's best language, the point's item model.

Built from two small protocols rather than from the pipeline's request or storage's rows, so the
wire's rules stay at the wire's layer: what a reader needs of a stored document (`Localizable`),
and what it needs of the caller (`Audience`: the languages asked for, and a note of the language
served).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from shared.contract._language import choose_language
from shared.contract._points import ExtensionPoint
from shared.runtime import logger

__all__ = ["Audience", "Localizable", "to_item"]


class Localizable(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def language(self) -> str: ...
    @property
    def fields(self) -> dict[str, Any]: ...
    @property
    def localized(self) -> dict[str, dict[str, Any]]: ...
    @property
    def date_time(self) -> datetime | None: ...


class Audience(Protocol):
    @property
    def languages(self) -> list[str]: ...
    def served_language(self, language: str) -> None: ...


def to_item(audience: Audience, point: ExtensionPoint, doc: Localizable) -> BaseModel | None:
    """The item in the caller's best language; a localized field (a map included) replaces the
    document's own whole. None, logged, when stored data no longer fits the contract."""
    available = [doc.language, *doc.localized]
    language = choose_language(audience.languages, available, doc.language)
    fields: dict[str, Any] = dict(doc.fields)
    if language != doc.language:
        fields.update(doc.localized.get(language, {}))
    if point.datetime_field and doc.date_time is not None:
        fields[point.datetime_field] = doc.date_time
    try:
        item = point.item_model.model_validate(fields)
    except ValidationError as exc:
        logger.warning("document %s skipped: it no longer fits %s (%s)", doc.id, point.name, exc.errors()[0]["msg"])
        return None
    audience.served_language(language)
    return item
