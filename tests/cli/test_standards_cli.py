"""`lsnet standards`: init, build, publish with a threshold of administrator keys, show, diff."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from hierarchy_config.standards.build import PACK_DIR
from node.cli import main


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_init_build_publish_and_threshold(tmp_path: Path) -> None:
    admin = tmp_path / "admin"
    code, out = run("standards", "init", "--dir", str(admin))
    assert code == 0, out
    assert (admin / "root.json").exists()
    assert (admin / "repository" / "metadata" / "timestamp.json").exists()
    release = tmp_path / "r2.json"
    code, out = run("standards", "build", str(PACK_DIR), "--version", "2", "--out", str(release))
    assert code == 0 and "release 2" in out, out
    code, out = run(
        "standards", "publish", "--dir", str(admin), "--release", str(release), "--key", "admin-1"
    )
    assert code == 2
    assert "2 valid signatures" in out and "nothing written" in out
    code, out = run(
        "standards",
        "publish",
        "--dir",
        str(admin),
        "--release",
        str(release),
        "--key",
        "admin-1",
        "--key",
        "admin-3",
    )
    assert code == 0, out
    assert "published release 2" in out
    code, out = run(
        "standards",
        "publish",
        "--dir",
        str(admin),
        "--release",
        str(release),
        "--key",
        "admin-1",
        "--key",
        "admin-2",
    )
    assert code == 2 and "immutable" in out


def test_show_and_diff(tmp_path: Path) -> None:
    code, out = run("standards", "show", "CT_ADMIN_DIV", "330103")
    assert code == 0
    assert "下城区" in out and "2021-12-31" in out and "-> 330105" in out
    code, out = run("standards", "show", "CT_NO_SUCH_TABLE")
    assert code == 2 and "no table" in out
    code, out = run("standards", "diff", "default", "default")
    assert code == 0 and "no differences" in out


def test_rotate_root_needs_the_old_threshold(tmp_path: Path) -> None:
    admin = tmp_path / "admin"
    assert run("standards", "init", "--dir", str(admin))[0] == 0
    before = (admin / "root.json").read_bytes()
    code, out = run("standards", "rotate-root", "--dir", str(admin), "--key", "admin-1")
    assert code == 2 and "signature" in out
    assert (admin / "root.json").read_bytes() == before
    code, out = run(
        "standards", "rotate-root", "--dir", str(admin), "--key", "admin-1", "--key", "admin-2"
    )
    assert code == 0, out
    assert "root v2" in out
    assert (admin / "keys" / "root-3.key").exists()
    assert (admin / "root.json").read_bytes() != before
