"""`lsnet tokens create | list | revoke` on a node folder made by `lsnet network init`."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hierarchy_config.loader import load_config
from hierarchy_config.network_init import init_network
from node.cli import main
from node.db import Database, sqlite_path
from security.audit import AuditEntry, AuditKind, AuditReader
from security.tokens import Scope, Verdict, authenticate, hash_token, looks_like_token


@pytest.fixture(autouse=True)
def plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")


def lsnet(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def city(tmp_path: Path) -> Path:
    layout = init_network(tmp_path / "net", provinces=1, cities_per_province=1, standards=False)
    config = layout.cities()[0].config_path
    result = lsnet("node", "init", "--config", config)
    assert result.exit_code == 0, result.output
    return config


def _verdict(config_path: Path, token: str) -> Verdict:
    config = load_config(config_path)

    async def run() -> Verdict:
        db = Database(config.node.database)
        try:
            return (await authenticate(db, token, Scope.INGEST, 0)).verdict
        finally:
            await asyncio.to_thread(db.close)

    return asyncio.run(run())


def _operator_actions(config_path: Path) -> list[AuditEntry]:
    config = load_config(config_path)

    async def run() -> list[AuditEntry]:
        db = Database(config.node.database)
        try:
            return await AuditReader(db).entries(kind=AuditKind.OPERATOR_ACTION)
        finally:
            await asyncio.to_thread(db.close)

    return sorted(asyncio.run(run()), key=lambda e: e.seq)


def _db_dump(config_path: Path) -> str:
    path = sqlite_path(load_config(config_path).node.database)
    assert path is not None
    with sqlite3.connect(path) as conn:
        return "\n".join(str(r) for r in conn.execute("SELECT * FROM api_tokens"))


def test_create_list_revoke_round_trip(city: Path) -> None:
    created = lsnet(
        "tokens", "create", "--config", city, "--name", "pension-system", "--by", "alice"
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert looks_like_token(token)  # stdout holds the token alone
    assert "cannot be shown again" in created.stderr
    assert _verdict(city, token) is Verdict.ALLOWED
    dump = _db_dump(city)
    assert hash_token(token) in dump and token not in dump

    listed = lsnet("tokens", "list", "--config", city)
    assert listed.exit_code == 0, listed.output
    assert "pension-system" in listed.stdout and "active" in listed.stdout
    assert "alice" in listed.stdout
    assert token not in listed.output and hash_token(token) not in listed.output
    as_json = lsnet("tokens", "list", "--config", city, "--json")
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)
    assert [(r["name"], r["scope"], r["active"], r["created_by"]) for r in rows] == [
        ("pension-system", "ingest", True, "alice")
    ]
    assert token not in as_json.output and hash_token(token) not in as_json.output

    revoked = lsnet("tokens", "revoke", "--config", city, "pension-system")
    assert revoked.exit_code == 0, revoked.output
    assert "revoked token" in revoked.stdout
    assert _verdict(city, token) is Verdict.REVOKED
    rows = json.loads(lsnet("tokens", "list", "--config", city, "--json").stdout)
    assert rows[0]["active"] is False and rows[0]["revoked_ms"] > 0

    actions = _operator_actions(city)
    assert [(e.code, e.detail_map()) for e in actions] == [
        (
            "token_created",
            {"token_id": rows[0]["id"], "token_name": "pension-system", "scope": "ingest"},
        ),
        (
            "token_revoked",
            {"token_id": rows[0]["id"], "token_name": "pension-system", "scope": "ingest"},
        ),
    ]
    assert lsnet("audit", "verify", "--config", city).exit_code == 0


def test_revoke_by_id_and_failures_are_one_line(city: Path) -> None:
    first = lsnet("tokens", "create", "--config", city, "--name", "hr")
    assert first.exit_code == 0, first.output
    again = lsnet("tokens", "create", "--config", city, "--name", "hr")
    assert again.exit_code == 2
    assert again.stderr.startswith("error: ") and "already" not in again.stdout
    assert "active token named 'hr'" in again.stderr

    bad = lsnet("tokens", "create", "--config", city, "--name", "Bad Name")
    assert bad.exit_code == 2 and "token name" in bad.stderr
    scope = lsnet("tokens", "create", "--config", city, "--name", "x", "--scope", "admin")
    assert scope.exit_code == 2  # click refuses the choice

    token_id = json.loads(lsnet("tokens", "list", "--config", city, "--json").stdout)[0]["id"]
    assert lsnet("tokens", "revoke", "--config", city, token_id).exit_code == 0
    twice = lsnet("tokens", "revoke", "--config", city, token_id)
    assert twice.exit_code == 2 and "already revoked" in twice.stderr
    missing = lsnet("tokens", "revoke", "--config", city, "nobody")
    assert missing.exit_code == 2 and "no active token named 'nobody'" in missing.stderr
    assert len(_operator_actions(city)) == 2  # one create, one revoke: failures write nothing
