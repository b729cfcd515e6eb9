"""Release model: invariants, date-aware lookup, canonical bytes and strict decoding."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from hierarchy_config.standards import (
    CodeEntry,
    CodeTable,
    FieldDef,
    InvalidStandards,
    RecordSchema,
    Release,
    Rule,
    StandardsFormatError,
)

UTC = dt.UTC
D = dt.date


def small_release(version: int = 1) -> Release:
    table = CodeTable(
        "CT_REGION",
        "region",
        "GB/T 2260",
        False,
        (
            CodeEntry("330100", "杭州市", level=2),
            CodeEntry("330103", "下城区", "330100", 3, D(1983, 1, 1), D(2021, 12, 31), "330105"),
            CodeEntry("330105", "拱墅区", "330100", 3, D(1983, 1, 1)),
        ),
        "tests",
        "CC0",
    )
    schema = RecordSchema(
        "visit",
        "base",
        "a visit",
        (FieldDef("no", "str", True, 8), FieldDef("region", "region", False, 6, "CT_REGION")),
        ("no",),
        rules=(Rule("visit.max", "warning", "max_value", {"field": "no", "max": 5}),),
    )
    return Release(
        version,
        "test",
        dt.datetime(2025, 1, 1, tzinfo=UTC),
        dt.datetime(2026, 1, 1, tzinfo=UTC),
        "note",
        {"CT_REGION": table},
        {"visit": schema},
    )


def test_lookup_is_date_aware() -> None:
    table = small_release().tables["CT_REGION"]
    assert table.lookup("330103", D(2020, 6, 1)) is not None
    assert table.lookup("330103", D(2022, 1, 1)) is None
    assert table.lookup("330103", D(1982, 12, 31)) is None
    assert table.lookup("330100", D(1900, 1, 1)) is not None
    latest = table.lookup("330103")
    assert latest is not None and latest.replacement == "330105"
    assert table.lookup("999999") is None


def test_round_trip_is_canonical(release: Release) -> None:
    small = small_release()
    data = small.to_bytes()
    again = Release.from_bytes(data)
    assert again == small and again.to_bytes() == data and again.digest() == small.digest()
    assert json.loads(data)["version"] == 1 and small.id == "1"
    assert b" " not in data.split(b'"note"')[0]  # compact
    big = Release.from_bytes(release.to_bytes())
    assert big.digest() == release.digest()


def test_digest_changes_with_content() -> None:
    assert small_release(1).digest() != small_release(2).digest()


def test_invariants() -> None:
    with pytest.raises(InvalidStandards, match="overlapping"):
        CodeTable("CT_X", "x", "s", False, (CodeEntry("1", "a"), CodeEntry("1", "b")))
    with pytest.raises(InvalidStandards, match="parent"):
        CodeTable("CT_X", "x", "s", False, (CodeEntry("1", "a", parent="9"),))
    with pytest.raises(InvalidStandards, match="before valid_from"):
        CodeTable(
            "CT_X", "x", "s", False, (CodeEntry("1", "a", None, 1, D(2020, 1, 1), D(2019, 1, 1)),)
        )
    # the same code twice with disjoint periods is fine
    CodeTable(
        "CT_X",
        "x",
        "s",
        False,
        (
            CodeEntry("1", "a", valid_to=D(2000, 12, 31)),
            CodeEntry("1", "b", valid_from=D(2001, 1, 1)),
        ),
    )
    with pytest.raises(InvalidStandards, match="unknown field type"):
        RecordSchema("x", "base", "", (FieldDef("a", "float"),), ("a",))
    with pytest.raises(InvalidStandards, match="natural_key"):
        RecordSchema("x", "base", "", (FieldDef("a", "str"),), ("b",))
    with pytest.raises(InvalidStandards, match="system"):
        RecordSchema("x", "payroll", "", (FieldDef("a", "str"),), ("a",))
    with pytest.raises(InvalidStandards, match="not a field"):
        RecordSchema(
            "x",
            "base",
            "",
            (FieldDef("a", "int"),),
            ("a",),
            rules=(Rule("r", "error", "field_lte", {"left": "a", "right": "b"}),),
        )
    with pytest.raises(InvalidStandards, match="UTC"):
        Release(1, "x", dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1, tzinfo=UTC), "", {}, {})  # noqa: DTZ001


def _doc() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(small_release().to_bytes())
    return loaded


def _bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


@pytest.mark.parametrize(
    ("mutate", "path", "reason"),
    [
        (lambda d: d.pop("note"), "$", "missing keys ['note']"),
        (lambda d: d.update(extra=1), "$", "unknown keys ['extra']"),
        (lambda d: d.update(version="1"), "version", "must be an integer"),
        (lambda d: d.update(version=True), "version", "must be an integer"),
        (lambda d: d.update(format="zip"), "format", "must be"),
        (lambda d: d.update(created="2025-01-01"), "created", "UTC timestamp"),
        (
            lambda d: d["tables"]["CT_REGION"]["entries"][1].__setitem__(4, "1983-13-01"),
            "tables.CT_REGION.entries[1][4]",
            "must be a date",
        ),
        (
            lambda d: d["tables"]["CT_REGION"]["entries"][0].pop(),
            "tables.CT_REGION.entries[0]",
            "8 elements",
        ),
        (
            lambda d: d["tables"]["CT_REGION"]["entries"][1].__setitem__(2, "999999"),
            "tables.CT_REGION.entries[1]",
            "parent '999999'",
        ),
        (
            lambda d: d["schemas"]["visit"]["fields"][1].update(code_table="CT_NOPE"),
            "schemas.visit.fields.region.code_table",
            "not in this release",
        ),
        (
            lambda d: d["schemas"]["visit"]["rules"][0].update(severity="fatal"),
            "schemas.visit.rules[0]",
            "severity",
        ),
        (
            lambda d: d["schemas"]["visit"]["rules"][0].update(kind="regex"),
            "schemas.visit.rules[0]",
            "unknown rule kind",
        ),
        (lambda d: d.update(expires=d["created"]), "expires", "after created"),
    ],
)
def test_strict_decoding(mutate: Any, path: str, reason: str) -> None:
    doc = _doc()
    mutate(doc)
    with pytest.raises(StandardsFormatError) as info:
        Release.from_bytes(_bytes(doc))
    assert info.value.path == path
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"[1]", "must be an object"),
        (b'{"a": 1, "a": 2}', "key appears twice"),
        (b'{"a": 1.5}', "floating-point"),
        (b'{"a": NaN}', "NaN is not allowed"),
        (b"{", "not JSON"),
    ],
)
def test_malformed_bytes(data: bytes, reason: str) -> None:
    with pytest.raises(StandardsFormatError, match=reason):
        Release.from_bytes(data)


def test_size_limit_checked_before_parsing() -> None:
    data = small_release().to_bytes()
    with pytest.raises(StandardsFormatError, match="more than the limit"):
        Release.from_bytes(data, max_bytes=len(data) - 1)
    with pytest.raises(StandardsFormatError, match="more than the limit"):
        Release.from_bytes(b"[" * 100_000, max_bytes=1000)
