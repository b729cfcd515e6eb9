"""The Prometheus configuration shipped in deploy/ is valid and its alerts fire when provoked
(checked with promtool when the Debian package `prometheus` is installed; .ci/run installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROM = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES = sorted(PROM.glob("*.rules.yml"))
UNIT_TESTS = sorted((PROM / "tests").glob("*.test.yml"))
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)"
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


@needs_promtool
def test_alert_rules_pass_promtool() -> None:
    assert RULES, "no rule files found"
    result = _promtool("check", "rules", *map(str, RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULES)


@needs_promtool
def test_scrape_configuration_passes_promtool() -> None:
    result = _promtool("check", "config", str(PROM / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_alert_fires_in_a_unit_test() -> None:
    assert UNIT_TESTS, "no promtool unit tests found"
    result = _promtool("test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    # Each alert of every rules file is provoked by at least one unit test, and each rules file
    # has its own unit-test file.
    assert {p.name.removesuffix(".rules.yml") for p in RULES} == {
        p.name.removesuffix(".test.yml") for p in UNIT_TESTS
    }
    tested = "".join(p.read_text(encoding="utf-8") for p in UNIT_TESTS)
    for rules_file in RULES:
        for name in re.findall(r"- alert: (\w+)", rules_file.read_text(encoding="utf-8")):
            assert re.search(rf"alertname: {name}\s+exp_alerts:\s+- exp_labels", tested), name


def test_network_rules_use_metrics_the_nodes_export() -> None:
    """Without promtool: every lsnet_node_* metric the rules use is one the heartbeat exports."""
    source = (PROM.parent.parent / "network_mgmt" / "metrics.py").read_text(encoding="utf-8")
    rules = (PROM / "lsnet-network.rules.yml").read_text(encoding="utf-8")
    for metric in set(re.findall(r"\b(lsnet_node_[a-z0-9_]+|lsnet_heartbeat[a-z_]*)", rules)):
        base = metric.removesuffix("_total")
        assert f'"{base}"' in source, metric
