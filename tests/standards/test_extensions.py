"""Provincial extensions: what a province may add, and what it is refused."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from hierarchy_config.standards import (
    CodeEntry,
    EffectiveStandards,
    Extension,
    ExtensionError,
    InvalidStandards,
    Release,
    StandardsFormatError,
    validate_record,
)
from node.records import RecordInvalid


def ext(table: str, *entries: CodeEntry, province: str = "330000") -> Extension:
    return Extension(province, 1, 1, {table: entries}, "local codes")


def dispute(dispute_type: str) -> dict[str, Any]:
    return {
        "type": "dispute_case",
        "case_no": "ZJ-2024-1",
        "accept_date": "2024-02-01",
        "workers_involved": 12,
        "dispute_type": dispute_type,
        "region": "330100",
    }


def test_province_code_in_extensible_table(release: Release) -> None:
    local = ext(
        "CT_DISPUTE_TYPE", CodeEntry("X3301", "平台用工争议", valid_from=dt.date(2023, 1, 1))
    )
    effective = EffectiveStandards(release, (local,))
    assert effective.id == "1+330000.1"
    table = effective.table("CT_DISPUTE_TYPE")
    assert table is not None and table.lookup("X3301") is not None and table.lookup("01")
    result = validate_record(effective, dispute("X3301"))
    assert result.record.payload["dispute_type"] == "X3301"
    with pytest.raises(RecordInvalid):  # not without the extension
        validate_record(release, dispute("X3301"))
    with pytest.raises(RecordInvalid, match="valid only from 2023-01-01"):
        validate_record(effective, {**dispute("X3301"), "accept_date": "2022-12-31"})
    # untouched tables are the release's own objects
    assert effective.table("CT_GENDER") is release.tables["CT_GENDER"]


@pytest.mark.parametrize(
    ("table", "code", "reason"),
    [
        ("CT_GENDER", "X331", "not open to local codes"),
        ("CT_ADMIN_DIV", "X33001", "not open to local codes"),
        ("CT_NOPE", "X331", "no such table"),
        ("CT_DISPUTE_TYPE", "X3501", "must be X33 followed by"),
        ("CT_DISPUTE_TYPE", "33A", "must be X33 followed by"),
        ("CT_DISPUTE_TYPE", "X33", "must be X33 followed by"),
        ("CT_DISPUTE_TYPE", "X330001", "must be X33 followed by"),
        ("CT_DISPUTE_TYPE", "01", "is a ministry code"),
    ],
)
def test_refused(release: Release, table: str, code: str, reason: str) -> None:
    with pytest.raises(ExtensionError) as info:
        EffectiveStandards(release, (ext(table, CodeEntry(code, "local")),))
    assert info.value.table == table
    assert info.value.code in (code, "*")
    assert reason in info.value.reason


def test_shadowing_a_retired_ministry_code_is_refused(release: Release) -> None:
    # a ministry table that holds an X-code: the extension still cannot reuse it
    table = release.tables["CT_DISPUTE_TYPE"]
    patched = type(table)(
        table.id,
        table.name,
        table.standard,
        True,
        (*table.entries, CodeEntry("X3309", "old", valid_to=dt.date(2010, 12, 31))),
        table.source,
        table.licence,
    )
    tables = {**release.tables, table.id: patched}
    base = Release(1, "r", release.created, release.expires, "", tables, release.schemas)
    with pytest.raises(ExtensionError, match="is a ministry code"):
        EffectiveStandards(base, (ext("CT_DISPUTE_TYPE", CodeEntry("X3309", "mine")),))


def test_duplicates_parents_and_provinces(release: Release) -> None:
    twice = ext("CT_DISPUTE_TYPE", CodeEntry("X331", "a"), CodeEntry("X331", "b"))
    with pytest.raises(ExtensionError, match="overlapping") as info:
        EffectiveStandards(release, (twice,))
    assert info.value.code == "X331"
    orphan = ext("CT_DISPUTE_TYPE", CodeEntry("X331", "a", parent="X339"))
    with pytest.raises(ExtensionError, match="parent"):
        EffectiveStandards(release, (orphan,))
    child = ext("CT_DISPUTE_TYPE", CodeEntry("X331", "a", parent="01", level=2))
    EffectiveStandards(release, (child,))
    same = ext("CT_DISPUTE_TYPE", CodeEntry("X331", "a"))
    with pytest.raises(ExtensionError, match="two extensions"):
        EffectiveStandards(release, (same, same))
    other = ext("CT_DISPUTE_TYPE", CodeEntry("X351", "闽"), province="350000")
    both = EffectiveStandards(release, (same, other))
    assert both.table("CT_DISPUTE_TYPE") is not None
    with pytest.raises(InvalidStandards, match="province"):
        Extension("330100", 1, 1, {}, "")


def test_extension_bytes_round_trip() -> None:
    local = ext(
        "CT_TRAINING_TYPE", CodeEntry("X331", "数字技能培训", valid_from=dt.date(2024, 1, 1))
    )
    data = local.to_bytes()
    assert Extension.from_bytes(data) == local
    with pytest.raises(StandardsFormatError, match="more than the limit"):
        Extension.from_bytes(data, max_bytes=10)
    bad = data.replace(b'"province":"330000"', b'"province":"330100"')
    with pytest.raises(StandardsFormatError) as info:
        Extension.from_bytes(bad)
    assert info.value.path == "province"
    with pytest.raises(StandardsFormatError) as info:
        Extension.from_bytes(data.replace(b"2024-01-01", b"2024-01-32"))
    assert info.value.path == "tables.CT_TRAINING_TYPE[0][4]"
