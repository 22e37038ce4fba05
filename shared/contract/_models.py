"""The response layer: envelope, ApiError and the building blocks of every item model.

Item models live next to their trigger in `extensions/`; each field carries the contract's
description string (a wire constant: Copilot for Sales maps fields by it) and an `x-ms-summary`
label, so the connector definition is generated from these same classes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, StringConstraints

from shared.contract._instants import format_utc

__all__ = [
    "BUILT_ON_FIRST_USE",
    "ApiError",
    "ContractModel",
    "NonEmptyStr",
    "Page",
    "StringMap",
    "UtcDateTime",
    "wire",
]


NonEmptyStr = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
UtcDateTime = Annotated[datetime, PlainSerializer(format_utc, return_type=str)]
StringMap = dict[str, str]


def wire(description: str, summary: str, **kwargs: Any) -> Any:
    """A field whose `description` is a contract wire constant, labelled for the connector."""
    extra = kwargs.pop("json_schema_extra", {}) or {}
    return Field(description=description, json_schema_extra={"x-ms-summary": summary, **extra}, **kwargs)


BUILT_ON_FIRST_USE = ConfigDict(defer_build=True)
"""Every model of the request path builds its validator and serializer when first used, not when
its module is imported: an instance that starts for a request pays for that operation's models
only, and each other operation's first call for its own (a few milliseconds)."""


class ContractModel(BaseModel):
    """Base of every item model: unknown fields are refused, so stored data cannot leak extras."""

    model_config = ConfigDict(extra="forbid", frozen=True, **BUILT_ON_FIRST_USE)


class ApiError(BaseModel):
    model_config = BUILT_ON_FIRST_USE

    errorCode: str = Field(min_length=1, description="The error code.")
    errorMessage: str = Field(default="", description="A message that describes the error.")
    activityId: str = Field(default="", description="The request id, for support.")
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="More about the error.",
    )
    """Strings for the Copilot operations (the connector says so); the ingestion API's 503
    carries its per-item report here."""


class Page[ItemT: BaseModel](BaseModel):
    model_config = BUILT_ON_FIRST_USE

    value: list[ItemT]
    hasMoreResults: bool


def _absolute_https(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc or " " in value:
        raise ValueError("must be an absolute https URL")
    return value


HttpsUrl = Annotated[str, AfterValidator(_absolute_https)]
__all__ += ["HttpsUrl"]
