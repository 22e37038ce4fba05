"""Documents as table entities and back: the one place that knows the property names.

Every entity carries `V`, its schema version. A reader accepts every version up to its own;
writers write only the current one.

    V=1  the first form: `d|` rows, 13-digit millisecond keys, no index entity, no version
    V=2  `e|` rows and `i|` index entities (shared.storage.keys), a document version `Ver` on both
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.contract import format_stored, format_utc, parse_instant
from shared.storage.keys import LEGACY, DocKey, RecordRef, inverted_ticks, is_contact_partition

if TYPE_CHECKING:
    from shared.storage._protocols import Document

__all__ = [
    "SCHEMA_VERSION",
    "IndexState",
    "StoredDocument",
    "data_entity",
    "document_of",
    "index_entity",
    "legacy_key",
    "parse_stored_time",
]

SCHEMA_VERSION = 2


def parse_stored_time(value: str) -> datetime | None:
    """A stored `DateTime`/`Exp` as an instant: either width, a year written without its zeros
    (the first form wrote year 1 as `1-01-01...`), `Z` or an offset, none meaning UTC. Empty: None."""
    return parse_instant(value, missing_zone="utc", short_years=True) if value else None


def as_int(value: Any) -> int:
    """An Int64 property comes back wrapped (EntityProperty); an Int32 one as a plain int."""
    return int(getattr(value, "value", value) or 0)


def int64(value: int) -> Any:
    from azure.data.tables import EdmType, EntityProperty  # with the first write: readers never need it

    return EntityProperty(value, EdmType.INT64)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def data_entity(doc: Document, key: DocKey, pk: str, version: int, twin: str) -> dict[str, Any]:
    """A document's row in partition `pk` (its home, or its copy's partition)."""
    return {
        "PartitionKey": pk,
        "RowKey": key.data_row(pk, doc.dateTime),
        "V": SCHEMA_VERSION,
        "Ver": int64(version),
        "Id": doc.id,
        "Ep": doc.extensionPoint,
        "Tenant": doc.tenantId,
        "RecordType": doc.recordType or "",
        "RecordId": doc.recordId or "",
        "Contact": doc.contactEmail or "",
        "Twin": twin,
        "Crm": doc.crmType or "",
        "Org": doc.crmOrgUrl or "",
        "Name": doc.recordName or "",
        "Url": doc.recordUrl or "",
        "DateTime": format_stored(doc.dateTime) if doc.dateTime else "",
        "Exp": format_stored(doc.expiresAt) if doc.expiresAt else "",
        "Lang": doc.language,
        "Fields": _json(doc.fields),
        "Localized": _json(doc.localized),
        "Prompts": _json(doc.prompts),
    }


@dataclass
class IndexState:
    """A document's index entity in one partition: which row holds it there, and the state it
    is at: (version, deleted, digest), compared in that order (`order`). A deleted document keeps
    its index entity as a tombstone (`row` empty, `dead`), so an older write that arrives later
    is still stale. In the home, `twin` is the partition of the current copy and `gone` the
    partitions that may still hold an older copy; in a copy's partition, `twin` is the home and
    the state is the home's that wrote it (`row` empty when the copy is not here)."""

    row: str = ""
    version: int = 0
    dead: bool = False
    digest: str = ""
    twin: str = ""
    gone: list[str] = field(default_factory=list)
    expires: str = ""
    hints: list[str] = field(default_factory=list)
    """At home: every expiry the document was listed under in the expiry index and whose entry may
    remain (`Hints`), the current one included, so a wide delete removes each."""
    deleted_at: str = ""
    """A tombstone: when it was written (`DelAt`): its grace period runs from then."""
    gc: list[str] = field(default_factory=list)
    """When the grace periods end that this entity is listed for collection under (`Gc`), so a
    wide delete removes each entry (`_expiry`)."""
    etag: str | None = None
    legacy_rows: list[str] = field(default_factory=list)
    legacy_twin: str = ""
    entity: dict[str, Any] | None = None

    @property
    def exists(self) -> bool:
        return self.etag is not None

    @property
    def order(self) -> tuple[int, bool, str]:
        return (self.version, self.dead, self.digest)

    @classmethod
    def from_entity(cls, entity: Any) -> IndexState:
        row = entity.get("Row") or ""
        dead = entity.get("Del")
        return cls(
            row=row,
            version=as_int(entity.get("Ver")),
            dead=(not row) if dead is None else bool(dead),  # entities before `Del`: a tombstone has no row
            digest=entity.get("Sum") or "",
            twin=entity.get("Twin") or "",
            gone=json.loads(entity.get("Gone") or "[]"),
            expires=entity.get("Exp") or "",
            hints=json.loads(entity.get("Hints") or "[]"),
            deleted_at=entity.get("DelAt") or "",
            gc=json.loads(entity.get("Gc") or "[]"),
            etag=entity.metadata.get("etag"),
            entity=dict(entity),
        )


def index_entity(
    key: DocKey,
    pk: str,
    *,
    row: str,
    version: int,
    twin: str,
    dead: bool = False,
    gone: Iterable[str] = (),
    expires: str = "",
    digest: str = "",
    hints: Iterable[str] = (),
    deleted_at: str = "",
    gc: Iterable[str] = (),
) -> dict[str, Any]:
    return {
        "PartitionKey": pk,
        "RowKey": key.index_row(pk),
        "V": SCHEMA_VERSION,
        "Id": key.id,
        "Ver": int64(version),
        "Del": dead,
        "Row": row,
        "Twin": twin,
        "Gone": _json(sorted(set(gone))),
        "Exp": expires,
        "Sum": digest,
        "Hints": _json(sorted(set(hints) - {""})),
        "DelAt": deleted_at if dead or not row else "",  # a tombstone, or a copy's that left
        "Gc": _json(sorted(set(gc) - {""})),
    }


def digest_of(doc: Document) -> str:
    """What a document says, apart from its version: an identical re-send without a version is
    recognised and changes nothing."""
    content = doc.to_json()
    content.pop("version", None)
    return hashlib.sha256(_json(content).encode()).hexdigest()[:32]


def legacy_key(entity: Any) -> DocKey:
    """Which document a first-form row belongs to: in a record's partition, that record's; in a
    contact's, the record it names (a copy) or else the contact's own."""
    pk = entity["PartitionKey"]
    if is_contact_partition(pk) and entity.get("RecordType"):
        tenant_point = pk.split("|", 2)[:2]
        record = RecordRef.record(entity["RecordType"], entity["RecordId"])
        return DocKey("|".join([*tenant_point, record.suffix]), entity["Id"])
    return DocKey(pk, entity["Id"])


def is_copy(entity: Any) -> bool:
    """A row that is the copy of a record's document in a contact's partition."""
    return is_contact_partition(entity["PartitionKey"]) and bool(entity.get("RecordType"))


def document_of(entity: dict[str, Any]) -> dict[str, Any]:
    """A stored document row as the JSON document `load` accepts (normalised spellings)."""
    data: dict[str, Any] = {"tenantId": entity["Tenant"], "extensionPoint": entity["Ep"], "id": entity["Id"]}
    if entity.get("RecordType"):
        data["recordType"] = entity["RecordType"]
        data["recordId"] = entity["RecordId"]
    for key, name in (
        ("Name", "recordName"),
        ("Url", "recordUrl"),
        ("Contact", "contactEmail"),
        ("Crm", "crmType"),
        ("Org", "crmOrgUrl"),
    ):
        if entity.get(key):
            data[name] = entity[key]
    for key, name in (("DateTime", "dateTime"), ("Exp", "expiresAt")):
        when = parse_stored_time(entity.get(key) or "")
        if when is not None:
            data[name] = format_utc(when)
    data["language"] = entity.get("Lang") or "en"
    data["fields"] = json.loads(entity["Fields"])
    localized = json.loads(entity.get("Localized") or "{}")
    if localized:
        data["localized"] = localized
    prompts = json.loads(entity.get("Prompts") or "[]")
    if prompts:
        data["prompts"] = prompts
    if entity.get("Ver"):
        data["version"] = as_int(entity["Ver"])
    return data


@dataclass(frozen=True)
class StoredDocument:
    """A document as a reader gets it back: enough to build any item model."""

    id: str
    point: str
    date_time: datetime | None
    language: str
    fields: dict[str, Any]
    localized: dict[str, dict[str, Any]]
    prompts: tuple[str, ...]
    attached_to_record: bool
    home: str = ""
    """With `id`, which document this is: its record (`r|type|id`, encoded) or, when it has none,
    its contact (`c|address`). Its copy in its other partition has the same home; a document of the
    same id on another record or contact does not."""
    expires: datetime | None = None

    @property
    def identity(self) -> tuple[str, str]:
        return self.home, self.id

    @property
    def sort_key(self) -> tuple[str, str]:
        """Newest first; undated last; ties by id (the RowKey order within a partition)."""
        return inverted_ticks(self.date_time), self.id

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> StoredDocument:
        """Raises ValueError (or KeyError) for a row no reader can make sense of: the caller
        skips it, so one bad row never breaks a record's reads."""
        version = int(entity.get("V", 1))
        if version > SCHEMA_VERSION:
            raise ValueError(f"entity schema version {version} is newer than this reader")
        pk = entity["PartitionKey"]
        return cls(
            id=entity["Id"],
            point=entity["Ep"],
            date_time=parse_stored_time(entity.get("DateTime") or ""),
            language=entity.get("Lang") or "en",
            fields=json.loads(entity["Fields"]),
            localized=json.loads(entity.get("Localized") or "{}"),
            prompts=tuple(json.loads(entity.get("Prompts") or "[]")),
            attached_to_record=not is_contact_partition(pk),
            home=(  # from encoded parts: ("a|b", "c") and ("a", "b|c") are two records
                RecordRef.record(entity["RecordType"], entity["RecordId"]).suffix
                if entity.get("RecordType")
                else RecordRef.contact(entity.get("Contact") or "").suffix
            ),
            expires=parse_stored_time(entity.get("Exp") or ""),
        )


def is_legacy_row(row_key: str) -> bool:
    return row_key.startswith(LEGACY)


__all__ += ["as_int", "digest_of", "int64", "is_copy", "is_legacy_row"]
