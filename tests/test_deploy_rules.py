"""The Prometheus alert rules shipped in deploy/ are valid (checked with promtool when the
Debian package `prometheus` is installed; .ci/run installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RULES = sorted((Path(__file__).resolve().parent.parent / "deploy" / "prometheus").glob("*.yml"))


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)"
)
def test_alert_rules_pass_promtool() -> None:
    assert RULES, "no rule files found"
    result = subprocess.run(
        ["promtool", "check", "rules", *map(str, RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULES)
