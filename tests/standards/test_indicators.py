"""Indicators and replication policies in a standards release: the shipped pack, the canonical
bytes (and their strict decoding), and build errors naming the file and the field."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from hierarchy_config.standards import BuildError, Release, build_release, diff
from hierarchy_config.standards.model import StandardsFormatError

CREATED = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
GOOD = """
name = "jobs"
title = "paint jobs done"
kind = "flow"
record_type = "paint_job"
measure = { kind = "count" }
region_field = "region"
period_field = "done_on"
filters = [{ field = "colour", values = ["R"] }]
dimensions = [{ name = "colour", field = "colour" }]
"""


def build(folder: Path) -> Release:
    return build_release(
        folder, version=1, created=CREATED, expires=CREATED + dt.timedelta(days=9), note="t"
    )


def test_default_pack_ships_the_domain_indicators(release: Release) -> None:
    refs = {i.ref for i in release.indicators.values()}
    assert {"I1", "I1-dup", "I2", "I3", "I4", "I5", "I6", "I7", "I8"} <= refs
    assert release.indicators["average_wage"].kind == "ratio"
    assert release.policy("medical_settlement").mode == "local"
    assert release.policy("contribution").mode == "replicate"
    assert release.policy("contribution").min_cell == 5
    assert "medical_settlement" in release.local_record_types()
    again = Release.from_bytes(release.to_bytes())
    assert again.indicators == release.indicators and again.policies == release.policies


def test_releases_without_statistics_keep_their_bytes(mini_pack: Path) -> None:
    plain = build(mini_pack)
    doc = json.loads(plain.to_bytes())
    assert "indicators" not in doc and "replication" not in doc
    assert plain.policy("paint_job").mode == "replicate"


def test_mini_pack_with_an_indicator(mini_pack: Path) -> None:
    (mini_pack / "indicators").mkdir()
    (mini_pack / "indicators" / "jobs.toml").write_text(GOOD, encoding="utf-8")
    (mini_pack / "replication.toml").write_text(
        '[default]\nmode = "replicate"\nmin_cell = 3\n[types.paint_job]\nmode = "local"\n',
        encoding="utf-8",
    )
    release = build(mini_pack)
    assert release.indicators["jobs"].filters[0].values == ("R",)
    assert release.policy("paint_job").mode == "local"


@pytest.mark.parametrize(
    ("old", "new", "file", "reason"),
    [
        (
            'record_type = "paint_job"',
            'record_type = "boat"',
            "indicators/jobs.toml",
            "unknown type",
        ),
        (
            'period_field = "done_on"',
            'period_field = "colour"',
            "indicators/jobs.toml",
            "must be of type",
        ),
        (
            'values = ["R"]',
            'values = ["PURPLE"]',
            "indicators/jobs.toml",
            "not a code of CT_COLOUR",
        ),
        (
            'field = "colour" }]\n',
            'field = "job_no" }]\n',
            "indicators/jobs.toml",
            "has no code table",
        ),
        ('kind = "count"', 'kind = "median"', "indicators/jobs.toml", "must be"),
        ('kind = "flow"', 'kind = "stock"', "indicators/jobs.toml", "a stock needs start_field"),
        (
            'title = "paint jobs done"',
            'title = "x"\ncolour = 1',
            "indicators/jobs.toml",
            "unknown keys",
        ),
    ],
)
def test_indicator_build_errors(
    mini_pack: Path, old: str, new: str, file: str, reason: str
) -> None:
    (mini_pack / "indicators").mkdir()
    assert old in GOOD
    (mini_pack / "indicators" / "jobs.toml").write_text(GOOD.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(BuildError, match=reason) as info:
        build(mini_pack)
    assert info.value.file == file


def test_replication_build_errors(mini_pack: Path) -> None:
    (mini_pack / "replication.toml").write_text('[types.boat]\nmode = "local"\n', encoding="utf-8")
    with pytest.raises(BuildError, match="not a record type") as info:
        build(mini_pack)
    assert info.value.file == "replication.toml"
    (mini_pack / "replication.toml").write_text(
        '[types.paint_job]\nmode = "upward"\n', encoding="utf-8"
    )
    with pytest.raises(BuildError, match="'replicate' or 'local'"):
        build(mini_pack)


def test_decoding_is_strict(release: Release) -> None:
    doc = json.loads(release.to_bytes())
    doc["indicators"]["insured_persons"]["colour"] = "red"
    with pytest.raises(StandardsFormatError, match="unknown keys"):
        Release.from_bytes(json.dumps(doc).encode())
    doc = json.loads(release.to_bytes())
    doc["indicators"]["insured_persons"]["record_type"] = "boat"
    with pytest.raises(StandardsFormatError, match="unknown type"):
        Release.from_bytes(json.dumps(doc).encode())


def test_diff_reports_statistics_changes(mini_pack: Path) -> None:
    before = build(mini_pack)
    (mini_pack / "indicators").mkdir()
    (mini_pack / "indicators" / "jobs.toml").write_text(GOOD, encoding="utf-8")
    (mini_pack / "replication.toml").write_text(
        '[types.paint_job]\nmode = "local"\nmin_cell = 3\n', encoding="utf-8"
    )
    after = build(mini_pack)
    changes = diff(before, after)
    assert changes.indicators_added == ("jobs",)
    assert changes.replication_changed == (("paint_job", "replicate/1 -> local/3"),)
    assert "replication changed" in changes.render()
