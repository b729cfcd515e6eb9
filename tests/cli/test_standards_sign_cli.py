"""`lsnet standards publish --stage`, `sign` (in place and on an offline copy), `publish --merge`,
`publish --commit` and `staged`: what administrators type and read, with exit codes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from hierarchy_config.standards.build import PACK_DIR
from node.cli import main
from security.keys import NodeKey, write_key_file
from security.tuf_client import StandardsClient
from tests.security.test_standards_trust_support import folder_fetch


def run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def admin(tmp_path: Path) -> Path:
    folder = tmp_path / "admin"
    code, out = run("standards", "init", "--dir", folder)
    assert code == 0, out
    return folder


def build(tmp_path: Path, version: int) -> Path:
    out = tmp_path / f"r{version}.json"
    code, text = run("standards", "build", PACK_DIR, "--version", str(version), "--out", out)
    assert code == 0, text
    return out


def test_stage_sign_offline_merge_commit(admin: Path, tmp_path: Path) -> None:
    repo = admin / "repository"
    release = build(tmp_path, 2)
    published = files(repo / "metadata")

    code, out = run("standards", "publish", "--dir", admin, "--release", release, "--stage")
    assert code == 0, out
    assert "staged release 2" in out and "0 of 2 signatures" in out
    assert "lsnet standards sign" in out
    assert files(repo / "metadata") == published  # nodes see nothing yet

    code, out = run("standards", "staged", "--dir", admin)
    assert code == 0 and "staged release 2" in out and "nobody yet" in out, out

    before = files(admin)
    code, out = run("standards", "publish", "--dir", admin, "--commit")
    assert code == 2 and "0 of 2 signatures" in out and "nothing written" in out, out
    assert files(admin) == before

    code, out = run("standards", "sign", "--dir", admin, "--key", "admin-1")
    assert code == 0 and "1 of 2 signatures" in out, out
    before = files(admin)
    code, out = run("standards", "sign", "--dir", admin, "--key", "admin-1")
    assert code == 2 and "already signed staged release 2" in out, out
    code, out = run("standards", "publish", "--dir", admin, "--commit")
    assert code == 2 and "1 of 2 signatures" in out, out
    assert files(admin) == before

    # admin 3 signs a copy on an offline machine and brings it back
    usb, offline = tmp_path / "usb", tmp_path / "offline"
    usb.mkdir()
    offline.mkdir()
    copy = Path(shutil.copy(repo / "staging" / "targets.json", usb / "release-2.staged.json"))
    key = Path(shutil.copy(admin / "keys" / "admin-3.key", offline / "admin-3.key"))
    code, out = run(
        "standards",
        "sign",
        "--staged",
        copy,
        "--key",
        key,
        "--root",
        admin / "root.json",
        "--release",
        release,
    )
    assert code == 0, out
    assert "staged release 2" in out and "2 of 2 signatures" in out and "--merge" in out
    code, out = run("standards", "staged", "--dir", admin)
    assert "1 of 2 signatures" in out, out

    code, out = run("standards", "publish", "--dir", admin, "--merge", copy)
    assert code == 0, out
    assert "merged 1 signature(s)" in out and "2 of 2 signatures" in out and "--commit" in out
    code, out = run("standards", "staged", "--dir", admin)
    assert "admin-1" in out and "admin-3" in out and "admin-2" not in out, out

    code, out = run("standards", "publish", "--dir", admin, "--commit")
    assert code == 0, out
    assert "published the staged release as releases/release-2.json" in out
    assert not (repo / "staging").exists()
    code, out = run("standards", "staged", "--dir", admin)
    assert code == 0 and "nothing is staged" in out

    root = (admin / "root.json").read_bytes()
    client = StandardsClient(root, tmp_path / "meta", tmp_path / "tg", folder_fetch(repo), 2**24)
    client.refresh()
    assert client.current_release().version == 2


def test_refusals_and_exit_codes(admin: Path, tmp_path: Path) -> None:
    release = build(tmp_path, 2)
    stranger = tmp_path / "stranger.key"
    write_key_file(stranger, NodeKey.generate())

    code, out = run("standards", "sign", "--dir", admin, "--key", "admin-1")
    assert code == 2 and "no release is staged" in out, out
    code, out = run("standards", "publish", "--dir", admin, "--release", release)
    assert code == 2 and "--stage" in out, out

    code, out = run("standards", "publish", "--dir", admin, "--release", release, "--stage")
    assert code == 0, out
    before = files(admin)
    code, out = run("standards", "sign", "--dir", admin, "--key", stranger)
    assert code == 2 and "not an administrator" in out, out
    code, out = run("standards", "publish", "--dir", admin, "--release", release, "--stage")
    assert code == 2 and "release 2 is already staged" in out, out
    code, out = run("standards", "sign", "--key", "admin-1")
    assert code == 2 and "either --dir" in out, out
    code, out = run("standards", "publish", "--dir", admin, "--commit", "--discard")
    assert code == 2 and "--discard takes no other option" in out, out
    assert files(admin) == before

    code, out = run("standards", "publish", "--dir", admin, "--discard")
    assert code == 0 and "discarded the staged release 2" in out, out
    assert not (admin / "repository" / "staging").exists()


def test_stage_with_keys_at_hand_then_commit(admin: Path, tmp_path: Path) -> None:
    release = build(tmp_path, 2)
    code, out = run(
        "standards",
        "publish",
        "--dir",
        admin,
        "--release",
        release,
        "--stage",
        "--key",
        "admin-2",
        "--key",
        "admin-3",
    )
    assert code == 0 and "2 of 2 signatures" in out and "--commit" in out, out
    code, out = run("standards", "publish", "--dir", admin, "--commit")
    assert code == 0 and "releases/release-2.json" in out, out
    code, out = run(
        "standards", "publish", "--dir", admin, "--release", release, "--key", "admin-1"
    )
    assert code == 2 and "immutable" in out, out
