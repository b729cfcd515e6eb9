"""Canonical JSON bytes of a standards release, and their strict decoding.

Encoding: UTF-8 JSON, keys sorted, no insignificant whitespace, no floats; dates `YYYY-MM-DD`,
timestamps `YYYY-MM-DDTHH:MM:SSZ`; a code entry is the 8-element array
`[code, name, parent, level, valid_from, valid_to, replacement, stat_item]` (nulls for absent
values). The same release always gives the same bytes, so they can be hashed and signed.

Decoding is strict: a size limit checked before parsing, no duplicate keys, no floats, NaN or
unknown keys, every value of its exact type; a failure raises `StandardsFormatError` whose `path`
points inside the document (`tables.CT_GENDER.entries[3][4]`). Model invariants broken by
well-typed data (an unknown parent, overlapping periods) are reported the same way.

This module does not verify signatures or expiry against a clock (that is the trust layer's job).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

from hierarchy_config.standards.indicators import (
    indicator_from_json,
    indicator_to_json,
    policy_from_json,
    policy_to_json,
)
from hierarchy_config.standards.model import (
    CodeEntry,
    CodeTable,
    FieldDef,
    InvalidStandards,
    ParamValue,
    RecordSchema,
    Release,
    Rule,
    StandardsFormatError,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_RELEASE_BYTES",
    "decode_release",
    "dump_canonical",
    "encode_release",
    "entry_from_json",
    "entry_to_json",
    "load_json",
]

FORMAT = "lsnet-standards-release"
FORMAT_VERSION = 1
MAX_RELEASE_BYTES = 32 * 1024 * 1024  # the default pack is ~1 MB; anything near this is hostile
T = TypeVar("T")


def dump_canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def _ts(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _day(value: dt.date | None) -> str | None:
    return value.isoformat() if value else None


def entry_to_json(e: CodeEntry) -> list[Any]:
    return [
        e.code,
        e.name,
        e.parent,
        e.level,
        _day(e.valid_from),
        _day(e.valid_to),
        e.replacement,
        e.stat_item,
    ]


def _param_json(value: ParamValue) -> Any:
    return list(value) if isinstance(value, tuple) else value


def encode_release(release: Release) -> bytes:
    tables = {
        t.id: {
            "name": t.name,
            "standard": t.standard,
            "extensible": t.extensible,
            "source": t.source,
            "licence": t.licence,
            "entries": [entry_to_json(e) for e in t.entries],
        }
        for t in release.tables.values()
    }
    schemas = {
        s.name: {
            "system": s.system,
            "title": s.title,
            "natural_key": list(s.natural_key),
            "business_date_field": s.business_date_field,
            "date_mode": s.date_mode,
            "fields": [
                {
                    "name": f.name,
                    "type": f.type,
                    "required": f.required,
                    "max_len": f.max_len,
                    "code_table": f.code_table,
                    "title": f.title,
                }
                for f in s.fields
            ],
            "rules": [
                {
                    "id": r.id,
                    "severity": r.severity,
                    "kind": r.kind,
                    "params": {k: _param_json(v) for k, v in r.params.items()},
                }
                for r in s.rules
            ],
        }
        for s in release.schemas.values()
    }
    doc: dict[str, Any] = {}
    if release.indicators:  # absent from releases without statistics: their bytes stay the same
        doc["indicators"] = {k: indicator_to_json(v) for k, v in release.indicators.items()}
    if release.policies or release.default_policy is not None:
        doc["replication"] = {
            "default": None
            if release.default_policy is None
            else policy_to_json(release.default_policy),
            "types": {k: policy_to_json(v) for k, v in release.policies.items()},
        }
    return dump_canonical(
        {
            **doc,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "version": release.version,
            "name": release.name,
            "created": _ts(release.created),
            "expires": _ts(release.expires),
            "note": release.note,
            "tables": tables,
            "schemas": schemas,
        }
    )


# --- strict decoding ---


def fail(path: str, reason: str) -> NoReturn:
    raise StandardsFormatError(path or "$", reason)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            fail(key, "key appears twice")
        out[key] = value
    return out


def _no_float(text: str) -> NoReturn:
    fail("$", f"floating-point number {text[:20]!r} is not allowed")


def _no_constant(text: str) -> NoReturn:
    fail("$", f"{text} is not allowed")


def load_json(data: bytes, max_bytes: int, what: str) -> dict[str, Any]:
    if not isinstance(data, bytes | bytearray):
        fail("$", f"a {what} must be bytes")
    if len(data) > max_bytes:
        fail("$", f"{what} is {len(data)} bytes, more than the limit of {max_bytes}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        fail("$", "not UTF-8")
    try:
        doc = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_no_float,
            parse_constant=_no_constant,
        )
    except json.JSONDecodeError as exc:
        fail("$", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        fail("$", "nested too deeply")
    return obj(doc, "$")


def obj(value: Any, path: str, keys: frozenset[str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        fail(path, "must be an object")
    if keys is not None and set(value) != keys:
        missing, extra = sorted(keys - set(value)), sorted(set(value) - keys)
        fail(path, f"missing keys {missing}" if missing else f"unknown keys {extra}")
    return value


def typed(value: Any, path: str, kind: type[T], *, optional: bool = False) -> Any:
    """`value` if it is a `kind` (or None when optional), else a format error."""
    if value is None and optional:
        return None
    if kind is int and isinstance(value, bool):
        fail(path, "must be an integer")
    if not isinstance(value, kind):
        fail(path, f"must be {'null or ' if optional else ''}{_NAMES.get(kind, kind.__name__)}")
    return value


_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    list: "a list",
}


def day(value: Any, path: str) -> dt.date | None:
    text = typed(value, path, str, optional=True)
    if text is None:
        return None
    try:
        if len(text) != 10:
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        fail(path, "must be a date YYYY-MM-DD")


def timestamp(value: Any, path: str) -> dt.datetime:
    text = typed(value, path, str)
    try:
        if len(text) != 20 or not text.endswith("Z"):
            raise ValueError
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        fail(path, "must be a UTC timestamp YYYY-MM-DDTHH:MM:SSZ")


def str_list(value: Any, path: str) -> tuple[str, ...]:
    items = typed(value, path, list)
    return tuple(typed(item, f"{path}[{n}]", str) for n, item in enumerate(items))


def entry_from_json(value: Any, path: str) -> CodeEntry:
    row = typed(value, path, list)
    if len(row) != 8:
        fail(path, "a code entry must have 8 elements")
    return CodeEntry(
        code=typed(row[0], f"{path}[0]", str),
        name=typed(row[1], f"{path}[1]", str),
        parent=typed(row[2], f"{path}[2]", str, optional=True),
        level=typed(row[3], f"{path}[3]", int),
        valid_from=day(row[4], f"{path}[4]"),
        valid_to=day(row[5], f"{path}[5]"),
        replacement=typed(row[6], f"{path}[6]", str, optional=True),
        stat_item=typed(row[7], f"{path}[7]", str, optional=True),
    )


def guarded(build: Callable[[], T]) -> T:
    """Run a model constructor; its invariant errors become format errors (same path)."""
    try:
        return build()
    except StandardsFormatError:
        raise
    except InvalidStandards as exc:
        fail(exc.path, exc.reason)


_TABLE_KEYS = frozenset({"name", "standard", "extensible", "source", "licence", "entries"})
_SCHEMA_KEYS = frozenset(
    {"system", "title", "natural_key", "business_date_field", "date_mode", "fields", "rules"}
)
_FIELD_KEYS = frozenset({"name", "type", "required", "max_len", "code_table", "title"})
_RULE_KEYS = frozenset({"id", "severity", "kind", "params"})
_RELEASE_KEYS = frozenset(
    {"format", "format_version", "version", "name", "created", "expires", "note"}
    | {"tables", "schemas"}
)
_OPTIONAL_KEYS = frozenset({"indicators", "replication"})


def _table(table_id: str, value: Any, path: str) -> CodeTable:
    doc = obj(value, path, _TABLE_KEYS)
    entries = typed(doc["entries"], f"{path}.entries", list)
    rows = tuple(entry_from_json(e, f"{path}.entries[{n}]") for n, e in enumerate(entries))
    return guarded(
        lambda: CodeTable(
            id=table_id,
            name=typed(doc["name"], f"{path}.name", str),
            standard=typed(doc["standard"], f"{path}.standard", str),
            extensible=typed(doc["extensible"], f"{path}.extensible", bool),
            entries=rows,
            source=typed(doc["source"], f"{path}.source", str),
            licence=typed(doc["licence"], f"{path}.licence", str),
        ),
    )


def _param(value: Any, path: str) -> ParamValue:
    if isinstance(value, list):
        return str_list(value, path)
    if isinstance(value, str | int | bool):
        return value
    fail(path, "must be a string, integer, boolean or list of strings")


def _schema(name: str, value: Any, path: str) -> RecordSchema:
    doc = obj(value, path, _SCHEMA_KEYS)
    fields = []
    for n, item in enumerate(typed(doc["fields"], f"{path}.fields", list)):
        where = f"{path}.fields[{n}]"
        f = obj(item, where, _FIELD_KEYS)
        fields.append(
            FieldDef(
                name=typed(f["name"], f"{where}.name", str),
                type=typed(f["type"], f"{where}.type", str),
                required=typed(f["required"], f"{where}.required", bool),
                max_len=typed(f["max_len"], f"{where}.max_len", int, optional=True),
                code_table=typed(f["code_table"], f"{where}.code_table", str, optional=True),
                title=typed(f["title"], f"{where}.title", str),
            )
        )
    rules = []
    for n, item in enumerate(typed(doc["rules"], f"{path}.rules", list)):
        where = f"{path}.rules[{n}]"
        r = obj(item, where, _RULE_KEYS)
        params = obj(r["params"], f"{where}.params")
        rules.append(
            Rule(
                id=typed(r["id"], f"{where}.id", str),
                severity=typed(r["severity"], f"{where}.severity", str),
                kind=typed(r["kind"], f"{where}.kind", str),
                params={k: _param(v, f"{where}.params.{k}") for k, v in params.items()},
            )
        )
    return guarded(
        lambda: RecordSchema(
            name=name,
            system=typed(doc["system"], f"{path}.system", str),
            title=typed(doc["title"], f"{path}.title", str),
            fields=tuple(fields),
            natural_key=str_list(doc["natural_key"], f"{path}.natural_key"),
            business_date_field=typed(
                doc["business_date_field"], f"{path}.business_date_field", str, optional=True
            ),
            rules=tuple(rules),
            date_mode=typed(doc["date_mode"], f"{path}.date_mode", str),
        ),
    )


def decode_release(data: bytes, max_bytes: int = MAX_RELEASE_BYTES) -> Release:
    doc = obj(load_json(data, max_bytes, "release"), "$")
    present = set(doc) - (_OPTIONAL_KEYS & set(doc))
    obj({k: doc[k] for k in present}, "$", _RELEASE_KEYS)
    if doc["format"] != FORMAT:
        fail("format", f"must be {FORMAT!r}")
    if typed(doc["format_version"], "format_version", int) != FORMAT_VERSION:
        fail("format_version", f"must be {FORMAT_VERSION}")
    tables = {
        key: _table(key, value, f"tables.{key}")
        for key, value in obj(doc["tables"], "tables").items()
    }
    schemas = {
        key: _schema(key, value, f"schemas.{key}")
        for key, value in obj(doc["schemas"], "schemas").items()
    }
    indicators = {
        key: guarded(functools.partial(indicator_from_json, key, value, f"indicators.{key}"))
        for key, value in obj(doc.get("indicators", {}), "indicators").items()
    }
    replication = obj(doc.get("replication", {}), "replication")
    obj(replication, "replication", frozenset({"default", "types"}) if replication else None)
    default = replication.get("default")
    default_policy = (
        None
        if default is None
        else guarded(lambda: policy_from_json(default, "replication.default"))
    )
    policies = {
        key: guarded(functools.partial(policy_from_json, value, f"replication.types.{key}"))
        for key, value in obj(replication.get("types", {}), "replication.types").items()
    }
    return guarded(
        lambda: Release(
            indicators=indicators,
            policies=policies,
            default_policy=default_policy,
            version=typed(doc["version"], "version", int),
            name=typed(doc["name"], "name", str),
            created=timestamp(doc["created"], "created"),
            expires=timestamp(doc["expires"], "expires"),
            note=typed(doc["note"], "note", str),
            tables=tables,
            schemas=schemas,
        ),
    )
