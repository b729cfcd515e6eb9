"""Heartbeats over real HTTP in a city → province → ministry network: the ministry's tree holds
every node, a stopped node turns down after the configured missed heartbeats and recovers, a
stopped province makes its cities unknown, and clock offsets are measured from the exchange."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.app import Node
from node.clock import SystemClock
from tests.network_mgmt.support import by_id, fast_network, get_json
from tests.support.network import TestNet, wait_until
from tests.support.peer import signing_session

CONTRACT_FIELDS = {
    "node_id", "parent", "level", "name", "health", "last_seen_ms", "lag_s", "backlog", "release",
    "software_version", "clock_offset_ms", "uptime_s", "errors", "security_events",
}  # fmt: skip


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[TestNet]:
    testnet = fast_network(tmp_path, provinces=2, cities=2)
    await testnet.init_all()
    await testnet.start_all()
    try:
        yield testnet
    finally:
        await testnet.stop_all()


async def _tree(node: Node) -> dict[str, dict[str, object]]:
    status, doc = await get_json(node, "/v1/network/tree")
    assert status == 200, doc
    return by_id(doc)


def _all(tree: dict[str, dict[str, object]], health: str, ids: list[str]) -> bool:
    return all(tree[i]["health"] == health for i in ids)


async def test_ministry_tree_holds_every_node(net: TestNet) -> None:
    ministry = net.nodes[net.ministry_id]
    everyone = list(net.configs)

    async def all_up() -> bool:
        return _all(await _tree(ministry), "up", everyone)

    await wait_until(all_up, 15, "the ministry did not see every node up")
    status, doc = await get_json(ministry, "/v1/network/tree")
    assert status == 200
    assert doc["root"] == net.ministry_id and doc["heartbeat_interval_s"] == 0.3
    assert isinstance(doc["generated_ms"], int)
    nodes = by_id(doc)
    assert set(nodes) == set(everyone)
    for entry in nodes.values():
        assert set(entry) >= CONTRACT_FIELDS
    city = net.city_ids()[0]
    assert nodes[city]["level"] == "city"
    assert nodes[city]["parent"] == net.configs[city].parent.id  # type: ignore[union-attr]
    assert nodes[city]["software_version"] == "0.1.0"
    assert nodes[net.ministry_id]["release"] == ministry.standards_version
    assert nodes[city]["release"] in ("builtin-1", ministry.standards_version)
    assert nodes[net.ministry_id]["parent"] is None
    # A province sees only its own subtree.
    province = net.nodes[net.province_ids()[0]]
    ptree = await _tree(province)
    assert set(ptree) == {province.config.node_id, *(c.id for c in province.config.children)}
    # Prometheus carries the per-node gauges.
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(ministry.config.node.url + "/metrics") as r:
        text = await r.text()
    assert f'lsnet_node_up{{node="{city}"}} 1.0' in text
    assert f'lsnet_node_last_seen_timestamp_seconds{{node="{city}"}}' in text


async def test_stopped_city_turns_down_and_recovers(net: TestNet) -> None:
    ministry = net.nodes[net.ministry_id]
    city = net.city_ids()[0]
    everyone = list(net.configs)

    async def all_up() -> bool:
        return _all(await _tree(ministry), "up", everyone)

    await wait_until(all_up, 15, "not all up at start")
    key = {"node": city, "health": "up"}
    province = net.nodes[net.configs[city].parent.id]  # type: ignore[union-attr]
    ups_before = province.registry.get_sample_value("lsnet_node_health_transitions_total", key)
    await net.stop(city)

    async def city_down() -> bool:
        return (await _tree(ministry))[city]["health"] == "down"

    await wait_until(city_down, 15, "the stopped city did not turn down at the ministry")
    others = [n for n in everyone if n != city]

    async def others_up() -> bool:
        tree = await _tree(ministry)
        return tree[city]["health"] == "down" and _all(tree, "up", others)

    await wait_until(others_up, 15, "the other nodes did not stay up")
    assert any(t["node_id"] == city and t["to"] == "down" for t in province.heartbeats.transitions)  # type: ignore[union-attr]

    await net.start(city)
    await wait_until(all_up, 15, "the restarted city did not recover")
    assert any(t["node_id"] == city and t["to"] == "up" for t in province.heartbeats.transitions)  # type: ignore[union-attr]
    ups = province.registry.get_sample_value("lsnet_node_health_transitions_total", key)
    assert ups is not None and ups >= (ups_before or 0) + 1


async def test_stopped_province_makes_its_subtree_unknown(net: TestNet) -> None:
    ministry = net.nodes[net.ministry_id]
    province = net.province_ids()[0]
    cities = [c.id for c in net.configs[province].children]
    everyone = list(net.configs)

    async def all_up() -> bool:
        return _all(await _tree(ministry), "up", everyone)

    await wait_until(all_up, 15, "not all up at start")
    await net.stop(province)

    async def province_gone() -> bool:
        tree = await _tree(ministry)
        return tree[province]["health"] == "down" and _all(tree, "unknown", cities)

    await wait_until(province_gone, 15, "the ministry did not show the province down")
    # Its cities notice the parent is unreachable: their heartbeats fail.
    city = net.nodes[cities[0]]
    await wait_until(
        lambda: city.heartbeats is not None and bool(city.heartbeats.last_error),
        15,
        "the city did not notice its parent is unreachable",
    )
    # ... and their backlog grows while the link backs off.
    from node.datagen import generate_records

    await net.ingest(cities[0], generate_records(cities[0], 10, seed=7))  # type: ignore[arg-type]

    async def backing_off() -> bool:
        _, doc = await get_json(city, f"/v1/network/node/{cities[0]}")
        return doc["backlog"] == 10 and doc["links"][0]["mode"] == "backing_off"

    await wait_until(backing_off, 15, "the city's link did not back off with a backlog")
    await net.start(province)
    await wait_until(all_up, 20, "the province and its cities did not recover")
    await net.wait_converged(20)  # by themselves: no operator action


def SkewedClock(skew_ms: int) -> SystemClock:
    return SystemClock(offset_s=skew_ms / 1000)


async def test_clock_offset_is_measured_and_alerted(tmp_path: Path) -> None:
    testnet = fast_network(tmp_path, provinces=1, cities=2, clock_skew_alert_ms=2000)
    await testnet.init_all()
    await testnet.start(testnet.ministry_id)
    await testnet.start(testnet.province_ids()[0])
    skewed_id, normal_id = testnet.city_ids()
    skewed = Node.open(testnet.configs[skewed_id], clock=SkewedClock(-4000))
    await skewed.start()
    testnet.nodes[skewed_id] = skewed
    await testnet.start(normal_id)
    ministry = testnet.nodes[testnet.ministry_id]
    try:

        async def measured() -> bool:
            tree = await _tree(ministry)
            return tree[skewed_id]["clock_offset_ms"] is not None and (
                tree[normal_id]["clock_offset_ms"] is not None
            )

        await wait_until(measured, 15, "clock offsets were not reported")
        tree = await _tree(ministry)
        assert 3000 <= tree[skewed_id]["clock_offset_ms"] <= 5000  # type: ignore[operator]
        assert abs(tree[normal_id]["clock_offset_ms"]) < 2000  # type: ignore[arg-type]
        status, doc = await get_json(ministry, "/v1/network/alerts")
        assert status == 200
        skew = [a for a in doc["alerts"] if a["alert"] == "clock_skew"]
        assert [a["node"] for a in skew] == [skewed_id]
    finally:
        await testnet.stop_all()


async def test_heartbeat_refusals_over_http_are_audited(tmp_path: Path) -> None:
    from network_mgmt.heartbeat_wire import HEARTBEAT_PATH, Heartbeat, make_heartbeat, new_nonce
    from security.audit import AuditKind, AuditReader

    testnet = fast_network(tmp_path, provinces=1, cities=1, heartbeat_interval_s=3600.0)
    await testnet.init_all()
    province = await testnet.start(testnet.province_ids()[0])
    city = testnet.open(testnet.city_ids()[0])  # not started: we send its heartbeat by hand
    try:
        own = await city.heartbeats.own_status()  # type: ignore[union-attr]
        pid = province.config.node_id
        hb = Heartbeat(city.config.node_id, pid, city.clock.time_ms(), new_nonce(), (own,))
        body = make_heartbeat(city.key, hb)
        url = province.config.node.url + HEARTBEAT_PATH
        # Signed over HTTP as the city (RFC 9421); the heartbeat inside has its own checks.
        async with signing_session(city.config.node_id, city.key, pid) as s:
            async with s.post(url, data=body) as r:
                assert r.status == 200
            async with s.post(url, data=body) as r:  # the same bytes again: a replay
                assert r.status == 401 and (await r.json())["error"]["code"] == "replay"
            forged = make_heartbeat(province.key, hb)  # signed with the wrong key
            async with s.post(url, data=forged) as r:
                assert r.status == 401 and (await r.json())["error"]["code"] == "bad_signature"
            async with s.post(url, data=b"\x93garbage") as r:
                assert r.status == 400
        refused = await AuditReader(province.db).entries(kind=AuditKind.REQUEST_REJECTED)
        assert {e.code for e in refused} >= {"replay", "bad_signature", "malformed"}
        assert (await _tree(province))[city.config.node_id]["health"] == "up"
    finally:
        await city.stop()
        await testnet.stop_all()
