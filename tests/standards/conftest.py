"""Fixtures for standards tests: the default release (built once) and a tiny pack folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hierarchy_config.standards import Release, default_release

MINI_TABLES = """
[CT_COLOUR]
name = "colour"
standard = "test"
extensible = true
source = "tests"
licence = "CC0"

[CT_REGION]
name = "region"
standard = "test"
extensible = false
source = "tests"
licence = "CC0"
"""
HEADER = "code,name,parent,level,valid_from,valid_to,replacement,stat_item\n"
MINI_SCHEMA = """
name = "paint_job"
system = "base"
title = "a test record"
natural_key = ["job_no"]
business_date_field = "done_on"
fields = [
  { name = "job_no", type = "str", required = true, max_len = 10 },
  { name = "colour", type = "str", max_len = 6, code_table = "CT_COLOUR" },
  { name = "region", type = "region", max_len = 6, code_table = "CT_REGION" },
  { name = "done_on", type = "date" },
]
"""


@pytest.fixture(scope="session")
def release() -> Release:
    return default_release()


@pytest.fixture
def mini_pack(tmp_path: Path) -> Path:
    """A small, valid pack folder that tests then break one way or another."""
    folder = tmp_path / "pack"
    (folder / "tables").mkdir(parents=True)
    (folder / "schemas").mkdir()
    (folder / "tables.toml").write_text(MINI_TABLES, encoding="utf-8")
    (folder / "tables" / "CT_COLOUR.csv").write_text(
        HEADER + "R,red,,1,,,,\nG,green,,1,,,,\n", encoding="utf-8"
    )
    (folder / "tables" / "CT_REGION.csv").write_text(
        HEADER
        + "330000,浙江省,,1,,,,\n330100,杭州市,330000,2,,,,\n"
        + "330103,下城区,330100,3,1983-01-01,2021-12-31,330105,\n"
        + "330105,拱墅区,330100,3,1983-01-01,,,\n",
        encoding="utf-8",
    )
    (folder / "schemas" / "paint_job.toml").write_text(MINI_SCHEMA, encoding="utf-8")
    return folder


@pytest.fixture
def pack_copy(tmp_path: Path) -> Path:
    from hierarchy_config.standards.build import PACK_DIR

    target = tmp_path / "copy"
    shutil.copytree(PACK_DIR, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return target
