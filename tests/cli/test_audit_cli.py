"""`lsnet audit verify` and `lsnet audit list` on a node folder made by `lsnet network init`."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hierarchy_config.loader import load_config
from hierarchy_config.network_init import init_network
from node.cli import main
from node.clock import FakeClock
from node.db import Database, sqlite_path
from security.audit import AuditKind, AuditLog
from security.keys import load_signing_key

START_MS = 1_790_000_000_000


@pytest.fixture(autouse=True)
def plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")


def lsnet(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def city(tmp_path: Path) -> Path:
    layout = init_network(tmp_path / "net", provinces=1, cities_per_province=1, standards=False)
    config = layout.cities()[0].config_path
    result = lsnet("node", "init", "--config", config)
    assert result.exit_code == 0, result.output
    return config


def record_events(config_path: Path, count: int) -> None:
    """`count` events, one second apart from START_MS + 1 s; peers alternate."""
    config = load_config(config_path)

    async def run() -> None:
        db = Database(config.node.database)
        clock = FakeClock(START_MS)
        log = AuditLog(db, load_signing_key(config.node.key_file), config.node_id, clock)
        try:
            for i in range(count):
                clock.advance(1)
                await log.record(
                    AuditKind.REQUEST_REJECTED if i % 2 else AuditKind.BATCH_REJECTED,
                    peer="330100" if i % 3 == 0 else "10.1.2.3",
                    code="bad_signature",
                    detail={"i": i},
                )
        finally:
            await asyncio.to_thread(db.close)

    asyncio.run(run())


def db_file(config_path: Path) -> Path:
    path = sqlite_path(load_config(config_path).node.database)
    assert path is not None
    return path


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def test_verify_an_empty_and_a_filled_log(city: Path) -> None:
    result = lsnet("audit", "verify", "--config", city)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "0 entries, chain intact"
    record_events(city, 12)
    result = lsnet("audit", "verify", "--config", city)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "12 entries, chain intact"


def test_verify_names_the_first_tampered_row(city: Path) -> None:
    record_events(city, 12)
    con = sqlite3.connect(db_file(city))
    con.execute("DROP TRIGGER audit_log_no_update")
    con.execute("UPDATE audit_log SET code = 'nothing_happened' WHERE seq = 7")
    con.commit()
    con.close()
    result = lsnet("audit", "verify", "--config", city)
    assert result.exit_code == 1
    assert result.stdout.startswith("chain broken at seq 7 (changed)"), result.stdout
    assert "6 entries intact before it" in result.stdout


def test_verify_reports_a_deleted_row_as_a_gap(city: Path) -> None:
    record_events(city, 5)
    con = sqlite3.connect(db_file(city))
    con.execute("DROP TRIGGER audit_log_no_delete")
    con.execute("DELETE FROM audit_log WHERE seq = 3")
    con.commit()
    con.close()
    result = lsnet("audit", "verify", "--config", city)
    assert result.exit_code == 1
    assert result.stdout.startswith("chain broken at seq 3 (gap)"), result.stdout


def test_list_with_filters(city: Path) -> None:
    record_events(city, 10)
    result = lsnet("audit", "list", "--config", city)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "10 entries shown"
    assert lines[0].split()[0] == "10"  # newest first

    result = lsnet("audit", "list", "--config", city, "--kind", "request_rejected", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [e["seq"] for e in doc] == [10, 8, 6, 4, 2]
    assert doc[0]["detail"] == {"i": 9} and doc[0]["code"] == "bad_signature"
    assert doc[0]["node"] == load_config(city).node_id and len(doc[0]["hash"]) == 64

    result = lsnet("audit", "list", "--config", city, "--peer", "330100", "--json")
    assert [e["seq"] for e in json.loads(result.stdout)] == [10, 7, 4, 1]

    since, until = iso(START_MS + 3_000), iso(START_MS + 6_000)
    result = lsnet("audit", "list", "--config", city, "--since", since, "--until", until, "--json")
    assert [e["seq"] for e in json.loads(result.stdout)] == [5, 4, 3]

    result = lsnet("audit", "list", "--config", city, "--limit", "2", "--json")
    assert [e["seq"] for e in json.loads(result.stdout)] == [10, 9]


def test_list_refuses_bad_arguments_in_one_line(city: Path) -> None:
    result = lsnet("audit", "list", "--config", city, "--since", "yesterday")
    assert result.exit_code == 2
    assert "--since 'yesterday' is not an ISO 8601 time" in one_line_error(result)
    result = lsnet("audit", "list", "--config", city, "--kind", "nonsense")
    assert result.exit_code == 2
    assert "nonsense" in result.stderr


def test_uninitialised_node_gets_a_one_line_error(tmp_path: Path) -> None:
    layout = init_network(tmp_path / "net", provinces=1, cities_per_province=1, standards=False)
    config = layout.cities()[0].config_path
    for command in ("verify", "list"):
        result = lsnet("audit", command, "--config", config)
        assert result.exit_code == 2
        assert "lsnet node init" in one_line_error(result)
