"""Records by name, for the Sales chat tools: a per-tenant index the write path keeps.

A seller asks the chat about "Fabrikam's renewal", not a CRM id. Documents may carry their
record's name (`recordName`, `recordUrl`); a line may also name a record on its own
(`RecordName`, a *claim*). The index lives in one partition per tenant, apart from the
documents:

    PartitionKey  {tenant}|~names
    RowKey        n|{recordType}|{recordId}          the record's entry: its name, URL, CRM scope,
                                                     the name's version, the words indexed
                  w|{word}|{record digest}           one row per word of the name (folded: no case,
                                                     no accents), carrying what an answer shows
                  k|{recordType}|{recordId}          a claim: a name given without a document
                  m|names                            written with the tenant's first entry or claim

Because the index is in other partitions than the documents it describes, it is eventually
consistent, like a document's copy: after the documents of a record change, `refresh` reads
what the record's documents say now and rewrites the entry, its word rows (and a claim) in one
entity group transaction, conditioned on the entry's ETag as it was read before the documents
were. A refresh that loses to a concurrent one is planned again, so whatever the interleaving
the last refresh to commit has seen every document change committed before it read; a writer
that dies between its documents and its refresh leaves the entry behind until the next write
or a re-send, which the ingestion API asks for (the items are reported failed).

The rules: a record's name is the one of its highest version, among its documents that carry
one and its claim; its URL the newest `recordUrl` given; its `crmType`/`crmOrgUrl` the one every document that
names one names (else none). A record with no live document, or with no name, has no entry.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from shared.contract import all_points
from shared.storage._entities import as_int, int64, parse_stored_time
from shared.storage._store import DOCUMENT_ROWS
from shared.storage._table import attempts, create, delete, delete_if_unchanged, prefix_range, put_if_unchanged, upsert
from shared.storage.errors import Conflict
from shared.storage.keys import LEGACY, RecordRef, enc, partition_key

if TYPE_CHECKING:
    from shared.storage._protocols import NameLine
    from shared.storage._store import InsightsStore

__all__ = [
    "MAX_QUERY_WORDS",
    "Found",
    "RecordWork",
    "claims",
    "find_records",
    "fold",
    "names_partition",
    "record_entry",
    "records_of",
    "refold",
    "refresh",
    "refresh_many",
    "words_of",
]

NAMES = "~names"
ENTRY = "n|"
WORD = "w|"
CLAIM = "k|"
MARKER = "m|names"
MAX_WORDS = 24
"""Words of a name that are indexed (each a row, all in one transaction with the entry)."""
MAX_WORD = 24
"""Characters of a word that are indexed: a longer word is found by its first 24."""
MAX_QUERY_WORDS = 8
SCAN_LIMIT = 2000
"""Word rows a search reads at most (a one-letter word of a large tenant's names)."""


def names_partition(tenant: str) -> str:
    return f"{enc(tenant)}|{NAMES}"


def _suffix(record_type: str, record_id: str) -> str:
    return f"{enc(record_type)}|{enc(record_id)}"


def _digest(record_type: str, record_id: str) -> str:
    return hashlib.sha256(f"{record_type}\n{record_id}".encode()).hexdigest()[:20]


_BASE_LETTERS = str.maketrans({"ı": "i", "ł": "l", "ø": "o", "đ": "d", "ð": "d", "ħ": "h", "ŧ": "t", "ŀ": "l"})
_BASE_LETTERS.update(str.maketrans({"æ": "ae", "œ": "oe", "þ": "th"}))
"""Letters that are a base letter with a mark but have no Unicode decomposition, as a seller who
cannot type them writes them: Turkish dotless ı (so `ı`, `i`, `I` and `İ` all match), Polish ł,
Danish ø, and the ligatures."""
FOLD_VERSION = 2
"""The folding rules' version, stored with each name entry: entries folded by older rules are
re-folded by `manage.py migrate` (word rows are keys, so a query finds only what its own folding
wrote)."""


def fold(text: str) -> str:
    """Case- and accent-insensitive form: `Société Générale` and `societe generale` fold alike, and
    `Işık`, `IŞIK`, `ışık` and `isik` too."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return bare.casefold().translate(_BASE_LETTERS)


def words_of(text: str, limit: int = MAX_WORDS) -> list[str]:
    """The distinct folded words of a name, in order, each cut to MAX_WORD characters."""
    out: dict[str, None] = {}
    for word in re.findall(r"\w+", fold(text)):
        out[word[:MAX_WORD]] = None
        if len(out) == limit:
            break
    return list(out)


# ---- what a record's documents say ---------------------------------------------------------------


@dataclass(frozen=True)
class Desired:
    name: str
    version: int
    url: str
    crm: str
    org: str

    @property
    def words(self) -> list[str]:
        return words_of(self.name)


@dataclass
class _Doc:
    version: int
    name: str
    url: str
    crm: str
    org: str


async def _record_documents(store: InsightsStore, tenant: str, record_type: str, record_id: str) -> list[_Doc]:
    """The record's live documents (every extension point it can have documents of), as far as
    the name needs them. Concurrent queries, one a partition."""
    ref = RecordRef.record(record_type, record_id)
    now = datetime.now(UTC)

    async def one(pk: str) -> list[_Doc]:
        found = []
        async for entity in store.table.query(
            "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
            {"pk": pk, "lo": DOCUMENT_ROWS[0], "hi": DOCUMENT_ROWS[1]},
            select=["RowKey", "Ver", "Name", "Url", "Crm", "Org", "Exp"],
        ):
            expires = parse_stored_time(entity.get("Exp") or "")
            if expires is not None and expires <= now:
                continue
            version = 0 if entity["RowKey"].startswith(LEGACY) else as_int(entity.get("Ver"))
            found.append(
                _Doc(
                    version,
                    entity.get("Name") or "",
                    entity.get("Url") or "",
                    entity.get("Crm") or "",
                    entity.get("Org") or "",
                )
            )
        return found

    points = [name for name, point in all_points().items() if "record" in point.attach_to]
    parts = await asyncio.gather(*(one(partition_key(tenant, point, ref)) for point in points))
    return [doc for part in parts for doc in part]


def _desired(docs: list[_Doc], claim: dict[str, Any] | None) -> Desired | None:
    if not docs:
        return None
    named = [(d.version, 0, d.name, d.url) for d in docs if d.name]
    if claim is not None:
        named.append((as_int(claim.get("Ver")), 1, claim["Name"], claim.get("Url") or ""))
    if not named:
        return None
    named.sort(reverse=True)  # highest version first; at a tie, the claim
    version, _, name, _ = named[0]
    url = next((u for *_, u in named if u), "")
    # scoped to one: every document that names a CRM names the same (unscoped ones are seen
    # with any scope), so passing it back shows them all
    crms = {d.crm for d in docs if d.crm}
    orgs = {d.org for d in docs if d.org}
    return Desired(
        name=name,
        version=version,
        url=url,
        crm=crms.pop() if len(crms) == 1 else "",
        org=orgs.pop() if len(orgs) == 1 else "",
    )


def _entry(pk: str, record_type: str, record_id: str, want: Desired) -> dict[str, Any]:
    return {
        "PartitionKey": pk,
        "RowKey": ENTRY + _suffix(record_type, record_id),
        "Type": record_type,
        "RecordId": record_id,
        "Name": want.name,
        "Ver": int64(want.version),
        "Url": want.url,
        "Crm": want.crm,
        "Org": want.org,
        "Words": json.dumps(want.words, ensure_ascii=False),
        "Fold": FOLD_VERSION,
    }


def _word_rows(pk: str, record_type: str, record_id: str, want: Desired) -> list[dict[str, Any]]:
    digest = _digest(record_type, record_id)
    shown = {k: v for k, v in _entry(pk, record_type, record_id, want).items() if k not in ("PartitionKey", "RowKey")}
    return [{"PartitionKey": pk, "RowKey": f"{WORD}{enc(word)}|{digest}", **shown} for word in want.words]


def _same(entry: dict[str, Any], want: Desired) -> bool:
    return (
        as_int(entry.get("Fold")) == FOLD_VERSION
        and entry.get("Name") == want.name
        and as_int(entry.get("Ver")) == want.version
        and (entry.get("Url") or "") == want.url
        and (entry.get("Crm") or "") == want.crm
        and (entry.get("Org") or "") == want.org
    )


# ---- refresh ----------------------------------------------------------------------------------------


@dataclass
class RefreshResult:
    changed: bool = False
    claim: str = ""  # for a claim: "written", "stale" (an equal or newer claim is stored), ""


async def refresh(
    store: InsightsStore,
    tenant: str,
    record_type: str,
    record_id: str,
    *,
    named: bool = True,
    claim: NameLine | None = None,
    forget_claim: bool = False,
) -> RefreshResult:
    """Make the record's entry say what its documents (and claim) say now.

    `named` False: the caller's documents carry no name, so a record the index does not know
    (no entry, no claim) stays unknown after one read. `claim` stores a name given on its own
    (unless an equal or newer one is stored); `forget_claim` removes it (the record's documents
    were deleted)."""
    pk = names_partition(tenant)
    suffix = _suffix(record_type, record_id)
    result = RefreshResult()
    async for _ in attempts():
        entry, stored_claim = await _entry_and_claim(store, pk, suffix)
        if entry is None and stored_claim is None and not named and claim is None:
            return result
        ops: list[tuple[Any, ...]] = []
        effective = stored_claim
        if claim is not None:
            version = claim.version if claim.version is not None else int(time.time() * 1000)
            if stored_claim is not None and as_int(stored_claim.get("Ver")) >= version:
                result.claim = "stale"
            else:
                result.claim = "written"
                row = {
                    "PartitionKey": pk,
                    "RowKey": CLAIM + suffix,
                    "Tenant": tenant,
                    "Type": record_type,
                    "RecordId": record_id,
                    "Name": claim.recordName,
                    "Url": claim.recordUrl or "",
                    "Ver": int64(version),
                }
                ops.append(put_if_unchanged(row, stored_claim.metadata["etag"] if stored_claim is not None else None))
                effective = {"Name": claim.recordName, "Url": claim.recordUrl or "", "Ver": version}
        elif forget_claim and stored_claim is not None:
            ops.append(delete_if_unchanged(pk, CLAIM + suffix, stored_claim.metadata["etag"]))
            effective = None
        want = _desired(await _record_documents(store, tenant, record_type, record_id), effective)
        if entry is not None:
            old_words = {w: None for w in json.loads(entry.get("Words") or "[]")}
            if want is not None and _same(entry, want) and list(old_words) == want.words:
                # already right: touched all the same (a new ETag), so a slower refresh that read
                # the same entry and older documents fails its write and looks again
                touched = {k: v for k, v in entry.items() if k not in ("Timestamp", "etag")}
                ops.append(put_if_unchanged(touched, entry.metadata["etag"]))
            else:
                keep = set(want.words) if want is not None else set()
                digest = _digest(record_type, record_id)
                ops += [delete(pk, f"{WORD}{enc(w)}|{digest}") for w in old_words if w not in keep]
                if want is None:
                    ops.append(delete_if_unchanged(pk, ENTRY + suffix, entry.metadata["etag"]))
                else:
                    ops.append(put_if_unchanged(_entry(pk, record_type, record_id, want), entry.metadata["etag"]))
                    ops += [upsert(row) for row in _word_rows(pk, record_type, record_id, want)]
        elif want is not None:
            ops.append(create(_entry(pk, record_type, record_id, want)))
            ops += [upsert(row) for row in _word_rows(pk, record_type, record_id, want)]
        if not ops:
            return result
        if any(op[0] == "create" for op in ops):  # the tenant has names from now on
            ops.append(upsert({"PartitionKey": pk, "RowKey": MARKER}))
        try:
            await store.table.submit(ops)
        except Conflict:
            continue
        result.changed = True
        return result
    raise Conflict(f"the name index of {record_type} {record_id} kept changing under this write")


async def _has_names(store: InsightsStore, tenant: str) -> bool:
    return await store.table.get(names_partition(tenant), MARKER, select=["RowKey"]) is not None


async def _entry_and_claim(store: InsightsStore, pk: str, suffix: str) -> tuple[Any, Any]:
    """The record's entry and claim, as they are now, with their ETags: one query."""
    entry = claim = None
    async for entity in store.table.query(
        "PartitionKey eq @pk and ( RowKey eq @entry or RowKey eq @claim )",
        {"pk": pk, "entry": ENTRY + suffix, "claim": CLAIM + suffix},
    ):
        if entity["RowKey"].startswith(ENTRY):
            entry = entity
        else:
            claim = entity
    return entry, claim


@dataclass
class RecordWork:
    """What a batch did to one record: whether its documents carry a name, a claim to store,
    whether its claim goes (its documents were deleted)."""

    named: bool = False
    claim: NameLine | None = None
    forget_claim: bool = False


async def refresh_many(
    store: InsightsStore, work: dict[tuple[str, str, str], RecordWork], concurrency: int = 16
) -> dict[tuple[str, str, str], RefreshResult | Exception]:
    """Refresh each (tenant, recordType, recordId); an exception is returned for its record,
    never raised (the caller reports that record's items failed)."""
    turns = asyncio.Semaphore(max(1, concurrency))
    # A batch without names, for a tenant that never had one, has nothing to refresh: one read
    # of the tenant's marker instead of one a record. (A tenant's first named write racing an
    # unnamed one may leave that record's crmType/crmOrgUrl scope stale until its next write;
    # its name is right.)
    noisy = {record[0] for record, job in work.items() if job.named or job.claim or job.forget_claim}
    quiet = {record[0] for record in work} - noisy
    without = set()
    for tenant in quiet:
        try:
            if not await _has_names(store, tenant):
                without.add(tenant)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001, S112 - the records' own refreshes meet it and report
            continue
    work = {record: job for record, job in work.items() if record[0] not in without}

    async def one(record: tuple[str, str, str], job: RecordWork) -> RefreshResult | Exception:
        async with turns:
            try:
                return await refresh(store, *record, named=job.named, claim=job.claim, forget_claim=job.forget_claim)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported per record
                return exc

    records = list(work)
    results = await asyncio.gather(*(one(r, work[r]) for r in records))
    return dict(zip(records, results, strict=True))


# ---- search -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    record_type: str
    record_id: str
    name: str
    url: str
    crm_type: str
    crm_org: str
    exact: int


async def find_records(
    store: InsightsStore, tenant: str, text: str, record_type: str | None = None, top: int = 10
) -> list[Found]:
    """The tenant's records whose name has, for every word of `text`, a word starting with it
    (case and accents aside). Best first: most words matched whole, then the shorter name."""
    wanted = words_of(text, MAX_QUERY_WORDS)
    if not wanted:
        return []  # nothing to look for (the chat tool refuses such a name before it asks)
    probe = max(wanted, key=len)
    pk = names_partition(tenant)
    found: dict[tuple[str, str], Found] = {}
    seen = 0
    lo, hi = prefix_range(f"{WORD}{enc(probe)}")
    async for row in store.table.query(
        "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
        {"pk": pk, "lo": lo, "hi": hi},
        select=["Type", "RecordId", "Name", "Url", "Crm", "Org", "Words"],
        page_size=1000,
    ):
        seen += 1
        if seen > SCAN_LIMIT:
            break
        if record_type and row.get("Type") != record_type:
            continue
        names = json.loads(row.get("Words") or "[]")
        if not all(any(n.startswith(w) for n in names) for w in wanted):
            continue
        key = (row["Type"], row["RecordId"])
        found[key] = Found(
            row["Type"],
            row["RecordId"],
            row.get("Name") or "",
            row.get("Url") or "",
            row.get("Crm") or "",
            row.get("Org") or "",
            sum(w in names for w in wanted),
        )
    ranked = sorted(found.values(), key=lambda f: (-f.exact, len(f.name), fold(f.name), f.record_type, f.record_id))
    return ranked[:top]


async def refold(store: InsightsStore) -> tuple[int, int]:
    """Re-fold the entries written by older folding rules (FOLD_VERSION), every tenant's: one
    read of the table's entry rows (`manage.py migrate`), then a refresh of each such record.
    Returns (entries re-folded, refreshes that failed: run it again)."""
    stale: set[tuple[str, str, str]] = set()
    lo, hi = prefix_range(ENTRY)
    async for row in store.table.query(
        "RowKey ge @lo and RowKey lt @hi", {"lo": lo, "hi": hi}, select=["PartitionKey", "Type", "RecordId", "Fold"]
    ):
        if row["PartitionKey"].endswith(f"|{NAMES}") and as_int(row.get("Fold")) < FOLD_VERSION:
            stale.add((unquote(row["PartitionKey"].rsplit("|", 1)[0]), row["Type"], row["RecordId"]))
    results = await refresh_many(store, {record: RecordWork(named=True) for record in stale})
    failed = sum(isinstance(result, Exception) for result in results.values())
    return len(stale) - failed, failed


def records_of(keys: Iterable[str]) -> set[tuple[str, str, str]]:
    """(tenant, recordType, recordId) of record partitions among PartitionKeys (decoded)."""
    out = set()
    for pk in keys:
        parts = pk.split("|")
        if len(parts) == 5 and parts[2] == "r":
            out.add((unquote(parts[0]), unquote(parts[3]), unquote(parts[4])))
    return out


async def record_entry(store: InsightsStore, tenant: str, record_type: str, record_id: str) -> Found | None:
    """The record's entry (its name and URL), or None when the index does not know it."""
    row = await store.table.get(names_partition(tenant), ENTRY + _suffix(record_type, record_id))
    if row is None:
        return None
    return Found(
        record_type,
        record_id,
        row.get("Name") or "",
        row.get("Url") or "",
        row.get("Crm") or "",
        row.get("Org") or "",
        0,
    )


async def claims(
    store: InsightsStore, tenant: str | None = None, record: tuple[str, str] | None = None
) -> list[dict[str, Any]]:
    """Names given on their own, as the lines `load` accepts back (one tenant, one record, or
    every tenant: a scan of the table, for export)."""
    lo, hi = prefix_range(CLAIM)
    params: dict[str, Any] = {"lo": lo, "hi": hi}
    if record is not None and tenant is not None:
        params = {"lo": CLAIM + _suffix(*record), "hi": CLAIM + _suffix(*record) + "|"}
    query = "RowKey ge @lo and RowKey lt @hi"
    if tenant is not None:
        query = "PartitionKey eq @pk and " + query
        params["pk"] = names_partition(tenant)
    lines = []
    async for row in store.table.query(query, params):
        if not row.get("Tenant"):
            continue
        line = {
            "tenantId": row["Tenant"],
            "recordType": row["Type"],
            "recordId": row["RecordId"],
            "recordName": row["Name"],
        }
        if row.get("Url"):
            line["recordUrl"] = row["Url"]
        line["version"] = as_int(row.get("Ver"))
        lines.append(line)
    return lines
