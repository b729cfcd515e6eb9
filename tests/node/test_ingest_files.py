"""Unit tests for node.ingest_files: JSONL and CSV readers that never crash on a bad row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.datagen import generate_records
from node.ingest_files import (
    CsvHeaderError,
    RowError,
    count_rows,
    read_csv,
    read_jsonl,
)
from node.records import validate_record

EMP = {
    "type": "employer",
    "uscc": "91110000600037341L",
    "name": "北京某某有限公司",
    "region": "110105",
}


def test_jsonl_with_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(EMP, ensure_ascii=False),
                "",
                "{not json",
                "[1, 2]",
                "  ",
                json.dumps({**EMP, "name": "乙"}),
                '"text"',
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    rows = list(read_jsonl(path))
    assert [r for r, _ in rows] == [1, 3, 4, 6, 7]
    assert rows[0][1] == EMP
    bad = rows[1][1]
    assert isinstance(bad, RowError) and bad.row == 3 and bad.field == ""
    assert bad.reason.startswith("line is not a JSON object: ")
    assert rows[2][1] == RowError(4, "", "line is not a JSON object: it is an array")
    assert isinstance(rows[3][1], dict) and rows[3][1]["name"] == "乙"
    assert isinstance(rows[4][1], RowError)
    assert count_rows(path) == 7


def test_jsonl_bom_and_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    good = json.dumps(EMP, ensure_ascii=False).encode()
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\n" + b'{"name": "\xff\xfe"}\n' + good)
    rows = list(read_jsonl(path))
    assert rows[0] == (1, EMP)
    assert isinstance(rows[1][1], RowError) and "UTF-8" in rows[1][1].reason
    assert rows[2] == (3, EMP)
    assert count_rows(path) == 3


def test_jsonl_overlong_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("node.ingest_files.MAX_LINE_BYTES", 300)
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"x": "a" * 5000}) + "\n" + json.dumps(EMP) + "\n")
    rows = list(read_jsonl(path))
    assert isinstance(rows[0][1], RowError) and "longer" in rows[0][1].reason
    assert rows[1] == (2, EMP)


def test_csv_with_type(tmp_path: Path) -> None:
    path = tmp_path / "emp.csv"
    path.write_text(
        "uscc,name,region,status\n"
        "91110000600037341L,北京某某有限公司,110105,\n"
        "\n"
        '91110000600037341L,"甲,乙 公司",110105,1\n'
        "91110000600037341L,丙\n",
        encoding="utf-8",
    )
    rows = list(read_csv(path, "employer"))
    assert rows[0] == (1, EMP)  # the empty status cell is absent
    assert rows[1][0] == 3 and rows[1][1] == {**EMP, "name": "甲,乙 公司", "status": "1"}
    assert rows[2][0] == 4 and isinstance(rows[2][1], RowError)
    assert "cells" in rows[2][1].reason
    assert validate_record(EMP).key == "91110000600037341L"
    assert count_rows(path) == 5


def test_csv_bom_and_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "emp.csv"
    path.write_bytes(
        b"\xef\xbb\xbfuscc,name,region\n"
        b"91110000600037341L,\xe5\x8c\x97\xff,110105\n"
        b"91110000600037341L,\xe5\x8c\x97\xe4\xba\xac,110105\n"
    )
    rows = list(read_csv(path, "employer"))
    assert rows[0] == (1, RowError(1, "name", "is not valid UTF-8; save the file as UTF-8"))
    assert rows[1] == (2, {**EMP, "name": "北京"})


def test_csv_type_column_must_agree(tmp_path: Path) -> None:
    path = tmp_path / "emp.csv"
    path.write_text(
        "type,uscc,name,region\nemployer,91110000600037341L,甲,110105\n"
        "person,91110000600037341L,甲,110105\n"
    )
    rows = list(read_csv(path, "employer"))
    assert rows[0][1] == {**EMP, "name": "甲"}
    assert isinstance(rows[1][1], RowError) and rows[1][1].field == "type"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"uscc,,name\n", "column 2"),
        (b"uscc,name,uscc\n", "uscc"),
        (b"us\xffcc,name\n", "UTF-8"),
    ],
)
def test_csv_bad_header(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "h.csv"
    path.write_bytes(content)
    with pytest.raises(CsvHeaderError, match=message):
        list(read_csv(path, "employer"))


def test_generated_records_round_trip_through_jsonl(tmp_path: Path) -> None:
    records = generate_records("330100", 300)
    path = tmp_path / "gen.jsonl"
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    read = [obj for _, obj in read_jsonl(path)]
    assert read == records
    assert count_rows(path) == 300


def test_count_rows_edge_cases(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"")
    assert count_rows(path) == 0
    path.write_bytes(b"a")
    assert count_rows(path) == 1
    path.write_bytes(b"a\nb\n")
    assert count_rows(path) == 2
