"""`lsnet node enroll`: a province adds a city, the ministry adds a province or (with --under) a
city below one; every refusal leaves node.toml byte-identical; the enrollment is audited."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import nacl.pwhash.argon2id as argon2id
import pytest
from click.testing import CliRunner, Result

from hierarchy_config.loader import load_config
from hierarchy_config.network_init import NetworkLayout, init_network
from node.cli import main
from node.db import Database
from security.audit import AuditEntry, AuditKind, AuditReader
from security.keys import KdfLimits, NodeKey, load_signing_key, write_key_file


@pytest.fixture(autouse=True)
def plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("LSNET_KEY_PASSPHRASE", raising=False)


def lsnet(*args: Any, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(main, [str(a) for a in args])


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def net(tmp_path: Path) -> NetworkLayout:
    """Ministry 100000, province 330000 (Zhejiang) with city 330100 (Hangzhou)."""
    return init_network(tmp_path / "net", provinces=1, cities_per_province=1, standards=False)


def province(net: NetworkLayout) -> Path:
    return net.by_id("330000").config_path


def ministry(net: NetworkLayout) -> Path:
    return net.ministry().config_path


def enroll(config: Path, child_id: str, key: str, *extra: str, **kw: Any) -> Result:
    return lsnet(
        "node",
        "enroll",
        "--config",
        config,
        "--child-id",
        child_id,
        "--public-key",
        key,
        *extra,
        **kw,
    )


def enrollments(config_path: Path) -> list[AuditEntry]:
    config = load_config(config_path)

    async def run() -> list[AuditEntry]:
        db = Database(config.node.database)
        try:
            return await AuditReader(db).entries(kind=AuditKind.ENROLLMENT)
        finally:
            await asyncio.to_thread(db.close)

    return asyncio.run(run())


def test_province_enrolls_a_city(net: NetworkLayout) -> None:
    child = NodeKey.generate()
    config = province(net)
    result = enroll(config, "330300", child.public, "--name", "温州市")
    assert result.exit_code == 0, result.output
    assert "enrolled city 330300 温州市" in result.stdout
    assert child.kid in result.stdout
    assert "restart node 330000" in result.stdout
    assert "not initialised" in result.stderr  # no database yet: audit skipped with a note
    loaded = load_config(config)
    assert bytes(loaded.subtree_keys()["330300"]) == bytes(child.verify_key)
    assert "330100" in loaded.subtree_keys()  # the rest is kept
    assert loaded.child_ids() == ("330100", "330300")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert not [p for p in config.parent.iterdir() if p.name.endswith(".tmp")]


def test_ministry_enrolls_a_city_under_a_province(net: NetworkLayout) -> None:
    child = NodeKey.generate()
    config = ministry(net)
    result = enroll(config, "330300", child.public, "--under", "330000")
    assert result.exit_code == 0, result.output
    assert "under province 330000" in result.stdout
    assert "温州市" in result.stdout  # name defaults to the GB/T 2260 name
    assert "province 330000 must enroll 330300" in result.stdout
    loaded = load_config(config)
    assert bytes(loaded.subtree_keys()["330300"]) == bytes(child.verify_key)
    assert loaded.child_ids() == ("330000",)
    assert loaded.route_of("330300") == "330000"
    assert "[[children.children]]" in config.read_text()


def test_ministry_enrolls_a_province(net: NetworkLayout) -> None:
    child = NodeKey.generate()
    config = ministry(net)
    result = enroll(config, "320000", child.public)
    assert result.exit_code == 0, result.output
    loaded = load_config(config)
    assert loaded.child_ids() == ("330000", "320000")
    assert "320000" in loaded.subtree_keys()


def test_enrollment_is_audited(net: NetworkLayout) -> None:
    config = province(net)
    assert lsnet("node", "init", "--config", config).exit_code == 0
    child = NodeKey.generate()
    result = enroll(config, "330300", child.public)
    assert result.exit_code == 0, result.output
    assert "audit entry" in result.stdout and "not initialised" not in result.stderr
    (entry,) = enrollments(config)
    assert entry.peer == "330300" and entry.code == "enrolled" and entry.node == "330000"
    assert entry.detail_map() == {"key_id": child.kid, "under": ""}
    assert lsnet("audit", "verify", "--config", config).exit_code == 0


def test_ministry_enrollment_under_is_audited(net: NetworkLayout) -> None:
    config = ministry(net)
    assert lsnet("node", "init", "--config", config).exit_code == 0
    child = NodeKey.generate()
    assert enroll(config, "330300", child.public, "--under", "330000").exit_code == 0
    (entry,) = enrollments(config)
    assert entry.detail_map() == {"key_id": child.kid, "under": "330000"}


def test_sealed_parent_key_needs_the_passphrase_before_anything_is_written(
    net: NetworkLayout,
) -> None:
    config = province(net)
    assert lsnet("node", "init", "--config", config).exit_code == 0
    key_file = load_config(config).node.key_file
    fast = KdfLimits(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)
    write_key_file(
        key_file, load_signing_key(key_file), passphrase=b"pw", limits=fast, overwrite=True
    )
    before = config.read_bytes()
    child = NodeKey.generate()
    assert "LSNET_KEY_PASSPHRASE" in one_line_error(enroll(config, "330300", child.public))
    assert config.read_bytes() == before
    result = enroll(config, "330300", child.public, env={"LSNET_KEY_PASSPHRASE": "pw"})
    assert result.exit_code == 0, result.output
    assert len(enrollments(config)) == 1


REFUSALS = [
    # (parent, child id, key or None for a fresh one, extra args, expected message)
    ("province", "330100", None, [], "already an enrolled child"),
    ("province", "330000", None, [], "already this node"),
    ("province", "100000", None, [], "6-digit GB/T 2260 code"),
    ("province", "33030", None, [], "6-digit GB/T 2260 code"),
    ("province", "33o300", None, [], "6-digit GB/T 2260 code"),
    ("province", "990300", None, [], "not a GB/T 2260 code"),
    ("province", "320500", None, [], "does not belong to province 330000"),
    ("province", "330300", "ed25519:not-base64!", [], "--public-key"),
    ("province", "330300", "ed25519:AAAA", [], "32 bytes"),
    ("province", "330300", "ssh-ed25519 AAAA", [], "must start with 'ed25519:'"),
    ("province", "330300", None, ["--under", "330000"], "--under is only for the ministry"),
    ("ministry", "330300", None, [], "give --under"),
    ("ministry", "330300", None, ["--under", "320000"], "not a province enrolled here"),
    ("ministry", "330000", None, [], "already an enrolled child"),
    ("ministry", "330100", None, ["--under", "330000"], "already an enrolled child"),
    ("ministry", "320000", None, ["--under", "330000"], "is a province code"),
    ("ministry", "320100", None, ["--under", "330000"], "does not belong to province 330000"),
]


@pytest.mark.parametrize(("parent", "child_id", "key", "extra", "message"), REFUSALS)
def test_refusals_leave_the_file_byte_identical(
    net: NetworkLayout,
    parent: str,
    child_id: str,
    key: str | None,
    extra: list[str],
    message: str,
) -> None:
    config = province(net) if parent == "province" else ministry(net)
    before = config.read_bytes()
    result = enroll(config, child_id, key or NodeKey.generate().public, *extra)
    assert message in one_line_error(result)
    assert config.read_bytes() == before
    assert not [p for p in config.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_key_already_enrolled_is_refused(net: NetworkLayout) -> None:
    config = province(net)
    before = config.read_bytes()
    existing = load_config(config).children[0].public_key
    parent_key = load_config(config).parent
    assert parent_key is not None
    for key in (existing, parent_key.public_key):
        result = enroll(config, "330300", key)
        assert "already belongs to" in one_line_error(result)
    assert config.read_bytes() == before


def test_a_city_cannot_enroll(net: NetworkLayout) -> None:
    config = net.by_id("330100").config_path
    before = config.read_bytes()
    result = enroll(config, "330300", NodeKey.generate().public)
    assert "a city has no children" in one_line_error(result)
    assert config.read_bytes() == before


def test_help_warns_that_comments_are_lost() -> None:
    result = lsnet("node", "enroll", "--help")
    assert result.exit_code == 0
    assert "comments" in result.stdout
