"""Streaming readers for `lsnet records import`: JSON Lines and CSV files of business records.

`read_jsonl` and `read_csv` yield `(row, obj)` pairs one row at a time, where `obj` is either a
dict ready for `node.records.validate_record` or a `RowError` saying why the row could not even be
read (not JSON, not an object, not UTF-8, wrong number of cells). A bad row never stops the file.
`count_rows` counts lines cheaply so a progress bar can show a total.

Files are UTF-8, with or without a byte-order mark. Row numbers are what a clerk can find: in a
JSONL file the line number (blank lines are skipped but still counted); in a CSV file the data
row after the header, starting at 1 (blank rows are skipped but still counted).

This module does not validate records, does not touch a database, and does not guess encodings
(GBK files must be converted first). A CSV file whose header cannot be used raises `CsvHeaderError`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

__all__ = [
    "MAX_LINE_BYTES",
    "CsvHeaderError",
    "RowError",
    "RowResult",
    "count_rows",
    "read_csv",
    "read_jsonl",
]

MAX_LINE_BYTES = 1 << 20  # one JSONL record may not exceed 1 MiB
_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20

Path = str | os.PathLike[str]


@dataclass(frozen=True)
class RowError:
    """A row that could not be read; `field` is "" when the problem is the row as a whole."""

    row: int
    field: str
    reason: str


RowResult = tuple[int, dict[str, Any] | RowError]


class CsvHeaderError(ValueError):
    """The CSV header row is missing, unreadable or names a column twice."""


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    return "a string" if isinstance(value, str) else "null"


def _lines(f: BinaryIO) -> Iterator[bytes | None]:
    """Raw lines; None for a line longer than MAX_LINE_BYTES (which is skipped, not loaded)."""
    while line := f.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := f.readline(_CHUNK)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield line


def read_jsonl(path: Path) -> Iterator[RowResult]:
    """Yield (line number, object or RowError) for every non-blank line of a JSON Lines file."""
    with open(path, "rb") as f:
        for row, raw in enumerate(_lines(f), start=1):
            if raw is None:
                yield row, RowError(row, "", f"line is longer than {MAX_LINE_BYTES} bytes")
                continue
            if row == 1:
                raw = raw.removeprefix(_BOM)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield (
                    row,
                    RowError(
                        row,
                        "",
                        f"line is not valid UTF-8 (bad byte at position "
                        f"{exc.start + 1}); save the file as UTF-8",
                    ),
                )
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield (
                    row,
                    RowError(
                        row, "", f"line is not a JSON object: {exc.msg} at column {exc.colno}"
                    ),
                )
                continue
            if not isinstance(obj, dict):
                yield row, RowError(row, "", f"line is not a JSON object: it is {_json_kind(obj)}")
                continue
            yield row, obj


def _bad_text(cells: list[str]) -> int | None:
    """Index of the first cell holding undecodable bytes (smuggled in as lone surrogates)."""
    for index, cell in enumerate(cells):
        if any("\udc80" <= ch <= "\udcff" for ch in cell):
            return index
    return None


def _header(cells: list[str] | None) -> list[str]:
    if cells is None:
        raise CsvHeaderError("the file is empty; the first row must name the fields")
    if _bad_text(cells) is not None:
        raise CsvHeaderError("the header row is not valid UTF-8; save the file as UTF-8")
    names = [cell.strip() for cell in cells]
    if "" in names:
        raise CsvHeaderError(f"header column {names.index('') + 1} has no field name")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise CsvHeaderError(f"the header names {', '.join(duplicates)} more than once")
    return names


def read_csv(path: Path, record_type: str) -> Iterator[RowResult]:
    """Yield (data row number, object or RowError) for a CSV file of `record_type` records.

    The header row gives the field names; empty cells are left out of the object; "type" is set
    to `record_type` (a "type" column, if present, must agree with it).
    """
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        names = _header(next(reader, None))
        row = 0
        while True:
            row += 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield row, RowError(row, "", f"row cannot be read as CSV: {exc}")
                continue
            if not any(cell.strip() for cell in cells):
                continue
            bad = _bad_text(cells)
            if bad is not None:
                field = names[bad] if bad < len(names) else ""
                yield row, RowError(row, field, "is not valid UTF-8; save the file as UTF-8")
                continue
            if len(cells) != len(names):
                yield (
                    row,
                    RowError(
                        row,
                        "",
                        f"row has {len(cells)} cells but the header has {len(names)} columns",
                    ),
                )
                continue
            obj: dict[str, Any] = {n: c for n, c in zip(names, cells, strict=True) if c.strip()}
            given = obj.get("type", record_type).strip()
            if given != record_type:
                yield (
                    row,
                    RowError(
                        row,
                        "type",
                        f"says {given!r} but this file is being imported as {record_type!r}",
                    ),
                )
                continue
            obj["type"] = record_type
            yield row, obj


def count_rows(path: Path) -> int:
    """Number of lines in the file (a final line without a newline counts); blank lines count."""
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")
