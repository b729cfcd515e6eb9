"""`lsnet standards build` names the file, row, column and reason of a malformed CSV."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from hierarchy_config.standards.build import PACK_DIR
from node.cli import main


def test_malformed_csv_is_reported_with_row_and_column(tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    shutil.copytree(PACK_DIR, pack)
    table = pack / "tables" / "CT_GENDER.csv"
    lines = table.read_text(encoding="utf-8").splitlines()
    lines.append("7,测试,,1,2024-13-01,,,")  # month 13
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        main, ["standards", "build", str(pack), "--version", "2", "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "CT_GENDER.csv" in result.output
    assert f"row {len(lines)}" in result.output
    assert "valid_from" in result.output
    assert not out.exists()
