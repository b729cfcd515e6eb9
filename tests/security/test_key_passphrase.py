"""Passphrase-protected key files: sealing, opening, refusals, and the `lsnet keys` commands.

Most tests use the smallest argon2id limits so they run fast; one test checks that the default
(MODERATE) limits are what a file records. A node whose key is sealed starts when
LSNET_KEY_PASSPHRASE holds the passphrase.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import nacl.pwhash.argon2id as argon2id
import pytest
from click.testing import CliRunner, Result

from hierarchy_config.loader import load_config
from hierarchy_config.network_init import init_network
from node.cli import main
from security.keys import (
    SEALED_PREFIX,
    SEED_PREFIX,
    KdfLimits,
    KeyFileError,
    NodeKey,
    PassphraseRequired,
    WrongPassphrase,
    is_sealed_key_file,
    load_signing_key,
    write_key_file,
)

FAST = KdfLimits(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)
SECRET = "correct horse battery staple"


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


def sealed(tmp_path: Path, key: NodeKey | None = None) -> tuple[Path, NodeKey]:
    key = key or NodeKey.generate()
    path = tmp_path / "node.key"
    write_key_file(path, key, passphrase=SECRET.encode(), limits=FAST, overwrite=True)
    return path, key


# -- the file format -------------------------------------------------------------------------------


def test_sealed_round_trip(tmp_path: Path) -> None:
    path, key = sealed(tmp_path)
    text = path.read_text()
    assert SEALED_PREFIX in text and f"\n{SEED_PREFIX}" not in text
    assert f"# public key: {key.public}" in text
    assert "kdf: argon2id opslimit=1 memlimit=8192 salt=" in text
    assert "cipher: xsalsa20-poly1305" in text
    assert is_sealed_key_file(path)
    loaded = load_signing_key(path, SECRET.encode())
    assert loaded.public == key.public and loaded.kid == key.kid
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_each_file_has_its_own_salt(tmp_path: Path) -> None:
    key = NodeKey.generate()
    a, _ = sealed(tmp_path / "a", key)
    b, _ = sealed(tmp_path / "b", key)
    assert a.read_text() != b.read_text()


def test_default_limits_are_moderate_and_recorded(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = tmp_path / "node.key"
    write_key_file(path, key, passphrase=b"pw")
    assert (
        f"opslimit={argon2id.OPSLIMIT_MODERATE} memlimit={argon2id.MEMLIMIT_MODERATE}"
        in path.read_text()
    )
    assert load_signing_key(path, b"pw").kid == key.kid


def test_wrong_passphrase(tmp_path: Path) -> None:
    path, _ = sealed(tmp_path)
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        load_signing_key(path, b"not it")


def test_missing_passphrase(tmp_path: Path) -> None:
    path, _ = sealed(tmp_path)
    with pytest.raises(PassphraseRequired, match="passphrase-protected; set LSNET_KEY_PASSPHRASE"):
        load_signing_key(path)


def test_altered_ciphertext_is_refused(tmp_path: Path) -> None:
    path, _ = sealed(tmp_path)
    lines = path.read_text().splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith(SEALED_PREFIX))
    body = lines[i][len(SEALED_PREFIX) :]
    lines[i] = SEALED_PREFIX + ("A" if body[0] != "A" else "B") + body[1:]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(WrongPassphrase):
        load_signing_key(path, SECRET.encode())


def test_absurd_limits_in_file_are_refused_before_deriving(tmp_path: Path) -> None:
    path, _ = sealed(tmp_path)
    path.write_text(path.read_text().replace("memlimit=8192", f"memlimit={2**40}"))
    with pytest.raises(KeyFileError, match="memlimit"):
        load_signing_key(path, SECRET.encode())


def test_passphrase_is_ignored_for_a_plain_file(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = tmp_path / "node.key"
    write_key_file(path, key)
    assert not is_sealed_key_file(path)
    assert load_signing_key(path, b"anything").kid == key.kid


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="empty"):
        write_key_file(tmp_path / "k", NodeKey.generate(), passphrase=b"", limits=FAST)
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_permissions_still_enforced_for_sealed_files(tmp_path: Path, mode: int) -> None:
    path, _ = sealed(tmp_path)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match="group or others"):
        load_signing_key(path, SECRET.encode())
    with pytest.raises(KeyFileError, match="group or others"):
        load_signing_key(path)


# -- lsnet keys ------------------------------------------------------------------------------------


def test_keys_generate_with_passphrase_env(tmp_path: Path) -> None:
    out = tmp_path / "node.key"
    result = lsnet(
        "keys", "generate", "--out", out, "--passphrase-env", "MY_PW", env={"MY_PW": SECRET}
    )
    assert result.exit_code == 0, result.output
    assert "passphrase-protected" in result.stdout
    assert SECRET not in out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = load_signing_key(out, SECRET.encode())
    assert key.public in result.stdout
    with pytest.raises(PassphraseRequired):
        load_signing_key(out)


def test_keys_generate_with_passphrase_file(tmp_path: Path) -> None:
    pw = tmp_path / "pw.txt"
    pw.write_text(SECRET + "\n")
    out = tmp_path / "node.key"
    result = lsnet("keys", "generate", "--out", out, "--passphrase-file", pw)
    assert result.exit_code == 0, result.output
    load_signing_key(out, SECRET.encode())


def test_keys_generate_refuses_an_unset_variable(tmp_path: Path) -> None:
    out = tmp_path / "node.key"
    result = lsnet("keys", "generate", "--out", out, "--passphrase-env", "NOT_SET_ANYWHERE")
    assert "NOT_SET_ANYWHERE is not set" in one_line_error(result)
    assert not out.exists()


def test_keys_passphrase_add_change_remove(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = tmp_path / "node.key"
    write_key_file(path, key)
    env = {"A": "first", "B": "second"}

    result = lsnet("keys", "passphrase", "--file", path, "--new-env", "A", env=env)
    assert result.exit_code == 0, result.output
    assert "added" in result.stdout
    assert load_signing_key(path, b"first").kid == key.kid

    result = lsnet("keys", "passphrase", "--file", path, "--new-env", "B", env=env)
    assert "give --old-env" in one_line_error(result)

    result = lsnet(
        "keys", "passphrase", "--file", path, "--old-env", "B", "--new-env", "A", env=env
    )
    assert "wrong passphrase" in one_line_error(result)
    assert load_signing_key(path, b"first").kid == key.kid  # unchanged

    result = lsnet(
        "keys", "passphrase", "--file", path, "--old-env", "A", "--new-env", "B", env=env
    )
    assert result.exit_code == 0, result.output
    assert load_signing_key(path, b"second").kid == key.kid
    with pytest.raises(WrongPassphrase):
        load_signing_key(path, b"first")

    result = lsnet("keys", "passphrase", "--file", path, "--old-env", "B", env=env)
    assert result.exit_code == 0, result.output
    assert "removed" in result.stdout
    assert not is_sealed_key_file(path)
    assert load_signing_key(path).kid == key.kid
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("*.tmp"))


# -- a node with a sealed key ----------------------------------------------------------------------


def test_node_with_sealed_key_starts_with_env(tmp_path: Path) -> None:
    layout = init_network(tmp_path / "net", provinces=1, cities_per_province=1, standards=False)
    config_path = layout.cities()[0].config_path
    key_file = load_config(config_path).node.key_file
    key = load_signing_key(key_file)
    write_key_file(key_file, key, passphrase=SECRET.encode(), limits=FAST, overwrite=True)

    result = lsnet("node", "init", "--config", config_path)
    assert "LSNET_KEY_PASSPHRASE" in one_line_error(result)

    result = lsnet("node", "init", "--config", config_path, env={"LSNET_KEY_PASSPHRASE": "nope"})
    assert "wrong passphrase" in one_line_error(result)

    result = lsnet("node", "init", "--config", config_path, env={"LSNET_KEY_PASSPHRASE": SECRET})
    assert result.exit_code == 0, result.output
    assert "database created" in result.stdout


def test_environment_passphrase_opens_a_sealed_key_for_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from security.keys import PASSPHRASE_ENV, NodeKey, load_signing_key, write_key_file

    key = NodeKey.generate()
    path = tmp_path / "node.key"
    write_key_file(path, key, passphrase=b"correct horse battery staple")
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse battery staple")
    assert load_signing_key(path).public == key.public
