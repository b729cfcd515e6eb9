"""Provincial extensions: local codes a province adds to extensible ministry tables.

An `Extension` is owned by one province (its 6-digit `XX0000` id) and lists new entries per
table. `EffectiveStandards(release, extensions)` is the view a node validates against: the
release's tables with the extensions' codes merged in. Rules, each refused with `ExtensionError`:

* the table must exist in the release and be marked `extensible`;
* every code must carry the province's reserved prefix: `X` + the province's two digits + 1 to 3
  further capitals or digits, e.g. `X3301` for 浙江 (330000). Ministry codes never start with
  `X` followed by two digits in an extensible table, so the namespaces cannot meet;
* a code must not exist in the ministry table at any time (no change, no shadowing, no reuse of a
  retired code), and not twice in the extension with overlapping validity;
* a parent or replacement must be a code of the merged table.

This module does not verify the province's signature or its delegation (the trust layer does),
and does not decide which extensions a node should load (its own province's only).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from hierarchy_config.standards.codec import (
    dump_canonical,
    entry_from_json,
    entry_to_json,
    fail,
    load_json,
    obj,
    typed,
)
from hierarchy_config.standards.model import (
    CodeEntry,
    CodeTable,
    InvalidStandards,
    RecordSchema,
    Release,
    StandardsError,
)

__all__ = [
    "EXTENSION_FORMAT",
    "MAX_EXTENSION_BYTES",
    "EffectiveStandards",
    "Extension",
    "ExtensionError",
    "reserved_prefix",
]

EXTENSION_FORMAT = "lsnet-standards-extension"
MAX_EXTENSION_BYTES = 4 * 1024 * 1024
_PROVINCE = re.compile(r"[1-9]\d0000")
_KEYS = frozenset({"format", "province", "version", "release_version", "note", "tables"})


class ExtensionError(StandardsError, ValueError):
    """An extension was refused: `table` and `code` say where ("*" for the whole extension)."""

    def __init__(self, table: str, code: str, reason: str) -> None:
        super().__init__(f"{table} {code}: {reason}")
        self.table = table
        self.code = code
        self.reason = reason

    def __reduce__(self) -> tuple[type[ExtensionError], tuple[str, str, str]]:
        return (type(self), (self.table, self.code, self.reason))


def reserved_prefix(province: str) -> str:
    """The code prefix reserved for a province's local codes: `X` + its two-digit prefix."""
    return "X" + province[:2]


@dataclass(frozen=True, slots=True)
class Extension:
    """A province's local codes, per table; `release_version` is the release it was made for."""

    province: str
    version: int
    release_version: int
    tables: Mapping[str, tuple[CodeEntry, ...]]
    note: str = ""

    def __post_init__(self) -> None:
        if not _PROVINCE.fullmatch(self.province):
            raise InvalidStandards("province", "must be a 6-digit province code like 330000")
        if self.version < 1 or self.release_version < 1:
            raise InvalidStandards("version", "versions must be positive integers")
        frozen = {k: tuple(v) for k, v in sorted(self.tables.items())}
        object.__setattr__(self, "tables", MappingProxyType(frozen))

    @property
    def id(self) -> str:
        return f"{self.province}.{self.version}"

    def to_bytes(self) -> bytes:
        return dump_canonical(
            {
                "format": EXTENSION_FORMAT,
                "province": self.province,
                "version": self.version,
                "release_version": self.release_version,
                "note": self.note,
                "tables": {
                    k: [entry_to_json(e) for e in entries] for k, entries in self.tables.items()
                },
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, max_bytes: int = MAX_EXTENSION_BYTES) -> Extension:
        doc = obj(load_json(data, max_bytes, "extension"), "$", _KEYS)
        if doc["format"] != EXTENSION_FORMAT:
            fail("format", f"must be {EXTENSION_FORMAT!r}")
        tables: dict[str, tuple[CodeEntry, ...]] = {}
        for key, rows in obj(doc["tables"], "tables").items():
            items: list[Any] = typed(rows, f"tables.{key}", list)
            tables[key] = tuple(
                entry_from_json(e, f"tables.{key}[{n}]") for n, e in enumerate(items)
            )
        try:
            return cls(
                province=typed(doc["province"], "province", str),
                version=typed(doc["version"], "version", int),
                release_version=typed(doc["release_version"], "release_version", int),
                tables=tables,
                note=typed(doc["note"], "note", str),
            )
        except InvalidStandards as exc:
            fail(exc.path, exc.reason)


@dataclass(frozen=True, slots=True)
class EffectiveStandards:
    """A release with provincial extensions merged in; what a node validates against."""

    release: Release
    extensions: tuple[Extension, ...] = ()
    _tables: Mapping[str, CodeTable] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(self.extensions))
        object.__setattr__(self, "_tables", MappingProxyType(_merge(self.release, self.extensions)))

    @property
    def version(self) -> int:
        return self.release.version

    @property
    def id(self) -> str:
        """Release id plus each extension's `province.version`, e.g. `3+330000.2`."""
        return "+".join([self.release.id, *(e.id for e in self.extensions)])

    @property
    def tables(self) -> Mapping[str, CodeTable]:
        return self._tables

    @property
    def schemas(self) -> Mapping[str, RecordSchema]:
        return self.release.schemas

    def table(self, table_id: str) -> CodeTable | None:
        return self._tables.get(table_id)


def _merge(release: Release, extensions: Iterable[Extension]) -> dict[str, CodeTable]:
    tables = dict(release.tables)
    added: dict[str, list[CodeEntry]] = {}
    provinces: set[str] = set()
    for ext in extensions:
        if ext.province in provinces:
            raise ExtensionError("*", "*", f"two extensions of province {ext.province}")
        provinces.add(ext.province)
        prefix = reserved_prefix(ext.province)
        pattern = re.compile(re.escape(prefix) + r"[0-9A-Z]{1,3}")
        for table_id, entries in ext.tables.items():
            base = release.tables.get(table_id)
            if base is None:
                raise ExtensionError(table_id, "*", "no such table in the release")
            if not base.extensible:
                raise ExtensionError(table_id, "*", "the table is not open to local codes")
            for entry in entries:
                if base.versions(entry.code):
                    raise ExtensionError(
                        table_id, entry.code, "is a ministry code; an extension cannot change it"
                    )
                if not pattern.fullmatch(entry.code):
                    raise ExtensionError(
                        table_id,
                        entry.code,
                        f"local codes of {ext.province} must be {prefix} followed by 1 to 3 "
                        "capitals or digits",
                    )
                added.setdefault(table_id, []).append(entry)
    for table_id, extra in added.items():
        base = release.tables[table_id]
        try:
            tables[table_id] = CodeTable(
                id=base.id,
                name=base.name,
                standard=base.standard,
                extensible=True,
                entries=base.entries + tuple(extra),
                source=base.source,
                licence=base.licence,
            )
        except InvalidStandards as exc:
            index = int(exc.path.rsplit("[", 1)[-1].rstrip("]")) if "[" in exc.path else -1
            offset = index - len(base.entries)
            code = extra[offset].code if 0 <= offset < len(extra) else "*"
            raise ExtensionError(table_id, code, exc.reason) from None
    return tables
