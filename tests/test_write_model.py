"""A model of every write rule (docs/write-rules.md), and the system held to it.

A hypothesis state machine runs random histories against Azurite through the storage layer's
public write and delete calls: writes with and without versions (moves between contacts, a
contact's own documents, names, expiry), document deletes with and without versions, record,
contact and tenant deletes with and without versions (each followed through its continuation
to `complete`), the purge as a clock moves, the collection of tombstones and watermarks once
their grace is over, two operations at once, and a storage fault injected
at any call (before it, or after it took effect with the answer lost) followed by the re-send.

After every step what storage serves (each record's and each contact's partition, as every read
path reads them), every document's stored row and version, the name index, and the table's
contents are held to a reference model written from the rules alone: for two operations at once,
to the model of one of their two serial orders (as Jepsen checks a history). No entity may carry
the text of a document the model says is gone, or an erased contact's address.

The model uses the code's canonical digest (`digest_of`) only to break a tie between two writes of
one version: that digest is part of the rule. Its long run: `python3 manage.py write-model`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

import shared.storage._table as table_module
from shared.documents import validate_document
from shared.storage import Scope, collect_tombstones, delete, delete_documents, purge_expired, write, write_names
from shared.storage._entities import digest_of
from shared.storage.errors import Unavailable
from shared.storage.keys import DocKey, RecordRef, partition_key
from tests.conftest import TENANT_A, TENANT_B, Service, attached

POINT = "emailSummary"
EMAIL = "/api/enhanceskills/email-insights-v2"
ALLOWED = f"{TENANT_A},{TENANT_B}"
RECORDS = ("r1", "r2")
CONTACTS = ("c0", "c1")
IDS = ("d0", "d1")
HOMES = (*(("r", r) for r in RECORDS), *(("c", c) for c in CONTACTS))
EXAMPLES = int(os.environ.get("WRITE_MODEL_EXAMPLES", "25"))
STEPS = int(os.environ.get("WRITE_MODEL_STEPS", "14"))

Order = tuple[int, bool, str]
"""(version, deleted, digest): how states of one document are ordered."""
Key = tuple[str, str, str]
"""(home kind, home name, id)."""


# ---- the reference model: the rules, and nothing of the code ------------------------------------


@dataclass
class Doc:
    version: int
    dead: bool
    digest: str = ""
    text: str = ""
    contact: str | None = None  # the contact a record's document names (a contact's own: its home)
    expires: int | None = None  # in model days
    name: str | None = None

    @property
    def order(self) -> Order:
        return (self.version, self.dead, self.digest)


@dataclass
class Model:
    docs: dict[Key, Doc] = field(default_factory=dict)
    copies: dict[str, dict[Key, tuple[int, bool]]] = field(default_factory=lambda: {c: {} for c in CONTACTS})
    """Versioned entities in each contact's partition, (version, deleted): copies and tombstones of
    records' documents and the contact's own documents' index entities."""
    record_marks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECORDS, 0))
    contact_marks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CONTACTS, 0))
    tenant_mark: int = 0
    claims: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Names given on their own (name lines): (version, name) per record."""

    # -- the marks covering a change
    def mark_for(self, key: Key, contact: str | None) -> int:
        kind, home, _ = key
        mark = self.tenant_mark
        if kind == "r":
            mark = max(mark, self.record_marks[home])
        named = home if kind == "c" else contact
        if named:
            mark = max(mark, self.contact_marks[named])
        return mark

    def live(self, key: Key) -> Doc | None:
        doc = self.docs.get(key)
        return doc if doc is not None and not doc.dead else None

    # -- copies: a record's document's state at its contact
    def _copy(self, contact: str, key: Key, version: int, tombstone: bool) -> None:
        held = self.copies[contact]
        erased = self.contact_marks[contact]
        if erased and (version <= erased or (tombstone and key not in held)):
            return  # an erased contact's partition takes nothing at or below its mark
        if key not in held or held[key][0] < version or (tombstone and held[key] == (version, False)):
            # a copy that leaves at its own version (its document moved to another contact at
            # the same version, winning a tie) is a tombstone at that version
            held[key] = (version, tombstone)

    def _commit(self, key: Key, new: Doc) -> None:
        kind, home, _ = key
        old = self.docs.get(key)
        self.docs[key] = new
        if kind == "c":
            self.copies[home][key] = (new.version, new.dead)
            return
        if old is not None and not old.dead and old.contact and old.contact != new.contact:
            self._copy(old.contact, key, new.version, tombstone=True)  # the copy leaves
        if new.contact:
            self._copy(new.contact, key, new.version, tombstone=new.dead)

    def _tombstone(self, key: Key, version: int) -> None:
        old = self.docs[key]
        new = Doc(version, True)
        self.docs[key] = new
        kind, home, _ = key
        if kind == "c":
            self.copies[home][key] = (version, True)
        elif not old.dead and old.contact:
            self._copy(old.contact, key, version, tombstone=True)

    # -- operations; each returns its status (or the count a scope delete reports)
    def write(self, key: Key, doc: Doc, version: int | None) -> str:
        stored = self.docs.get(key)
        mark = self.mark_for(key, doc.contact)
        if version is None:
            if stored is not None and not stored.dead and stored.digest == doc.digest:
                return "written"  # the stored document again
            doc.version = max(stored.version if stored else 0, mark) + 1
        else:
            doc.version = version
            if stored is not None and doc.order == stored.order:
                return "written"  # a re-send of what is stored
            if (mark and version <= mark) or (stored is not None and doc.order < stored.order):
                return "stale"
        self._commit(key, doc)
        return "written"

    def delete_document(self, key: Key, version: int | None) -> str:
        stored = self.docs.get(key)
        if version is None:
            if stored is None:
                return "absent"
            if stored.dead:
                return "written"
            self._tombstone(key, stored.version)
            return "deleted"
        new: Order = (version, True, "")
        if stored is not None and new == stored.order:
            return "written"
        mark = self.mark_for(key, None)
        if (mark and version <= mark) or (stored is not None and new < stored.order):
            return "stale"
        if stored is None:
            self.docs[key] = Doc(version, True)
            if key[0] == "c":
                self.copies[key[1]][key] = (version, True)
            return "written"
        was_live = not stored.dead
        self._tombstone(key, version)
        return "deleted" if was_live else "written"

    def _scope_delete(self, key: Key, doc: Doc, version: int | None) -> bool:
        """A wider delete's tombstone for one live document: at its own version, or at the delete's
        when that rises above it. Whether it went."""
        if version is None:
            self._tombstone(key, doc.version)
        elif (version, True, "") > doc.order:
            self._tombstone(key, version)
        else:
            return False
        return True

    def delete_record(self, record: str, version: int | None) -> int:
        self.claims.pop(record, None)  # a record's delete takes its name line with it
        if version is not None:
            self.record_marks[record] = max(self.record_marks[record], version)
        deleted = 0
        for key, doc in list(self.docs.items()):
            if key[:2] != ("r", record) or doc.dead:
                continue
            deleted += self._scope_delete(key, doc, version)
        return deleted

    def erase_contact(self, contact: str, version: int | None) -> int:
        naming = {k: d for k, d in self.docs.items() if k[0] == "r" and not d.dead and d.contact == contact}
        if version is None:
            found = [*(v for v, _ in self.copies[contact].values()), *(d.version for d in naming.values())]
            mark = max(found, default=0)
        else:
            mark = version
        self.contact_marks[contact] = max(self.contact_marks[contact], mark)
        deleted = 0
        for key, doc in naming.items():
            if doc.version > mark:
                continue
            deleted += self._scope_delete(key, doc, version)
        for key, (held, dead) in list(self.copies[contact].items()):
            # at or below the mark; and a records' document's tombstone here, whatever its version
            if held <= mark or (key[0] == "r" and dead):
                del self.copies[contact][key]
                if held > mark:
                    continue
                if key[0] == "c":
                    doc = self.docs.pop(key)
                    deleted += not doc.dead
        return deleted

    def offboard(self, version: int | None) -> int:
        if version is None:
            found = [
                *(d.version for d in self.docs.values()),
                *(v for held in self.copies.values() for v, _ in held.values()),
                *self.record_marks.values(),
                *self.contact_marks.values(),
            ]
            mark = max(found, default=0)
        else:
            mark = version
        self.tenant_mark = max(self.tenant_mark, mark)
        self.claims.clear()  # the name index rows written before the delete began
        deleted = 0
        for key, doc in list(self.docs.items()):
            if doc.version <= mark:
                del self.docs[key]
                deleted += not doc.dead
        for held in self.copies.values():
            for key, (v, _) in list(held.items()):
                if v <= mark:
                    del held[key]
        for marks in (self.record_marks, self.contact_marks):
            for name, v in marks.items():
                if v <= mark:
                    marks[name] = 0
        return deleted

    def purge(self, today: int) -> int:
        purged = 0
        for key, doc in list(self.docs.items()):
            if not doc.dead and doc.expires is not None and doc.expires <= today:
                self._tombstone(key, doc.version)
                purged += 1
        return purged

    def collect(self) -> None:
        """Every tombstone and watermark is past its grace and goes: a later write of any version
        lands as on a document never written."""
        self.docs = {key: doc for key, doc in self.docs.items() if not doc.dead}
        for held in self.copies.values():
            for key, (_, dead) in list(held.items()):
                if dead:
                    del held[key]
        self.record_marks = dict.fromkeys(RECORDS, 0)
        self.contact_marks = dict.fromkeys(CONTACTS, 0)
        self.tenant_mark = 0

    # -- what a reader is served
    def served(self) -> dict[str, set[tuple[str, str, str]]]:
        """Per partition (`r:r1`, `c:c0`), the (home, id, text) of each document served there."""
        view: dict[str, set[tuple[str, str, str]]] = {f"{k}:{h}": set() for k, h in HOMES}
        for (kind, home, doc_id), doc in self.docs.items():
            if doc.dead:
                continue
            view[f"{kind}:{home}"].add((f"{kind}:{home}", doc_id, doc.text))
            if kind == "r" and doc.contact:
                view[f"c:{doc.contact}"].add((f"r:{home}", doc_id, doc.text))
        return view

    def rows(self) -> set[tuple[str, str, str, int, str]]:
        """Every stored row: (partition, home, id, version, text)."""
        found = set()
        for (kind, home, doc_id), doc in self.docs.items():
            if doc.dead:
                continue
            found.add((f"{kind}:{home}", f"{kind}:{home}", doc_id, doc.version, doc.text))
            if kind == "r" and doc.contact:
                found.add((f"c:{doc.contact}", f"r:{home}", doc_id, doc.version, doc.text))
        return found

    def names(self) -> dict[str, str]:
        """Each record's name as the rules give it: none while it has no live document; else the
        name of the highest version among its named documents and its name line, the line at a
        tie, the greater name between two documents."""
        result: dict[str, str] = {}
        for record in RECORDS:
            docs = [d for (k, h, _), d in self.docs.items() if (k, h) == ("r", record) and not d.dead]
            named = [(d.version, 0, d.name) for d in docs if d.name]
            if record in self.claims:
                version, name = self.claims[record]
                named.append((version, 1, name))
            if docs and named:
                result[record] = max(named)[2]
        return result

    def name_line(self, record: str, name: str, version: int) -> str:
        stored = self.claims.get(record)
        if stored is not None and stored[0] >= version:
            return "stale"
        self.claims[record] = (version, name)
        return "written"

    def texts(self) -> set[str]:
        return {d.text for d in self.docs.values() if not d.dead}


# ---- faults -------------------------------------------------------------------------------------


class Faults:
    """The n-th storage call from `arm` fails: before it reaches storage, or after it took effect
    with its answer lost."""

    def __init__(self) -> None:
        self.countdown: int | None = None
        self.after = False
        self.fired = False

    def arm(self, n: int, after: bool) -> None:
        self.countdown, self.after, self.fired = n, after, False

    def disarm(self) -> None:
        self.countdown = None

    def due(self) -> bool:
        if self.countdown is None:
            return False
        self.countdown -= 1
        if self.countdown == 0:
            self.countdown, self.fired = None, True
            return True
        return False


FAULTS = Faults()


@pytest.fixture
def faulty_table(monkeypatch: pytest.MonkeyPatch) -> Faults:
    table = table_module.Table
    for name in ("get", "submit", "replace_if_unchanged", "upsert", "delete"):
        original = getattr(table, name)

        def wrap(original: Any = original) -> Any:
            async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
                if FAULTS.due():
                    if FAULTS.after:
                        await original(self, *args, **kwargs)
                    raise Unavailable("injected fault")
                return await original(self, *args, **kwargs)

            return call

        monkeypatch.setattr(table, name, wrap())
    pages = table.pages

    async def faulty_pages(self: Any, *args: Any, **kwargs: Any) -> Any:
        async for page in pages(self, *args, **kwargs):
            if FAULTS.due():
                raise Unavailable("injected fault")
            yield page

    monkeypatch.setattr(table, "pages", faulty_pages)
    FAULTS.disarm()
    yield FAULTS
    FAULTS.disarm()


# ---- the system, driven through the storage layer -----------------------------------------------


class System:
    examples = 0

    def __init__(self, service: Service) -> None:
        self.service = service
        self.store = service.store
        self.tenant = str(uuid.UUID(int=uuid.uuid4().int & ~(0xF << 76) | (4 << 76)))
        self.run_id = uuid.uuid4().hex[:8]
        # each example's days lie after the last one's, whose leftovers a first purge clears: the
        # purge reads the expiry index of every tenant
        System.examples += 1
        start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=2)
        self.base = start + timedelta(days=10 * System.examples)
        service.run(purge_expired(self.store, now=self.base - timedelta(hours=1)))

    def address(self, contact: str) -> str:
        return f"{contact}-{self.run_id}@fabrikam.example"

    def record_id(self, record: str) -> str:
        return f"{record}-{self.run_id}"

    def home(self, key: Key) -> str:
        kind, home, _ = key
        ref = (
            RecordRef.record("opportunity", self.record_id(home))
            if kind == "r"
            else RecordRef.contact(self.address(home))
        )
        return partition_key(self.tenant, POINT, ref)

    def document(self, key: Key, doc: Doc, version: int | None) -> Any:
        kind, home, doc_id = key
        contact = self.address(doc.contact) if doc.contact else None
        data = attached(
            POINT,
            id=doc_id,
            record_id=self.record_id(home) if kind == "r" else None,
            contact=contact,
            tenant=self.tenant,
        )
        data["fields"] = {"insight": doc.text}
        if version is not None:
            data["version"] = version
        if doc.expires is not None:
            data["expiresAt"] = (self.base + timedelta(days=doc.expires)).isoformat().replace("+00:00", "Z")
        if doc.name:
            data["recordName"] = doc.name
        document, errors = validate_document(data)
        assert document is not None, errors
        return document

    async def write(self, key: Key, doc: Doc, version: int | None) -> str:
        report = await write(self.store, [self.document(key, doc, version)])
        return report.outcomes[0].status

    async def name_line(self, record: str, name: str, version: int | None) -> tuple[str, int]:
        line = {
            "tenantId": self.tenant,
            "recordType": "opportunity",
            "recordId": self.record_id(record),
            "recordName": name,
        }
        if version is not None:
            line["version"] = version
        parsed, errors = validate_document(line)
        assert parsed is not None, errors
        sent = version if version is not None else 0
        outcome = (await write_names(self.store, [parsed]))[0]
        return outcome.status, sent

    async def delete_document(self, key: Key, version: int | None) -> str:
        report = await delete(self.store, [DocKey(self.home(key), key[2])], version)
        outcome = report.outcomes[0]
        return "deleted" if outcome.status in ("written", "kept") and outcome.existed else outcome.status

    async def scope_delete(self, scope: str, subject: str | None, version: int | None) -> tuple[int, bool]:
        """Follow the delete through its continuation; (deleted, whether any item failed)."""
        deleted, continuation = 0, None
        for _ in range(60):
            report = await delete_documents(
                self.store,
                tenant=self.tenant,
                scope=scope,
                record=("opportunity", self.record_id(subject)) if scope == "record" and subject else None,
                contact=self.address(subject) if scope == "contact" and subject else None,
                version=version,
                continuation=continuation,
            )
            deleted += report.existed
            if report.count("failed"):
                return deleted, True
            if report.complete:
                return deleted, False
            continuation = report.continuation
            await asyncio.sleep(report.retry_after)
        raise AssertionError("a delete that never completes")

    async def purge(self, today: int) -> int:
        return await purge_expired(self.store, now=self.base + timedelta(days=today, hours=1))

    async def collect(self, today: int) -> int:
        """The collection, at a time past every grace period of this history."""
        grace = timedelta(seconds=self.store.grace_seconds)
        return await collect_tombstones(self.store, now=self.base + timedelta(days=today, hours=2) + grace)

    def leftovers(self) -> list[str]:
        """What the collection must have removed: the tenant's tombstones, raised watermarks and
        collection entries."""
        found = [
            f"{e['PartitionKey']}/{e['RowKey']}"
            for e in self.entities()
            if (str(e["RowKey"]).startswith("i|") and not e.get("Row"))
            or ((e["RowKey"] == "~w" or e["PartitionKey"].endswith("|~w")) and _int(e.get("Ver")))
        ]
        mark = next(
            iter(
                self.service.table.query_entities(
                    "PartitionKey eq '~tenants' and RowKey eq @t", parameters={"t": self.tenant}
                )
            ),
            None,
        )
        if mark is not None and _int(mark.get("Ver")):
            found.append(f"~tenants/{self.tenant}")
        entries = self.service.table.query_entities("PartitionKey ge '~gc|' and PartitionKey lt '~gc}'")
        found += [
            f"entry {e['Pk']} {e['Rk']} {e['Exp']} {e['PartitionKey']}"
            for e in entries
            if self.tenant in (e["Pk"].split("|")[0], e["Rk"])
        ]
        return found

    # -- what it holds
    async def served(self) -> dict[str, set[tuple[str, str, str]]]:
        refs = [
            RecordRef.record("opportunity", self.record_id(h)) if k == "r" else RecordRef.contact(self.address(h))
            for k, h in HOMES
        ]
        parts = await self.store.read_many(self.tenant, POINT, refs, Scope(), [50] * len(refs))
        view = {}
        for (kind, home), docs in zip(HOMES, parts, strict=True):
            view[f"{kind}:{home}"] = {(self._home_name(d.home), d.id, d.fields["insight"]) for d in docs}
        return view

    def _home_name(self, encoded_home: str) -> str:
        for kind, home in HOMES:
            if self.home((kind, home, "x")).endswith("|" + encoded_home):
                return f"{kind}:{home}"
        return encoded_home

    def entities(self) -> list[dict[str, Any]]:
        lo, hi = f"{self.tenant}|", f"{self.tenant}}}"
        return [
            dict(e) | {"_etc": e.metadata}
            for e in self.service.table.query_entities(
                "PartitionKey ge @lo and PartitionKey lt @hi", parameters={"lo": lo, "hi": hi}
            )
        ]

    def rows(self) -> set[tuple[str, str, str, int, str]]:
        found = set()
        for e in self.entities():
            if not str(e["RowKey"]).startswith("e|"):
                continue
            partition = self._home_name(e["PartitionKey"].split("|", 2)[2])
            home = f"r:{self._record_of(e)}" if e.get("RecordId") else partition
            ver = e["Ver"].value if hasattr(e["Ver"], "value") else e["Ver"]
            found.add((partition, home, e["Id"], ver, json.loads(e["Fields"])["insight"]))
        return found

    def _record_of(self, entity: dict[str, Any]) -> str:
        return str(entity["RecordId"]).removesuffix(f"-{self.run_id}")

    def names(self) -> dict[str, str]:
        from shared.storage import names_partition

        found = {}
        for e in self.service.table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": names_partition(self.tenant)}
        ):
            if str(e["RowKey"]).startswith("n|"):
                found[str(e["RecordId"]).removesuffix(f"-{self.run_id}")] = e["Name"]
        return found

    def everything(self) -> str:
        """The table's whole text (every entity of every partition, keys included)."""
        return "\n".join(
            json.dumps({k: str(v) for k, v in e.items()}) for e in self.service.table.list_entities()
        ).lower()


def _int(value: Any) -> int:
    return int(getattr(value, "value", value) or 0)


# ---- the machine --------------------------------------------------------------------------------

versions = st.one_of(st.none(), st.integers(1, 12))


def run_machine(service: Service, faults: Faults) -> None:
    class WriteRules(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            self.system = System(service)
            self.model = Model()
            self.today = 0
            self.counter = 0
            self.erased: set[str] = set()

        def run(self, coroutine: Any) -> Any:
            return service.run(coroutine)

        def new_doc(self, key: Key, contact: str | None, expires: int | None, named: bool) -> Doc:
            self.counter += 1
            text = f"note {self.counter} {self.system.run_id}"
            doc = Doc(0, False, text=text, expires=expires)
            doc.contact = key[1] if key[0] == "c" else contact
            doc.name = f"Deal {self.counter}" if named and key[0] == "r" else None
            return doc

        def digest(self, key: Key, doc: Doc, version: int | None) -> str:
            return digest_of(self.system.document(key, doc, version))

        # -- serial operations (each its status or count checked)
        @rule(
            home=st.sampled_from(HOMES),
            id=st.sampled_from(IDS),
            contact=st.sampled_from((None, *CONTACTS)),
            version=versions,
            expires=st.sampled_from((None, None, 1, 2, 4)),
            named=st.booleans(),
        )
        def write(
            self,
            home: tuple[str, str],
            id: str,
            contact: str | None,
            version: int | None,
            expires: int | None,
            named: bool,
        ) -> None:
            key = (*home, id)
            doc = self.new_doc(key, contact, expires, named)
            doc.digest = self.digest(key, doc, version)
            expected = self.model.write(key, doc, version)
            assert self.run(self.system.write(key, doc, version)) == expected

        @rule(home=st.sampled_from(HOMES), id=st.sampled_from(IDS), version=versions)
        def resend_stored(self, home: tuple[str, str], id: str, version: int | None) -> None:
            """The stored document sent again (a retry), with its version or none: changes nothing."""
            key = (*home, id)
            stored = self.model.live(key)
            if stored is None:
                return
            doc = copy.copy(stored)
            sent = stored.version if version is not None else None
            doc.digest = self.digest(key, doc, sent)
            assert doc.digest == stored.digest
            expected = self.model.write(key, doc, sent)
            assert expected == "written"
            assert self.run(self.system.write(key, doc, sent)) == "written"

        @rule(record=st.sampled_from(RECORDS), version=st.one_of(st.none(), st.integers(1, 12)))
        def name_line(self, record: str, version: int | None) -> None:
            """A record's name given on its own; without a version it counts as written now (in
            milliseconds, above every version of these histories)."""
            self.counter += 1
            name = f"Line {self.counter}"
            before = time.time_ns() // 1_000_000
            status, _ = self.run(self.system.name_line(record, name, version))
            sent = version if version is not None else before + 1  # at least this; the rule compares
            expected = self.model.name_line(record, name, sent)
            assert status == expected

        @rule(home=st.sampled_from(HOMES), id=st.sampled_from(IDS), version=versions)
        def delete_document(self, home: tuple[str, str], id: str, version: int | None) -> None:
            key = (*home, id)
            expected = self.model.delete_document(key, version)
            got = self.run(self.system.delete_document(key, version))
            assert got == expected

        @rule(record=st.sampled_from(RECORDS), version=versions)
        def delete_record(self, record: str, version: int | None) -> None:
            expected = self.model.delete_record(record, version)
            assert self.run(self.system.scope_delete("record", record, version)) == (expected, False)

        @rule(contact=st.sampled_from(CONTACTS), version=versions)
        def erase_contact(self, contact: str, version: int | None) -> None:
            expected = self.model.erase_contact(contact, version)
            assert self.run(self.system.scope_delete("contact", contact, version)) == (expected, False)
            self.erased.add(contact)

        @rule(version=versions)
        def offboard(self, version: int | None) -> None:
            expected = self.model.offboard(version)
            assert self.run(self.system.scope_delete("tenant", None, version)) == (expected, False)
            self.erased |= set(CONTACTS)

        @rule(days=st.integers(1, 3))
        def purge(self, days: int) -> None:
            self.today += days
            expected = self.model.purge(self.today)
            assert self.run(self.system.purge(self.today)) == expected

        @rule()
        def collect(self) -> None:
            """The clock passes every grace period: the housekeeping run collects every tombstone
            and watermark, and later writes land whatever their version."""
            self.model.collect()
            self.run(self.system.collect(self.today))
            assert self.system.leftovers() == []

        # -- a fault anywhere, then the re-send
        @rule(
            op=st.sampled_from(("write", "delete", "record", "contact", "tenant", "purge", "collect")),
            home=st.sampled_from(HOMES),
            id=st.sampled_from(IDS),
            contact=st.sampled_from((None, *CONTACTS)),
            version=versions,
            at=st.integers(1, 12),
            after=st.booleans(),
        )
        def fault_then_resend(
            self,
            op: str,
            home: tuple[str, str],
            id: str,
            contact: str | None,
            version: int | None,
            at: int,
            after: bool,
        ) -> None:
            key = (*home, id)
            if op == "write":
                doc = self.new_doc(key, contact, None, True)
                doc.digest = self.digest(key, doc, version)
                self.model.write(key, copy.copy(doc), version)
                attempt = lambda: self.system.write(key, doc, version)  # noqa: E731
                done = lambda result: result != "failed"  # noqa: E731
            elif op == "delete":
                self.model.delete_document(key, version)
                attempt = lambda: self.system.delete_document(key, version)  # noqa: E731
                done = lambda result: result != "failed"  # noqa: E731
            elif op == "purge":
                self.today += 1
                self.model.purge(self.today)
                attempt = lambda: self.system.purge(self.today)  # noqa: E731
                done = lambda result: result == 0  # noqa: E731 - run again until a run finds nothing left
            elif op == "collect":
                self.model.collect()
                attempt = lambda: self.system.collect(self.today)  # noqa: E731
                done = lambda result: result == 0 and not self.system.leftovers()  # noqa: E731
            else:
                scope = {"record": "record", "contact": "contact", "tenant": "tenant"}[op]
                subject = {"record": home[1] if home[0] == "r" else "r1", "contact": contact or "c0"}.get(op)
                if op == "record":
                    self.model.delete_record(subject or "r1", version)
                elif op == "contact":
                    self.model.erase_contact(subject or "c0", version)
                    self.erased.add(subject or "c0")
                else:
                    self.model.offboard(version)
                    self.erased |= set(CONTACTS)
                attempt = lambda: self.system.scope_delete(scope, subject, version)  # noqa: E731
                done = lambda result: not result[1]  # noqa: E731
            faults.arm(at, after)
            try:
                for _ in range(6):  # the partner sends again until the answer says it is done
                    try:
                        result = self.run(attempt())
                    except Unavailable:
                        continue
                    finally:
                        faults.disarm()
                    if done(result):
                        break
                else:
                    raise AssertionError(f"{op} not done after re-sending")
            finally:
                faults.disarm()

        # -- two at once: the outcome is one of their serial orders
        @rule(
            first=st.tuples(st.sampled_from(HOMES), st.sampled_from(IDS), st.sampled_from((None, *CONTACTS)), versions),
            second=st.tuples(
                st.sampled_from(("write", "delete", "record", "contact")),
                st.sampled_from(HOMES),
                st.sampled_from(IDS),
                st.sampled_from((None, *CONTACTS)),
                versions,
            ),
        )
        def concurrently(self, first: tuple[Any, ...], second: tuple[Any, ...]) -> None:
            home, doc_id, contact, version = first
            key = (*home, doc_id)
            doc = self.new_doc(key, contact, None, True)
            doc.digest = self.digest(key, doc, version)
            op, home2, id2, contact2, version2 = second
            key2 = (*home2, id2)
            doc2 = self.new_doc(key2, contact2, None, True)
            doc2.digest = self.digest(key2, doc2, version2)

            def apply_first(model: Model) -> None:
                model.write(key, copy.copy(doc), version)

            def apply_second(model: Model) -> None:
                if op == "write":
                    model.write(key2, copy.copy(doc2), version2)
                elif op == "delete":
                    model.delete_document(key2, version2)
                elif op == "record":
                    model.delete_record(home2[1] if home2[0] == "r" else "r1", version2)
                else:
                    model.erase_contact(contact2 or "c0", version2)

            async def second_op() -> Any:
                if op == "write":
                    return await self.system.write(key2, doc2, version2)
                if op == "delete":
                    return await self.system.delete_document(key2, version2)
                if op == "record":
                    return await self.system.scope_delete("record", home2[1] if home2[0] == "r" else "r1", version2)
                return await self.system.scope_delete("contact", contact2 or "c0", version2)

            async def both() -> None:
                await asyncio.gather(self.system.write(key, doc, version), second_op())

            self.run(both())
            if op == "contact":
                self.erased.add(contact2 or "c0")
            orders = []
            for steps in ((apply_first, apply_second), (apply_second, apply_first)):
                model = copy.deepcopy(self.model)
                for step in steps:
                    step(model)
                orders.append(model)
            observed = self.observe()
            matching = [m for m in orders if self.expected(m) == observed]
            assert matching, (
                f"no serial order explains {observed} (expected one of {[self.expected(m) for m in orders]})"
            )
            self.model = matching[0]

        def teardown(self) -> None:
            """At the end of each history, two more read paths: the email summary over HTTP (for a
            mail from each contact about both records) and the export."""
            if not hasattr(self, "system"):
                return
            import io

            from tools.data import export

            tenant = self.system.tenant
            service.set(AUTH_ALLOWED_TENANTS=f"{tenant}")
            try:
                related = [{"entityId": self.system.record_id(r), "entityType": "opportunity"} for r in RECORDS]
                view = self.model.served()
                for contact in CONTACTS:
                    body = {
                        "resourceData": {"from": self.system.address(contact)},
                        "relatedEntities": related,
                        "top": 25,
                    }
                    answer = service.post(EMAIL, body, token=service.token(tenant=tenant))
                    assert answer.status_code == 200, answer.text
                    got = sorted(item["insight"] for item in answer.json()["value"])
                    seen = {
                        (home, doc_id): text
                        for part in ("r:r1", "r:r2", f"c:{contact}")
                        for home, doc_id, text in view[part]
                    }
                    assert got == sorted(seen.values())
            finally:
                service.set(AUTH_ALLOWED_TENANTS=ALLOWED)
            out = io.StringIO()
            export(out, tenant=tenant, err=io.StringIO())
            lines = [json.loads(line) for line in out.getvalue().splitlines()]
            exported = sorted((d["id"], d["fields"]["insight"], d.get("version")) for d in lines if "fields" in d)
            wanted = sorted((k[2], d.text, d.version) for k, d in self.model.docs.items() if not d.dead)
            assert exported == wanted

        # -- the invariant
        def observe(self) -> Any:
            return (self.run(self.system.served()), self.system.rows())

        @staticmethod
        def expected(model: Model) -> Any:
            return (model.served(), model.rows())

        @invariant()
        def system_is_the_model(self) -> None:
            if not hasattr(self, "system"):
                return
            served, rows = self.observe()
            assert served == self.model.served()
            assert rows == self.model.rows()
            assert self.system.names() == self.model.names()
            # nothing gone is kept anywhere: no text of a document the model says is gone, no
            # address of an erased contact that no live document names
            whole = self.system.everything()
            live = self.model.texts()
            for n in range(1, self.counter + 1):
                text = f"note {n} {self.system.run_id}"
                if text not in live:
                    assert text.lower() not in whole, f"{text!r} is gone but kept"
            for contact in self.erased:
                named = any(
                    not d.dead and (d.contact == contact or (k[0], k[1]) == ("c", contact))
                    for k, d in self.model.docs.items()
                ) or bool(self.model.copies[contact])
                if not named:
                    address = self.system.address(contact).lower()
                    assert address not in whole and address.replace("@", "%40") not in whole, contact

    run_state_machine_as_test(
        WriteRules,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


SETTLE_SECONDS = float(os.environ.get("WRITE_MODEL_SETTLE_SECONDS", "1.0"))
"""The store's settle time here: a write re-reads the watermarks when they are half this old, and
must commit within the other half, which a loaded CI machine must not outrun (30 s in Azure)."""


def test_every_history_ends_as_the_rules_say(service: Service, faulty_table: Faults) -> None:
    service.store.settle_seconds = SETTLE_SECONDS
    run_machine(service, faulty_table)
