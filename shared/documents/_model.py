"""Insight documents: the one format the loader, the ingestion API and the store share.

One document a JSONL line:

    {"tenantId": "<GUID>", "extensionPoint": "recordDetails", "id": "<stable id>",
     "recordType": "opportunity", "recordId": "<CRM record id>",      (record-attached)
     "contactEmail": "buyer@customer.example",                        (contact-attached; or both)
     "recordName": "Fabrikam renewal", "recordUrl": "https://...",     (optional: the record's)
     "crmType": "Dynamics 365", "crmOrgUrl": "contoso.crm.dynamics.com",
     "dateTime": "2025-03-01T10:00:00Z", "expiresAt": "...", "language": "en",
     "fields": {...the output item...}, "localized": {"fr": {...}}, "prompts": [...]}

A document is identified by (tenantId, extensionPoint, recordType, recordId, id) — or by the
contact address in place of the record for a contact-only document. `validate_document` is the
single set of rules; everything that accepts documents calls it.

A line may also carry only a record's name (`RecordName`: tenantId, recordType, recordId,
recordName, optionally recordUrl and version, and no extensionPoint): it names a record whose
documents were loaded without one, with no new version of those documents.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.contract import (
    ExtensionPoint,
    InstantError,
    all_points,
    format_utc,
    get_point,
    is_language_tag,
    normalize,
    parse_instant,
)
from shared.storage import data_entity
from shared.storage.keys import MAX_KEY_LENGTH, home_of, oversized_keys, record_key_length, twin_of
from shared.storage.limits import wire_size

__all__ = ["MAX_VERSION", "AnyDocument", "DocumentError", "InsightDocument", "RecordName", "validate_document"]

_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_FORBIDDEN_KEY_CHARS = re.compile(r"[\x00-\x1f\x7f]")
MAX_ID_LENGTH = normalize.MAX_KEY_VALUE_LENGTH


@dataclass(frozen=True)
class DocumentError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


MAX_VERSION = 2**63 - 1
MAX_NAME_LENGTH = 200
"""A record's name as sellers see it in the chat (Dynamics 365 allows 300 for an opportunity's
topic; names longer than this are not names a seller types)."""
MAX_PROPERTY_UNITS = 32_000
"""A table property holds at most 64 KiB as UTF-16 (32,768 code units; a character beyond the
Basic Multilingual Plane takes two): a little under, to be safe."""
MAX_ENTITY_BYTES = 1_000_000
"""A table entity holds at most 1 MiB; what the SDK sends (JSON, every non-ASCII character
escaped, the stored JSON properties escaped again) is held a little under it."""


def _parse_zoned(value: str, name: str) -> datetime:
    try:
        parsed = parse_instant(value, missing_zone="reject")
    except InstantError as exc:
        raise ValueError(
            {
                "format": f"{name} is not an ISO-8601 date-time",
                "zone": f"{name} has no time zone (add Z or an offset)",
                "range": f"{name} is outside 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z once converted to UTC",
            }[exc.kind]
        ) from None
    return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)  # kept to the millisecond


class InsightDocument(BaseModel):
    """A validated document. `fields` and `localized` hold the item exactly as stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenantId: str
    extensionPoint: str
    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    recordType: str | None = None
    recordId: str | None = Field(default=None, max_length=MAX_ID_LENGTH)
    contactEmail: str | None = Field(default=None, max_length=MAX_ID_LENGTH)
    recordName: str | None = Field(
        default=None,
        max_length=MAX_NAME_LENGTH,
        description="The record's name, as sellers call it; the Sales chat tools find records by it.",
    )
    recordUrl: str | None = Field(default=None, description="Where a seller opens the record (https).")
    crmType: str | None = None
    crmOrgUrl: str | None = None
    dateTime: datetime | None = None
    expiresAt: datetime | None = None
    language: str = "en"
    fields: dict[str, Any]
    localized: dict[str, dict[str, Any]] = Field(default_factory=dict)
    prompts: list[str] = Field(default_factory=list)
    version: int | None = Field(
        default=None,
        ge=1,
        le=MAX_VERSION,
        strict=True,
        description="The document's revision, an integer that only grows (e.g. milliseconds since the epoch); "
        "a write older than the stored one is stale. Absent: the service numbers writes as they commit.",
    )

    @field_validator("tenantId")
    @classmethod
    def _tenant(cls, value: str) -> str:
        return _tenant_id(value)

    @field_validator("extensionPoint")
    @classmethod
    def _point(cls, value: str) -> str:
        if get_point(value) is None:
            raise ValueError(f"must be one of {', '.join(sorted(all_points()))}")
        return value

    @field_validator("id", "recordId")
    @classmethod
    def _key_text(cls, value: str | None) -> str | None:
        return _key_text(value)

    @field_validator("recordType")
    @classmethod
    def _record_type(cls, value: str | None) -> str | None:
        return None if value is None else _record_type_of(value)

    @field_validator("recordId")
    @classmethod
    def _record_id(cls, value: str | None) -> str | None:
        return None if value is None else normalize.record_id(value)

    @field_validator("contactEmail")
    @classmethod
    def _contact(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = normalize.email_address(value)
        if not _EMAIL.fullmatch(value):
            raise ValueError("must be an email address")
        return value

    @field_validator("recordName")
    @classmethod
    def _record_name(cls, value: str | None) -> str | None:
        return _record_name(value)

    @field_validator("recordUrl")
    @classmethod
    def _record_url(cls, value: str | None) -> str | None:
        return _https_url(value)

    @field_validator("crmType")
    @classmethod
    def _crm_type(cls, value: str | None) -> str | None:
        return normalize.crm_type(value) or None if value is not None else None

    @field_validator("crmOrgUrl")
    @classmethod
    def _org(cls, value: str | None) -> str | None:
        return normalize.org_host(value) or None if value is not None else None

    @field_validator("dateTime", "expiresAt", mode="before")
    @classmethod
    def _zoned(cls, value: object, info: Any) -> object:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("must be an ISO-8601 date-time string with a zone")
        return _parse_zoned(value, info.field_name)

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        if not is_language_tag(value):
            raise ValueError("must be a language tag such as 'en' or 'fr-CA'")
        return value.lower()

    @field_validator("localized")
    @classmethod
    def _localized_tags(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for tag in value:
            if not is_language_tag(tag):
                raise ValueError(f"{tag!r} is not a language tag such as 'fr' or 'fr-CA'")
        return {tag.lower(): fields for tag, fields in value.items()}

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, value: list[str]) -> list[str]:
        return [p.strip() for p in value if p.strip()]

    @model_validator(mode="after")
    def _attachment_and_fields(self) -> InsightDocument:
        point = get_point(self.extensionPoint)
        assert point is not None  # checked by the field validator
        has_record = self.recordType is not None or self.recordId is not None
        if has_record and not (self.recordType and self.recordId):
            raise ValueError("recordType and recordId go together")
        if "record" in point.attach_to and "contact" not in point.attach_to and not has_record:
            raise ValueError("recordType and recordId are required for this extension point")
        if not has_record and not self.contactEmail:
            raise ValueError("a document needs recordType and recordId, or contactEmail")
        if not has_record and (self.recordName or self.recordUrl):
            raise ValueError("recordName: a record's name and URL need recordType and recordId")
        if self.contactEmail and "contact" not in point.attach_to:
            raise ValueError(f"contactEmail is not used by {point.name} documents")
        if self.prompts and point.name != "emailDraftFiles":
            raise ValueError("prompts are only used by emailDraftFiles documents")
        if point.datetime_required and self.dateTime is None:
            raise ValueError(f"dateTime is required for {point.name} documents")
        if point.datetime_field and point.datetime_field in self.fields:
            raise ValueError(f"fields.{point.datetime_field} goes in the top-level dateTime")
        for field, length in oversized_keys(self):
            raise ValueError(
                f"{field}: makes a table key of {length} characters once encoded (non-ASCII characters "
                f"take up to 12); at most {MAX_KEY_LENGTH}"
            )
        _check_storable(self)
        _check_item(point, self.fields, self.dateTime, "fields")
        for tag, overlay in self.localized.items():
            extra = set(overlay) - point.localizable
            if extra:
                raise ValueError(
                    f"localized.{tag} may only translate {', '.join(sorted(point.localizable))}; "
                    f"not {', '.join(sorted(extra))}"
                )
            _check_item(point, {**self.fields, **overlay}, self.dateTime, f"localized.{tag}")
        return self

    @property
    def has_record(self) -> bool:
        return self.recordType is not None

    def to_json(self) -> dict[str, Any]:
        """The document as `load` accepts it back (normalised spellings)."""
        data = self.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
        for name in ("dateTime", "expiresAt"):
            value = getattr(self, name)
            if value is not None:
                data[name] = format_utc(value)
        if not self.localized:
            data.pop("localized", None)
        if not self.prompts:
            data.pop("prompts", None)
        return data


def _tenant_id(value: str) -> str:
    if not normalize.is_guid(value):
        raise ValueError("must be a tenant GUID")
    return value.lower()


def _key_text(value: str | None) -> str | None:
    if value is None:
        return None
    if _FORBIDDEN_KEY_CHARS.search(value):
        raise ValueError("must not contain control characters")
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _record_type_of(value: str) -> str:
    value = normalize.record_type(value)
    if not value or len(value) > 100 or _FORBIDDEN_KEY_CHARS.search(value):
        raise ValueError("must be a CRM record type such as 'opportunity'")
    return value


def _record_name(value: str | None) -> str | None:
    if value is None:
        return None
    if _FORBIDDEN_KEY_CHARS.search(value):
        raise ValueError("must not contain control characters")
    value = " ".join(value.split())
    if not value:
        raise ValueError("must not be empty")
    return value


def _https_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme != "https" or not parts.netloc:
        raise ValueError("must be an absolute https URL")
    return value.strip()


class RecordName(BaseModel):
    """A line that only names a record (no insight): backfills the names of records whose
    documents were loaded without one. Its version competes with the record's documents' (the
    name of the highest version wins); without one it counts as written now (milliseconds since
    the epoch, the convention `version` suggests)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenantId: str
    recordType: str
    recordId: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    recordName: str = Field(max_length=MAX_NAME_LENGTH)
    recordUrl: str | None = None
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION, strict=True)

    @field_validator("tenantId")
    @classmethod
    def _tenant(cls, value: str) -> str:
        return _tenant_id(value)

    @field_validator("recordType")
    @classmethod
    def _record_type(cls, value: str) -> str:
        return _record_type_of(value)

    @field_validator("recordId")
    @classmethod
    def _record_id(cls, value: str) -> str:
        checked = _key_text(value)
        assert checked is not None
        return normalize.record_id(checked)

    @field_validator("recordName")
    @classmethod
    def _name(cls, value: str) -> str:
        named = _record_name(value)
        assert named is not None
        return named

    @field_validator("recordUrl")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _https_url(value)

    @model_validator(mode="after")
    def _keys_fit(self) -> RecordName:
        """Checked like a document's: the keys the name index stores it under fit the table."""
        length = record_key_length(self.tenantId, self.recordType, self.recordId)
        if length > MAX_KEY_LENGTH:
            raise ValueError(
                f"recordId: makes a table key of {length} characters once encoded (non-ASCII characters "
                f"take up to 12); at most {MAX_KEY_LENGTH}"
            )
        return self

    @property
    def id(self) -> str:
        """What a report names this line by."""
        return self.recordId

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


AnyDocument = InsightDocument | RecordName


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _check_storable(doc: InsightDocument) -> None:
    """A document the table cannot hold is invalid on its own, naming its largest field, rather
    than failing the transaction it would travel in on every re-send."""
    parts: dict[str, Any] = {f"fields.{k}": v for k, v in doc.fields.items()}
    parts |= {f"localized.{tag}.{k}": v for tag, overlay in doc.localized.items() for k, v in overlay.items()}
    if doc.prompts:
        parts["prompts"] = doc.prompts

    def largest(prefix: str) -> str:
        return max((name for name in parts if name.startswith(prefix)), key=lambda n: wire_size({"v": parts[n]}))

    for prefix, value in (("fields", doc.fields), ("localized", doc.localized), ("prompts", doc.prompts)):
        units = _utf16_units(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
        if units > MAX_PROPERTY_UNITS:
            raise ValueError(
                f"{largest(prefix)}: makes {prefix} {units} UTF-16 units as stored; a table property holds "
                f"at most {MAX_PROPERTY_UNITS}"
            )
    key = home_of(doc)
    size = wire_size(data_entity(doc, key, key.home, MAX_VERSION, twin_of(doc)))
    if size > MAX_ENTITY_BYTES:
        raise ValueError(
            f"{largest('')}: is the largest field of a document of {size} bytes as stored; a table entity holds "
            f"at most {MAX_ENTITY_BYTES}"
        )


def _check_item(point: ExtensionPoint, fields: dict[str, Any], when: datetime | None, where: str) -> None:
    item = dict(fields)
    if point.datetime_field and when is not None:
        item[point.datetime_field] = when
    try:
        point.item_model.model_validate(item)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{where}.{loc}: {err['msg']}") from None


def validate_document(data: object) -> tuple[AnyDocument | None, list[DocumentError]]:
    """Validate one document (or a line naming a record). Returns it, or the errors each naming
    its field."""
    if not isinstance(data, dict):
        return None, [DocumentError("document", "must be a JSON object")]
    model: type[InsightDocument] | type[RecordName] = InsightDocument
    if "recordName" in data and "extensionPoint" not in data and "fields" not in data and "id" not in data:
        model = RecordName
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "document"
            msg = err["msg"].removeprefix("Value error, ")
            named = msg.split(": ", 1)[0] if ": " in msg else ""
            if not err["loc"] and (named.startswith(("fields", "localized")) or named in InsightDocument.model_fields):
                loc, msg = msg.split(": ", 1)
            errors.append(DocumentError(loc, msg))
        return None, errors
