"""Insight documents: the one format the loader and the ingestion API share, its one set of rules
(`validate_document`, which holds documents to the table's limits too) and the files it arrives in.
The storage layer writes any object with a document's fields (`shared.storage.Document`)."""

from shared.documents._formats import ParsedLine, parse_csv, parse_file, parse_jsonl
from shared.documents._model import (
    MAX_VERSION,
    AnyDocument,
    DocumentError,
    InsightDocument,
    RecordName,
    validate_document,
)

__all__ = [
    "MAX_VERSION",
    "AnyDocument",
    "DocumentError",
    "InsightDocument",
    "ParsedLine",
    "RecordName",
    "parse_csv",
    "parse_file",
    "parse_jsonl",
    "validate_document",
]
