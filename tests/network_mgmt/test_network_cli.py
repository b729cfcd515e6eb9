"""`lsnet status --tree`, `lsnet alerts` and `lsnet links …` against a running network (click's
CliRunner in a worker thread; the nodes serve real HTTP in the test's event loop)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from node.cli import main
from security.tokens import create_token
from tests.network_mgmt.support import by_id, fast_network, get_json
from tests.support.network import TestNet, wait_until


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[TestNet]:
    testnet = fast_network(tmp_path, provinces=1, cities=2)
    await testnet.init_all()
    await testnet.start_all()
    everyone = set(testnet.configs)

    async def all_up() -> bool:
        _, doc = await get_json(testnet.nodes[testnet.ministry_id], "/v1/network/tree")
        return {n for n, e in by_id(doc).items() if e["health"] == "up"} == everyone

    await wait_until(all_up, 15, "not all nodes up")
    try:
        yield testnet
    finally:
        await testnet.stop_all()


def _config(net: TestNet, node_id: str) -> str:
    return str(next(e.config_path for e in net.layout.nodes if e.id == node_id))


async def _run(args: list[str], env: dict[str, str] | None = None) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, main, args, env=env, catch_exceptions=False)


async def test_status_tree_and_alerts(net: TestNet) -> None:
    ministry = _config(net, net.ministry_id)
    result = await _run(["status", "--config", ministry, "--tree"])
    assert result.exit_code == 0, result.output
    for node_id in net.configs:
        assert node_id in result.output
    assert "4 nodes: 4 up, 0 down, 0 unknown" in result.output
    result = await _run(["status", "--config", ministry, "--tree", "--json"])
    assert {n["node_id"] for n in json.loads(result.output)["nodes"]} == set(net.configs)

    async def quiet() -> bool:  # e.g. until every city has the ministry's standards release
        _, doc = await get_json(net.nodes[net.ministry_id], "/v1/network/alerts")
        return doc["alerts"] == []

    await wait_until(quiet, 15, "alerts did not clear")
    result = await _run(["alerts", "--config", ministry])
    assert result.exit_code == 0 and "no alerts" in result.output, result.output

    city = net.city_ids()[0]
    await net.stop(city)

    async def down() -> bool:
        _, doc = await get_json(net.nodes[net.ministry_id], "/v1/network/tree")
        return by_id(doc)[city]["health"] == "down"

    await wait_until(down, 15, "the city did not turn down")
    result = await _run(["alerts", "--config", ministry, "--json"])
    assert result.exit_code == 1  # a critical alert is present
    alerts = json.loads(result.output)["alerts"]
    assert {"alert": "node_down", "node": city} in [
        {"alert": a["alert"], "node": a["node"]} for a in alerts
    ]
    result = await _run(["status", "--config", ministry, "--tree"])
    assert "DOWN" in result.output and "1 down" in result.output


async def test_links_view_and_actions(net: TestNet) -> None:
    city_id = net.city_ids()[0]
    city = net.nodes[city_id]
    config = _config(net, city_id)
    result = await _run(["links", "--config", config])
    assert result.exit_code == 0, result.output
    assert "live" in result.output and "quarantined batches waiting: 0" in result.output

    result = await _run(["links", "pause", "--config", config, "--reason", "x"], env={})
    assert result.exit_code == 2
    assert "LSNET_OPERATOR_TOKEN" in result.output and "Traceback" not in result.output

    token, _ = await create_token(
        city.db, name="carol", scope="operator", created_by="t", now_ms=city.clock.time_ms()
    )
    env = {"LSNET_OPERATOR_TOKEN": token}
    result = await _run(["links", "pause", "--config", config, "--reason", "backup"], env=env)
    assert result.exit_code == 0 and "paused" in result.output, result.output
    result = await _run(["links", "--config", config, "--json"])
    link = json.loads(result.output)["links"][0]
    assert link["paused"] and link["paused_by"] == "carol" and link["pause_reason"] == "backup"
    result = await _run(["links", "resume", "--config", config], env=env)
    assert result.exit_code == 0 and "paused" not in result.output
    result = await _run(["links", "retry", "--config", config], env=env)
    assert result.exit_code == 0
    result = await _run(["links", "errors", "--config", config], env=env)
    assert result.exit_code == 0
    result = await _run(["links", "quarantine", "list", "--config", config], env=env)
    assert result.exit_code == 0 and "no quarantined batches" in result.output
    result = await _run(["links", "quarantine", "show", "--config", config, "5"], env=env)
    assert result.exit_code == 2 and "not_found" in result.output
    result = await _run(
        ["links", "pause", "--config", config, "--reason", "x"],
        env={"LSNET_OPERATOR_TOKEN": "lsn_wrong"},
    )
    assert result.exit_code == 2 and "unauthenticated" in result.output


async def test_cli_explains_a_stopped_node(net: TestNet) -> None:
    city_id = net.city_ids()[0]
    await net.stop(city_id)
    result = await _run(["status", "--config", _config(net, city_id), "--tree"])
    assert result.exit_code == 2
    assert "does not answer" in result.output and "Traceback" not in result.output
    # The link view reads the database and works while the node is stopped.
    result = await _run(["links", "--config", _config(net, city_id)])
    assert result.exit_code == 0, result.output
