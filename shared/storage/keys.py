"""The table's key layout: where every row lives and how rows sort, and the limits keys have
(document validation holds documents to them). Nothing here does I/O.

    PartitionKey  {tenant}|{point}|r|{recordType}|{recordId}    a record's documents
                  {tenant}|{point}|c|{contact address}          a contact's documents
                  ~expiry|{YYYY-MM-DD}                          the expiry index (one a day)

    RowKey        e|{inverted ticks, 19 digits}|{id}             a document (in its home)
                  e|{inverted ticks, 19 digits}|{id}|r|{t}|{r}   a copy of record {t}/{r}'s document
                  i|{id}                                         its index entity (in its home)
                  i|{id}|r|{t}|{r}                               the copy's index entity
                  d|{inverted ms, 13 digits}|{id}                the first form's rows (V=1),
                                                                 read as before until migrated

A document's *home* is its record's partition, or its contact's when it has no record. Every key
component is percent-encoded, so `/ \\ # ?`, `|`, control characters and quotes are safe.

The time part follows the log-tail pattern: `MAX_TICKS - ticks` (.NET ticks, 100 ns since
0001-01-01T00:00:00Z), zero-padded to 19 digits, so every instant from year 1 to year 9999 sorts
newest first and a time window is one RowKey range. An undated document gets 19 nines: it sorts
after every dated one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from shared.storage._protocols import Document

__all__ = [
    "DATA",
    "INDEX",
    "LEGACY",
    "MAX_KEY_LENGTH",
    "MAX_TICKS",
    "DocKey",
    "RecordRef",
    "WindowBounds",
    "enc",
    "expiry_partition",
    "gc_partition",
    "home_of",
    "inverted_ticks",
    "is_contact_partition",
    "oversized_keys",
    "partition_key",
    "partition_keys",
    "record_key_length",
    "ref_suffix",
    "refs_of",
    "ticks",
    "twin_of",
]

DATA = "e|"
INDEX = "i|"
LEGACY = "d|"
"""RowKey prefixes: documents, index entities, and the first form's document rows."""
MAX_KEY_LENGTH = 512
"""The longest PartitionKey or RowKey, in characters once encoded: Azurite's limit (Azure's is
1 KiB). A document whose keys would be longer is refused as invalid, naming its field, rather
than failing the whole transaction it would travel in."""

_YEAR_ONE = datetime(1, 1, 1, tzinfo=UTC)
MAX_TICKS = 3_155_378_975_999_999_999
"""Ticks of 9999-12-31T23:59:59.9999999Z, .NET's DateTime.MaxValue."""
_UNDATED = "9" * 19
EXPIRY = "~expiry|"
GC = "~gc|"
"""The two day-partitioned indexes of housekeeping: documents by expiry, and tombstones and
watermarks by the time their grace period ends (`shared.storage._expiry`)."""
__all__ += ["EXPIRY", "GC"]


def enc(value: str) -> str:
    return quote(value, safe="")


@dataclass(frozen=True)
class RecordRef:
    """Where a document is attached: a CRM record (`kind` "r") or a contact address ("c")."""

    kind: str
    parts: tuple[str, ...]

    @classmethod
    def record(cls, record_type: str, record_id: str) -> RecordRef:
        return cls("r", (record_type, record_id))

    @classmethod
    def contact(cls, email: str) -> RecordRef:
        return cls("c", (email,))

    @property
    def suffix(self) -> str:
        """The reference as it ends a PartitionKey (and a copy's RowKey)."""
        return "|".join([self.kind, *(enc(p) for p in self.parts)])


def partition_key(tenant: str, point: str, ref: RecordRef) -> str:
    return f"{enc(tenant)}|{enc(point)}|{ref.suffix}"


def ref_suffix(pk: str) -> str:
    """`r|{type}|{id}` or `c|{address}`: what follows tenant and point in a PartitionKey."""
    return pk.split("|", 2)[2]


def is_contact_partition(pk: str) -> bool:
    return pk.split("|", 3)[2] == "c"


def ticks(when: datetime) -> int:
    return (when.astimezone(UTC) - _YEAR_ONE) // timedelta(microseconds=1) * 10


def inverted_ticks(when: datetime | None) -> str:
    return _UNDATED if when is None else f"{MAX_TICKS - ticks(when):019d}"


@dataclass(frozen=True)
class DocKey:
    """A document's identity: its home partition and its id. Its index entity and data row in a
    partition are named by `index_row` / `data_row`: in its home plainly, elsewhere (a copy) with
    the home's reference after the id, so the same id homed on two records never collides."""

    home: str
    id: str

    def index_row(self, pk: str) -> str:
        return INDEX + self._tail(pk)

    def data_row(self, pk: str, when: datetime | None) -> str:
        return f"{DATA}{inverted_ticks(when)}|{self._tail(pk)}"

    def _tail(self, pk: str) -> str:
        return enc(self.id) if pk == self.home else f"{enc(self.id)}|{ref_suffix(self.home)}"


def refs_of(doc: Document) -> list[RecordRef]:
    """Every partition a document is reachable through: its record and/or its contact."""
    refs = []
    if doc.recordType and doc.recordId:
        refs.append(RecordRef.record(doc.recordType, doc.recordId))
    if doc.contactEmail:
        refs.append(RecordRef.contact(doc.contactEmail))
    return refs


def partition_keys(doc: Document) -> list[str]:
    return [partition_key(doc.tenantId, doc.extensionPoint, ref) for ref in refs_of(doc)]


def home_of(doc: Document) -> DocKey:
    return DocKey(partition_keys(doc)[0], doc.id)


def twin_of(doc: Document) -> str:
    """The partition of the document's copy: its contact's, when it has a record and a contact."""
    keys = partition_keys(doc)
    return keys[1] if len(keys) > 1 else ""


def oversized_keys(doc: Document) -> list[tuple[str, int]]:
    """(field, encoded length) of each key of the document longer than MAX_KEY_LENGTH: a RowKey
    holds the id (and, for the copy, the record); a PartitionKey the record or the contact."""
    found = []
    keys = partition_keys(doc)
    for ref, pk in zip(refs_of(doc), keys, strict=True):
        if len(pk) > MAX_KEY_LENGTH:
            found.append(("recordId" if ref.kind == "r" else "contactEmail", len(pk)))
    if found:
        return found
    key = DocKey(keys[0], doc.id)
    row = max(len(key.data_row(pk, doc.dateTime)) for pk in keys)
    if row > MAX_KEY_LENGTH:
        found.append(("id", row))
    return found


def record_key_length(tenant: str, record_type: str, record_id: str) -> int:
    """The longest key a record takes in the name index (`{tenant}|~names` rows `n|`, `k|`), where
    a line that only names a record is stored."""
    return max(len(f"{enc(tenant)}|~names"), len(f"n|{enc(record_type)}|{enc(record_id)}"))


def expiry_partition(when: datetime) -> str:
    return f"{EXPIRY}{when.astimezone(UTC).date().isoformat()}"


def gc_partition(when: datetime) -> str:
    return f"{GC}{when.astimezone(UTC).date().isoformat()}"


@dataclass(frozen=True)
class WindowBounds:
    """A time window: `start` inclusive, `end` exclusive (either may be absent)."""

    start: datetime | None = None
    end: datetime | None = None

    def row_range(self) -> tuple[str, str]:
        """The documents' RowKey range for the window (first-form rows are filtered by date)."""
        low, high = DATA, DATA[:-1] + "}"
        if self.end is not None:
            # dateTime < end  <=>  inverted > inverted(end)
            low = f"{DATA}{MAX_TICKS - ticks(self.end) + 1:019d}|"
        if self.start is not None:
            # dateTime >= start  <=>  inverted <= inverted(start)
            high = f"{DATA}{MAX_TICKS - ticks(self.start) + 1:019d}|"
        return low, high

    def holds(self, when: datetime | None) -> bool:
        if when is None:
            return self.start is None
        return (self.start is None or when >= self.start) and (self.end is None or when < self.end)
