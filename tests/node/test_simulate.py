"""`lsnet simulate` at small scale: an uneven tree of real divisions, converged and checked,
with the figures the national run reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hierarchy_config.loader import load_config
from hierarchy_config.network_init import init_network
from node.cli import main
from node.simulate import (
    SimOptions,
    SimulationError,
    national_tree,
    pace_for_one_process,
    run_simulation,
)


def test_national_tree_spreads_cities_over_provinces() -> None:
    tree = national_tree(31, 330)
    assert len(tree) == 31
    assert sum(len(cities) for _, cities in tree) == 330
    assert all(cities for _, cities in tree)
    codes = [c.code for _, cities in tree for c in cities]
    assert len(set(codes)) == len(codes)
    for province, cities in tree:
        assert all(c.code[:2] == province.code[:2] for c in cities)


def test_national_tree_refuses_impossible_shapes() -> None:
    with pytest.raises(SimulationError, match="between 3"):
        national_tree(3, 2)
    with pytest.raises(SimulationError, match="between"):
        national_tree(31, 5000)


async def test_small_simulation_converges_and_reports(tmp_path: Path) -> None:
    report = await run_simulation(
        SimOptions(
            provinces=3, cities=6, records_per_city=60, timeout_s=120, data_dir=tmp_path / "n"
        )
    )
    assert report["converged"], report["problems"]
    assert report["nodes"] == 10
    # Standards on: every node runs the ministry's signed release, not the built-in schemas.
    assert report["standards_release"] not in ("", "built-in")
    assert report["records_total"] == 6 * 60
    assert report["records_per_s_at_ministry"] > 0
    assert (
        report["seconds_provinces_complete_from_fill_start"]
        <= (report["seconds_to_converge_from_fill_start"])
    )
    assert report["peak_rss_mib"] >= report["peak_rss_mib_started_idle"] > 0
    assert report["open_fds"] > 0


def test_simulate_command_prints_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "simulate",
            "--provinces",
            "2",
            "--cities",
            "3",
            "--records",
            "20",
            "--json",
            "--no-standards",
            "--timeout",
            "120",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["converged"] and report["cities"] == 3 and report["records_total"] == 60


def test_simulate_command_explains_a_bad_shape() -> None:
    result = CliRunner().invoke(main, ["simulate", "--provinces", "5", "--cities", "2"])
    assert result.exit_code == 2
    assert "cities must be between 5" in result.output


def test_pace_stretches_periodic_work_for_many_nodes_in_one_process(tmp_path: Path) -> None:
    small = init_network(tmp_path / "small", provinces=2, cities_per_province=2, base_port=19100)
    assert pace_for_one_process(small) == 1.0  # 7 nodes: the defaults stay
    assert load_config(small.cities()[0].config_path).standards.poll_interval_s == 5.0
    big = init_network(tmp_path / "big", provinces=3, cities_per_province=13, base_port=19200)
    factor = pace_for_one_process(big)
    assert factor == len(big.nodes) / 20 == 2.15
    for entry in big.nodes:
        cfg = load_config(entry.config_path)  # still a valid configuration
        assert cfg.standards.poll_interval_s == 5.0 * factor
        assert cfg.network.heartbeat_interval_s == 10.0 * factor
        assert cfg.network.e2e_probe_interval_s == 30.0 * factor
        assert cfg.sync.retry_interval_s == 2.0 * factor
        assert cfg.sync.key_sync_interval_s == 30.0 * factor
        assert cfg.sync.debounce_ms == 50  # pushes still follow writes at once
