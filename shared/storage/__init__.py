"""The insights table, behind one door: what the triggers and tools call, and the only code that
touches the table client (`_table.Table`).

    reads        InsightsStore (a partition's documents, newest first, by RowKey range),
                 get_store / reset_store (one store per event loop), Scope, WindowBounds
    admission    Admission (the store's `gate`: units of work per class, refused at once when
                 they could not finish in their budget), work_kind
    writes       write_documents / write_names (batches: versions, index entities, transactions,
                 copies; the expiry index; the name index after each batch), WriteReport, Outcome
    deletes      delete_documents (a document, a record's, a contact's, a tenant's), purge_expired,
                 collect_tombstones
    names        find_records, record_entry, claims, refold, words_of, fold
    maintenance  migrate_first_form, document rows for export and statistics
    errors       shared.storage.errors: the tree every storage failure travels in
    keys         shared.storage.keys: the documented key layout (no I/O)

Writes accept any object with a document's fields (`Document`) or a record name's (`NameLine`).
"""

import importlib
from typing import TYPE_CHECKING, Any

from shared.storage import errors, keys, limits
from shared.storage._entities import (
    SCHEMA_VERSION,
    StoredDocument,
    as_int,
    data_entity,
    digest_of,
    document_of,
    index_entity,
    is_copy,
    parse_stored_time,
)
from shared.storage._gate import Admission, Kind, work_kind
from shared.storage._store import InsightsStore, Scope, get_store, reset_store
from shared.storage._table import build_table_client
from shared.storage.keys import DocKey, RecordRef, WindowBounds, partition_key

if TYPE_CHECKING:
    from shared.storage._batches import rounds_of, write, write_documents, write_names
    from shared.storage._collect import collect_tombstones
    from shared.storage._deletes import delete, delete_documents, delete_record, documents_in, purge_expired
    from shared.storage._migrate import Migration, migrate_first_form
    from shared.storage._names import (
        FOLD_VERSION,
        MAX_QUERY_WORDS,
        Found,
        claims,
        find_records,
        fold,
        names_partition,
        record_entry,
        refold,
        words_of,
    )
    from shared.storage._protocols import Document, NameLine
    from shared.storage._scopes import BadContinuation, erase_contact, offboard_tenant
    from shared.storage._writer import Outcome, WriteReport

_WRITE_SIDE = {
    "shared.storage._batches": ("rounds_of", "write", "write_documents", "write_names"),
    "shared.storage._collect": ("collect_tombstones",),
    "shared.storage._deletes": ("delete", "delete_documents", "delete_record", "documents_in", "purge_expired"),
    "shared.storage._scopes": ("BadContinuation", "erase_contact", "offboard_tenant"),
    "shared.storage._migrate": ("Migration", "migrate_first_form"),
    "shared.storage._names": (
        *("FOLD_VERSION", "MAX_QUERY_WORDS", "Found", "claims", "find_records", "fold", "names_partition"),
        *("record_entry", "refold", "words_of"),
    ),
    "shared.storage._writer": ("Outcome", "WriteReport"),
    "shared.storage._protocols": ("Document", "NameLine"),
}
"""Modules no reader's request needs (the write path, the name index): loaded on first use."""


def __getattr__(name: str) -> Any:
    for module, names in _WRITE_SIDE.items():
        if name in names:
            value = getattr(importlib.import_module(module), name)  # the write side: not a reader's start-up cost
            globals()[name] = value
            return value
    raise AttributeError(f"module 'shared.storage' has no attribute {name!r}")


__all__ = [
    "FOLD_VERSION",
    "MAX_QUERY_WORDS",
    "SCHEMA_VERSION",
    "Admission",
    "BadContinuation",
    "DocKey",
    "Document",
    "Found",
    "InsightsStore",
    "Kind",
    "Migration",
    "NameLine",
    "Outcome",
    "RecordRef",
    "Scope",
    "StoredDocument",
    "WindowBounds",
    "WriteReport",
    "as_int",
    "build_table_client",
    "claims",
    "collect_tombstones",
    "data_entity",
    "delete",
    "delete_documents",
    "delete_record",
    "digest_of",
    "document_of",
    "documents_in",
    "erase_contact",
    "errors",
    "find_records",
    "fold",
    "get_store",
    "index_entity",
    "is_copy",
    "keys",
    "limits",
    "migrate_first_form",
    "names_partition",
    "offboard_tenant",
    "parse_stored_time",
    "partition_key",
    "purge_expired",
    "record_entry",
    "refold",
    "reset_store",
    "rounds_of",
    "words_of",
    "work_kind",
    "write",
    "write_documents",
    "write_names",
]
