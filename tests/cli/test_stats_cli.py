"""`lsnet stats list | run` on a node folder made by `lsnet network init` (node stopped)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hierarchy_config.loader import load_config
from hierarchy_config.network_init import init_network
from node.app import Node
from node.cli import main
from node.datagen import generate_records
from node.records import validate_record


@pytest.fixture(autouse=True)
def plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")


def lsnet(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def city(tmp_path: Path) -> Path:
    layout = init_network(tmp_path / "net", provinces=1, cities_per_province=1, standards=False)
    entry = layout.cities()[0]
    assert lsnet("node", "init", "--config", entry.config_path).exit_code == 0

    async def fill() -> None:
        node = Node.open(load_config(entry.config_path))
        try:
            await node.ingest([validate_record(o) for o in generate_records(entry.id, 400, seed=4)])
        finally:
            await node.stop()

    asyncio.run(fill())
    return entry.config_path


def test_list_and_run(city: Path) -> None:
    listed = lsnet("stats", "list", "-c", city, "--json")
    assert listed.exit_code == 0, listed.output
    names = {i["name"] for i in json.loads(listed.output)}
    assert "insured_persons" in names and "average_wage" in names
    table = lsnet("stats", "list", "-c", city)
    assert table.exit_code == 0 and "duplicate_enrolment" in table.output
    # On an 80-column terminal (or none: rich falls back to 80) the other columns shrink, but
    # every indicator name stays whole, ready to copy into `lsnet stats run`.
    narrow = CliRunner().invoke(main, ["stats", "list", "-c", str(city)], env={"COLUMNS": "80"})
    assert narrow.exit_code == 0, narrow.output
    assert max(len(line) for line in narrow.output.splitlines()) <= 80
    assert all(name in narrow.output for name in names)

    out = lsnet(
        "stats", "run", "contributions_collected", "-c", city,
        "--by", "period", "--period", "2024Q1..2024Q4", "--format", "csv",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.output)))
    assert rows and rows[-1]["period"] == "2024Q4"
    assert all(r["suppressed"] in ("", "primary", "secondary", "withheld") for r in rows)

    as_json = lsnet(
        "stats", "run", "insured_persons", "-c", city, "--by", "region,insurance_type",
        "--period", "2024-12", "--format", "json",
    )  # fmt: skip
    doc = json.loads(as_json.output)
    assert doc["kind"] == "stock" and doc["cells"] and not doc["federated"]
    assert doc["labels"]["insurance_type"]  # code names for charts and tables

    shown = lsnet("stats", "run", "insured_persons", "-c", city, "--period", "2024-12")
    assert shown.exit_code == 0 and "insured persons" in shown.output


def test_errors_are_one_line(city: Path) -> None:
    bad = lsnet("stats", "run", "insured_persons", "-c", city, "--period", "2024-13")
    assert bad.exit_code == 2 and "month must be 01 to 12" in bad.output
    unknown = lsnet("stats", "run", "nothing", "-c", city, "--period", "2024")
    assert unknown.exit_code == 2 and "no indicator 'nothing'" in unknown.output
    # a city has no children: a federated run is complete on its own
    lonely = lsnet(
        "stats", "run", "contributions_collected", "-c", city, "--period", "2024", "--federated"
    )
    assert lonely.exit_code == 0, lonely.output


def test_federated_run_names_the_silent_children(city: Path) -> None:
    province = city.parent.parent / "330000" / "node.toml"
    assert lsnet("node", "init", "--config", province).exit_code == 0
    out = lsnet(
        "stats", "run", "contributions_collected", "-c", province, "--period", "2024",
        "--federated", "--timeout", "3",
    )  # fmt: skip
    assert out.exit_code == 2
    assert "no answer from 330100" in out.output and "incomplete answer" in out.output
