"""Build a standards release from a folder of CSV and TOML files (`lsnet standards build DIR`).

The folder is shaped like the shipped pack (`hierarchy_config/standards/pack/`):

* `tables.toml`: one TOML table per code table, keyed by its id, with `name`, `standard`,
  `extensible`, `source` and `licence`;
* `tables/CT_*.csv`: one file per listed table, header exactly
  `code,name,parent,level,valid_from,valid_to,replacement,stat_item`;
* `schemas/*.toml`: one record schema per file (`name`, `system`, `title`, `natural_key`,
  optional `business_date_field` and `date_mode`, `fields = [{...}]`, `rules = [{...}]`).

A malformed CSV raises `BuildError(file, row, column, reason)` with the row number as a
spreadsheet shows it (the header is row 1); a bad TOML file raises it with row 0 and, as
`column`, the path of the bad field (`fields.gender.code_table`).

This module reads files and nothing else: no network, no clock (created/expires are passed
in), no signing. `diff` is re-exported from `hierarchy_config.standards.diff`.
"""

from __future__ import annotations

import csv
import datetime as dt
import tomllib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from hierarchy_config.standards.build_stats import StatsFileError, error_file, read_stats
from hierarchy_config.standards.diff import ReleaseDiff, diff
from hierarchy_config.standards.model import (
    CodeEntry,
    CodeTable,
    FieldDef,
    InvalidStandards,
    ParamValue,
    RecordSchema,
    Release,
    Rule,
    StandardsError,
    entry_problem,
)

__all__ = [
    "CSV_HEADER",
    "PACK_DIR",
    "BuildError",
    "ReleaseDiff",
    "build_release",
    "default_release",
    "diff",
    "read_table",
]

CSV_HEADER = (
    "code",
    "name",
    "parent",
    "level",
    "valid_from",
    "valid_to",
    "replacement",
    "stat_item",
)
PACK_DIR = Path(__file__).parent / "pack"
PACK_CREATED = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


class BuildError(StandardsError, ValueError):
    """A pack file is malformed: `file`, `row` (1 = CSV header, 0 = not row-based), `column`."""

    def __init__(self, file: str, row: int, column: str, reason: str) -> None:
        where = f"{file}, row {row}" if row else file
        super().__init__(f"{where}{f', column {column}' if column else ''}: {reason}")
        self.file = file
        self.row = row
        self.column = column
        self.reason = reason

    def __reduce__(self) -> tuple[type[BuildError], tuple[str, int, str, str]]:
        return (type(self), (self.file, self.row, self.column, self.reason))


# --- code tables ---


def _date(text: str, file: str, row: int, column: str) -> dt.date | None:
    if not text:
        return None
    try:
        if len(text) != 10:
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        raise BuildError(file, row, column, "must be a date YYYY-MM-DD or empty") from None


def read_table(path: Path, meta: Mapping[str, Any], table_id: str) -> CodeTable:
    """One CSV file as a code table; `meta` is its entry of tables.toml."""
    file = path.name
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise BuildError(file, 1, "", "the file is empty; it needs the header row")
        header = [h.strip() for h in header]
        for name in header:
            if name not in CSV_HEADER:
                raise BuildError(file, 1, name, "unknown column; expected " + ",".join(CSV_HEADER))
        if tuple(header) != CSV_HEADER:
            missing = [c for c in CSV_HEADER if c not in header]
            reason = f"missing column {missing[0]}" if missing else "columns are out of order"
            raise BuildError(
                file,
                1,
                missing[0] if missing else "",
                reason + "; expected " + ",".join(CSV_HEADER),
            )
        entries: list[CodeEntry] = []
        rows: list[int] = []
        seen: dict[str, list[tuple[int, CodeEntry]]] = {}
        for cells in reader:
            row = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(CSV_HEADER):
                raise BuildError(
                    file, row, "", f"has {len(cells)} cells, expected {len(CSV_HEADER)}"
                )
            code, name, parent, level, start, end, replacement, stat = (c.strip() for c in cells)
            if not code:
                raise BuildError(file, row, "code", "is empty")
            if not name:
                raise BuildError(file, row, "name", "is empty")
            if not level.isdigit() or not 1 <= int(level) <= 9:
                raise BuildError(file, row, "level", "must be a whole number 1 to 9")
            entry = CodeEntry(
                code=code,
                name=name,
                parent=parent or None,
                level=int(level),
                valid_from=_date(start, file, row, "valid_from"),
                valid_to=_date(end, file, row, "valid_to"),
                replacement=replacement or None,
                stat_item=stat or None,
            )
            if entry.valid_from and entry.valid_to and entry.valid_to < entry.valid_from:
                raise BuildError(file, row, "valid_to", "is before valid_from")
            problem = entry_problem(entry)
            if problem:
                raise BuildError(file, row, "code", problem)
            for other_row, other in seen.get(code, ()):
                if other.overlaps(entry):
                    raise BuildError(
                        file,
                        row,
                        "code",
                        f"duplicate code {code!r} (also row {other_row}) with overlapping validity",
                    )
            seen.setdefault(code, []).append((row, entry))
            entries.append(entry)
            rows.append(row)
    for row, entry in zip(rows, entries, strict=True):
        if entry.parent is not None and entry.parent not in seen:
            raise BuildError(file, row, "parent", f"{entry.parent!r} is not a code of this table")
        if entry.replacement is not None and entry.replacement not in seen:
            raise BuildError(
                file, row, "replacement", f"{entry.replacement!r} is not a code of this table"
            )
    try:
        return CodeTable(
            id=table_id,
            name=_meta_str(meta, "name", table_id),
            standard=_meta_str(meta, "standard", table_id),
            extensible=_meta_bool(meta, "extensible", table_id),
            entries=tuple(entries),
            source=_meta_str(meta, "source", table_id),
            licence=_meta_str(meta, "licence", table_id),
        )
    except InvalidStandards as exc:
        raise BuildError(file, 0, "", exc.reason) from None


_TABLE_META = frozenset({"name", "standard", "extensible", "source", "licence"})


def _meta_str(meta: Mapping[str, Any], key: str, table_id: str) -> str:
    value = meta.get(key)
    if not isinstance(value, str) or (key in ("name", "standard") and not value.strip()):
        raise BuildError("tables.toml", 0, f"{table_id}.{key}", "must be a non-empty string")
    return value


def _meta_bool(meta: Mapping[str, Any], key: str, table_id: str) -> bool:
    value = meta.get(key)
    if not isinstance(value, bool):
        raise BuildError("tables.toml", 0, f"{table_id}.{key}", "must be true or false")
    return value


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise BuildError(path.name, 0, "", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(path.name, 0, "", f"not valid TOML: {exc}") from None


def _tables(folder: Path) -> dict[str, CodeTable]:
    meta = _load_toml(folder / "tables.toml")
    csv_dir = folder / "tables"
    listed = set(meta)
    on_disk = {p.stem for p in csv_dir.glob("*.csv")} if csv_dir.is_dir() else set()
    for stray in sorted(on_disk - listed):
        raise BuildError(f"{stray}.csv", 0, "", "the table is not listed in tables.toml")
    tables = {}
    for table_id in sorted(listed):
        entry = meta[table_id]
        if not isinstance(entry, dict):
            raise BuildError("tables.toml", 0, table_id, "must be a TOML table")
        unknown = sorted(set(entry) - _TABLE_META)
        if unknown:
            raise BuildError("tables.toml", 0, f"{table_id}.{unknown[0]}", "unknown key")
        if table_id not in on_disk:
            raise BuildError(f"{table_id}.csv", 0, "", "listed in tables.toml but missing")
        tables[table_id] = read_table(csv_dir / f"{table_id}.csv", entry, table_id)
    return tables


# --- record schemas ---

_SCHEMA_KEYS = frozenset(
    {"name", "system", "title", "natural_key", "business_date_field", "date_mode"}
    | {"fields", "rules"}
)
_FIELD_KEYS = frozenset({"name", "type", "required", "max_len", "code_table", "title"})
_RULE_KEYS = frozenset({"id", "severity", "kind", "params"})


def _expect(value: Any, kind: type | tuple[type, ...], file: str, where: str, what: str) -> Any:
    if (isinstance(value, bool) and kind is int) or not isinstance(value, kind):
        raise BuildError(file, 0, where, f"must be {what}")
    return value


def _param(value: Any, file: str, where: str) -> ParamValue:
    if isinstance(value, list):
        return tuple(_expect(v, str, file, where, "a list of strings") for v in value)
    return _expect(value, (str, int, bool), file, where, "a string, integer, boolean or list")  # type: ignore[no-any-return]


def _schema(path: Path) -> RecordSchema:
    file = f"schemas/{path.name}"
    doc = _load_toml(path)
    for key in sorted(set(doc) - _SCHEMA_KEYS):
        raise BuildError(file, 0, key, "unknown key")
    fields = []
    for n, item in enumerate(_expect(doc.get("fields", []), list, file, "fields", "a list")):
        name = item.get("name") if isinstance(item, dict) else None
        where = f"fields.{name}" if isinstance(name, str) else f"fields[{n}]"
        _expect(item, dict, file, where, "a table")
        for key in sorted(set(item) - _FIELD_KEYS):
            raise BuildError(file, 0, f"{where}.{key}", "unknown key")
        fields.append(
            FieldDef(
                name=_expect(name, str, file, f"{where}.name", "a string"),
                type=_expect(item.get("type"), str, file, f"{where}.type", "a string"),
                required=_expect(item.get("required", False), bool, file, where, "true or false"),
                max_len=None
                if item.get("max_len") is None
                else _expect(item["max_len"], int, file, f"{where}.max_len", "an integer"),
                code_table=None
                if item.get("code_table") is None
                else _expect(item["code_table"], str, file, f"{where}.code_table", "a string"),
                title=_expect(item.get("title", ""), str, file, f"{where}.title", "a string"),
            )
        )
    rules = []
    for n, item in enumerate(_expect(doc.get("rules", []), list, file, "rules", "a list")):
        where = f"rules[{n}]"
        _expect(item, dict, file, where, "a table")
        for key in sorted(set(item) - _RULE_KEYS):
            raise BuildError(file, 0, f"{where}.{key}", "unknown key")
        params = _expect(item.get("params", {}), dict, file, f"{where}.params", "a table")
        rules.append(
            Rule(
                id=_expect(item.get("id"), str, file, f"{where}.id", "a string"),
                severity=_expect(item.get("severity"), str, file, f"{where}.severity", "a string"),
                kind=_expect(item.get("kind"), str, file, f"{where}.kind", "a string"),
                params={k: _param(v, file, f"{where}.params.{k}") for k, v in params.items()},
            )
        )
    natural_key = _expect(doc.get("natural_key"), list, file, "natural_key", "a list of fields")
    date_field = doc.get("business_date_field")
    try:
        return RecordSchema(
            name=_expect(doc.get("name"), str, file, "name", "a string"),
            system=_expect(doc.get("system"), str, file, "system", "a string"),
            title=_expect(doc.get("title", ""), str, file, "title", "a string"),
            fields=tuple(fields),
            natural_key=tuple(
                _expect(k, str, file, "natural_key", "field names") for k in natural_key
            ),
            business_date_field=None
            if date_field is None
            else _expect(date_field, str, file, "business_date_field", "a string"),
            rules=tuple(rules),
            date_mode=_expect(doc.get("date_mode", "on"), str, file, "date_mode", "on or since"),
        )
    except InvalidStandards as exc:
        raise BuildError(file, 0, exc.path.split(".", 2)[-1], exc.reason) from None


def _schemas(folder: Path) -> dict[str, RecordSchema]:
    schemas: dict[str, RecordSchema] = {}
    for path in sorted((folder / "schemas").glob("*.toml")):
        schema = _schema(path)
        if schema.name in schemas:
            raise BuildError(f"schemas/{path.name}", 0, "name", f"{schema.name!r} is defined twice")
        schemas[schema.name] = schema
    return schemas


def build_release(
    folder: Path,
    *,
    version: int,
    expires: dt.datetime,
    note: str,
    created: dt.datetime,
    name: str = "",
) -> Release:
    """A release from `folder`; raise BuildError naming the first bad file, row and column."""
    tables = _tables(folder)
    schemas = _schemas(folder)
    try:
        indicators, policies, default_policy = read_stats(folder)
    except StatsFileError as exc:
        raise BuildError(exc.file, 0, exc.column, exc.reason) from None
    try:
        return Release(
            indicators=indicators,
            policies=policies,
            default_policy=default_policy,
            version=version,
            name=name or f"standards release {version}",
            created=created,
            expires=expires,
            note=note,
            tables=tables,
            schemas=schemas,
        )
    except InvalidStandards as exc:
        parts = exc.path.split(".")
        stats_file = error_file(exc.path)
        if stats_file is not None:
            raise BuildError(stats_file, 0, ".".join(parts[2:]), exc.reason) from None
        if parts[0] == "schemas" and len(parts) > 1:
            file = next(
                (
                    f"schemas/{p.name}"
                    for p in sorted((folder / "schemas").glob("*.toml"))
                    if _load_toml(p).get("name") == parts[1]
                ),
                "schemas",
            )
            raise BuildError(file, 0, ".".join(parts[2:]), exc.reason) from None
        raise BuildError(folder.name, 0, exc.path, exc.reason) from None


@lru_cache(maxsize=4)
def default_release(
    version: int = 1,
    *,
    created: dt.datetime = PACK_CREATED,
    expires: dt.datetime | None = None,
    note: str = "default standards pack",
) -> Release:
    """The release built from the shipped pack (deterministic: fixed created/expires defaults)."""
    return build_release(
        PACK_DIR,
        version=version,
        created=created,
        expires=expires or created + dt.timedelta(days=365),
        note=note,
        name="lsnet default standards pack",
    )
