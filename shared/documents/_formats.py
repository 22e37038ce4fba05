"""The file formats documents arrive in: JSONL (one document a line) and CSV (a header row names
the columns). Every line is validated by the one set of rules (`validate_document`); errors name
the file's line, the document's id and the field."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.documents._model import AnyDocument, DocumentError, validate_document

__all__ = ["ParsedLine", "parse_csv", "parse_file", "parse_jsonl"]


@dataclass(frozen=True)
class ParsedLine:
    line: int
    document: AnyDocument | None
    errors: list[DocumentError]
    raw_id: str | None = None


TOP_LEVEL_COLUMNS = (
    "tenantId",
    "extensionPoint",
    "id",
    "recordType",
    "recordId",
    "recordName",
    "recordUrl",
    "contactEmail",
    "crmType",
    "crmOrgUrl",
    "dateTime",
    "expiresAt",
    "language",
    "prompts",
    "version",
)
JSON_VALUED = ("additionalProperties",)


def parse_csv(lines: Any) -> Iterator[ParsedLine]:
    """Documents from CSV, one a row, with the header naming columns:

    - top-level fields by name (`tenantId`, `recordId`, `dateTime`, ...; `prompts` as a JSON array);
    - `fields.<name>` for the item's fields, `localized.<lang>.<name>` for translations;
    - maps (`fields.additionalProperties`, `localized.fr.additionalProperties`) as JSON objects,
      so their order survives; an empty cell is an absent value.

    Line numbers are those of the file (the header is line 1).
    """
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        return
    unknown = [c for c in header if c not in TOP_LEVEL_COLUMNS and not c.startswith(("fields.", "localized."))]
    if unknown:
        yield ParsedLine(1, None, [DocumentError("header", f"unknown column(s) {', '.join(unknown)}")])
        return
    previous_end = reader.line_num
    for row in reader:
        number = previous_end + 1
        previous_end = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        data: dict[str, Any] = {}
        problems: list[DocumentError] = []
        for column, cell in zip(header, row, strict=False):
            if cell == "":
                continue
            value: Any = cell
            name = column.rsplit(".", 1)[-1]
            if column == "version":
                try:
                    value = int(cell)
                except ValueError:
                    problems.append(DocumentError(column, "must be a whole number"))
                    continue
            elif column == "prompts" or name in JSON_VALUED:
                try:
                    value = json.loads(cell)
                except json.JSONDecodeError:
                    problems.append(DocumentError(column, "must be JSON (a map as an object, prompts as an array)"))
                    continue
            target = data
            parts = column.split(".")
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = value
        raw_id = data.get("id") if isinstance(data.get("id"), str) else None
        if problems:
            yield ParsedLine(number, None, problems, raw_id)
            continue
        if "extensionPoint" in data or "recordName" not in data:
            data.setdefault("fields", {})
        document, errors = validate_document(data)
        yield ParsedLine(number, document, errors, raw_id)


def parse_file(path: Any) -> Iterator[ParsedLine]:
    """JSONL or CSV, by the file's suffix."""
    path = Path(path)
    with path.open(encoding="utf-8-sig", newline="" if path.suffix.lower() == ".csv" else None) as lines:
        yield from (parse_csv(lines) if path.suffix.lower() == ".csv" else parse_jsonl(lines))


def parse_jsonl(lines: Any) -> Iterator[ParsedLine]:
    """Yield a ParsedLine for each non-blank line of a JSONL text stream (1-based numbers)."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            yield ParsedLine(number, None, [DocumentError("line", f"not valid JSON ({exc.msg})")])
            continue
        document, errors = validate_document(data)
        raw_id = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None
        yield ParsedLine(number, document, errors, raw_id)
