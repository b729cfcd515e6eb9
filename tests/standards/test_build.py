"""Building releases from a folder: every BuildError case, the default pack, and diff."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from hierarchy_config.standards import BuildError, Release, build_release, diff
from hierarchy_config.standards.build import PACK_DIR
from hierarchy_config.standards.model import SYSTEMS
from tests.standards.conftest import HEADER

CREATED = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def build(folder: Path, version: int = 1) -> Release:
    return build_release(
        folder,
        version=version,
        created=CREATED,
        expires=CREATED + dt.timedelta(days=90),
        note="test",
    )


def test_mini_pack_builds(mini_pack: Path) -> None:
    release = build(mini_pack)
    assert set(release.tables) == {"CT_COLOUR", "CT_REGION"}
    assert release.schemas["paint_job"].business_date_field == "done_on"
    assert release.tables["CT_REGION"].lookup("330103", dt.date(2022, 1, 1)) is None


def _colours(folder: Path, body: str, header: str = HEADER) -> None:
    (folder / "tables" / "CT_COLOUR.csv").write_text(header + body, encoding="utf-8")


@pytest.mark.parametrize(
    ("header", "body", "row", "column", "reason"),
    [
        (HEADER, "R,red,,1,2020-02-30,,,\n", 2, "valid_from", "must be a date"),
        (HEADER, "R,red,,1,,20201231,,\n", 2, "valid_to", "must be a date"),
        (HEADER.replace("stat_item", "colour"), "R,red,,1,,,,\n", 1, "colour", "unknown column"),
        (HEADER.replace(",stat_item", ""), "R,red,,1,,,\n", 1, "stat_item", "missing column"),
        (HEADER, "R,red,,1,,,,\nG,green,,1,,,,\nR,rot,,1,,,,\n", 4, "code", "duplicate code 'R'"),
        (HEADER, "R,red,,1,,,,\nP,pink,X,2,,,,\n", 3, "parent", "'X' is not a code"),
        (HEADER, "R,red,,1,2020-01-01,2019-12-31,,\n", 2, "valid_to", "before valid_from"),
        (HEADER, "R,red,,1,,,,\n,nameless,,1,,,,\n", 3, "code", "is empty"),
        (HEADER, "R,,,1,,,,\n", 2, "name", "is empty"),
        (HEADER, "R,red,,one,,,,\n", 2, "level", "whole number"),
        (HEADER, "R,red,,1,,\n", 2, "", "has 6 cells"),
        (HEADER, "R,red,,1,,2000-12-31,B,\n", 2, "replacement", "'B' is not a code"),
    ],
)
def test_csv_errors(
    mini_pack: Path, header: str, body: str, row: int, column: str, reason: str
) -> None:
    _colours(mini_pack, body, header)
    with pytest.raises(BuildError) as info:
        build(mini_pack)
    err = info.value
    assert (err.file, err.row, err.column) == ("CT_COLOUR.csv", row, column)
    assert reason in err.reason
    assert "CT_COLOUR.csv, row" in str(err) or row == 0


def test_same_code_twice_with_disjoint_periods_is_allowed(mini_pack: Path) -> None:
    _colours(mini_pack, "R,red,,1,,2000-12-31,,\nR,rouge,,1,2001-01-01,,,\n")
    table = build(mini_pack).tables["CT_COLOUR"]
    assert [e.name for e in table.versions("R")] == ["red", "rouge"]


def test_table_listing_errors(mini_pack: Path) -> None:
    (mini_pack / "tables" / "CT_EXTRA.csv").write_text(HEADER, encoding="utf-8")
    with pytest.raises(BuildError, match=r"not listed in tables\.toml") as info:
        build(mini_pack)
    assert info.value.file == "CT_EXTRA.csv"
    (mini_pack / "tables" / "CT_EXTRA.csv").unlink()
    (mini_pack / "tables" / "CT_COLOUR.csv").unlink()
    with pytest.raises(BuildError, match="missing"):
        build(mini_pack)


def test_tables_toml_errors(mini_pack: Path) -> None:
    path = mini_pack / "tables.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("extensible = true", 'extensible = "yes"'), encoding="utf-8")
    with pytest.raises(BuildError) as info:
        build(mini_pack)
    assert (info.value.file, info.value.column) == ("tables.toml", "CT_COLOUR.extensible")
    path.write_text(text + "\n[CT_BROKEN\n", encoding="utf-8")
    with pytest.raises(BuildError, match="not valid TOML"):
        build(mini_pack)


@pytest.mark.parametrize(
    ("old", "new", "column", "reason"),
    [
        ('type = "date"', 'type = "datetime"', "fields.done_on.type", "unknown field type"),
        (
            'code_table = "CT_COLOUR"',
            'code_table = "CT_PAINT"',
            "fields.colour.code_table",
            "not in this release",
        ),
        ('natural_key = ["job_no"]', 'natural_key = ["job"]', "natural_key", "must name fields"),
        ("max_len = 10 }", 'max_len = "10" }', "fields.job_no.max_len", "an integer"),
        (
            'business_date_field = "done_on"',
            'business_date_field = "job_no"',
            "business_date_field",
            "date",
        ),
        ('title = "a test record"', 'title = "x"\ncolour = 1', "colour", "unknown key"),
    ],
)
def test_schema_errors_name_file_and_field(
    mini_pack: Path, old: str, new: str, column: str, reason: str
) -> None:
    path = mini_pack / "schemas" / "paint_job.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(BuildError) as info:
        build(mini_pack)
    assert info.value.file == "schemas/paint_job.toml"
    assert info.value.column == column
    assert reason in info.value.reason


def test_default_release_contents(release: Release) -> None:
    assert len(release.tables) >= 37
    admin = release.tables["CT_ADMIN_DIV"]
    assert len(admin.current()) > 3000 and len(admin.entries) > 6800
    assert {e.level for e in admin.entries} == {1, 2, 3}
    hangzhou = admin.lookup("330113", dt.date(2022, 1, 1))
    assert hangzhou is not None and hangzhou.name == "临平区" and hangzhou.parent == "330100"
    occupation = release.tables["CT_OCCUPATION"]
    assert len(occupation.entries) > 1600
    labour = occupation.lookup("4-07-03-02")
    assert labour is not None and labour.name == "劳动关系协调师"
    assert len(release.tables["CT_ETHNICITY"].entries) == 58
    industry = release.tables["CT_INDUSTRY"]
    assert sum(1 for e in industry.entries if e.level == 1) == 20
    assert sum(1 for e in industry.entries if e.level == 2) == 97
    assert all(t.source and t.licence for t in release.tables.values())
    # every record type of domain.md §3, in every one of the seven systems plus base
    assert len(release.schemas) == 19
    assert {s.system for s in release.schemas.values()} == set(SYSTEMS)


def test_default_pack_tables_match_node_records(release: Release) -> None:
    from node.records import CODE_TABLES

    for name, old in CODE_TABLES.items():
        assert old.codes <= release.tables[name].codes, name


def test_pack_rebuilds_identically(release: Release, pack_copy: Path) -> None:
    rebuilt = build_release(
        pack_copy,
        version=1,
        created=release.created,
        expires=release.expires,
        note=release.note,
        name=release.name,
    )
    assert rebuilt.digest() == release.digest()
    assert PACK_DIR.is_dir()


def test_diff(release: Release, pack_copy: Path) -> None:
    assert diff(release, release).empty
    assert "no differences" in diff(release, release).render()
    tables = pack_copy / "tables"
    path = tables / "CT_GENDER.csv"
    path.write_text(path.read_text(encoding="utf-8") + "5,女性改(变)为男性,,1,,,,\n", "utf-8")
    path = tables / "CT_ADMIN_DIV.csv"
    text = path.read_text(encoding="utf-8")
    text = text.replace(
        "330102,上城区,330100,3,1983-01-01,,,", "330102,上城区,330100,3,1983-01-01,2030-12-31,,"
    )
    text = text.replace("330106,西湖区,330100,3,", "330106,西湖区(新),330100,3,")
    path.write_text(text, encoding="utf-8")
    path = pack_copy / "schemas" / "person.toml"
    text = path.read_text(encoding="utf-8").replace(
        'max_len = 20, title = "联系电话"', 'max_len = 30, title = "联系电话"'
    )
    path.write_text(text, encoding="utf-8")
    (pack_copy / "schemas" / "training_record.toml").unlink()
    changed = build(pack_copy, version=2)
    result = diff(release, changed)
    assert result.codes_added == (("CT_GENDER", "5"),)
    assert result.codes_retired == (("CT_ADMIN_DIV", "330102", "2030-12-31"),)
    assert result.codes_changed[0][:2] == ("CT_ADMIN_DIV", "330106")
    assert "西湖区(新)" in result.codes_changed[0][2]
    assert result.schemas_removed == ("training_record",)
    assert result.fields_changed == (("person", "phone", "max_len: 20 -> 30"),)
    text = result.render()
    assert "standards release 1 -> 2" in text and "codes added (1)" in text
    assert dataclasses.replace(result, a="x").a == "x"
