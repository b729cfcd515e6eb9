"""Rollout visibility: every node's release reaches the ministry through signed reports; a
child cannot report for nodes outside its subtree, and unknown or forged reports are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from network_mgmt.rollout import REPORT_PATH, NodeRelease, RolloutView
from security.keys import NodeKey
from tests.support.network import TestNet, make_network, wait_until
from tests.support.peer import signing_session


def fast(net: TestNet) -> None:
    for node_id, cfg in net.configs.items():
        net.configs[node_id] = cfg.model_copy(
            update={"standards": cfg.standards.model_copy(update={"poll_interval_s": 0.3})}
        )


async def rollout(net: TestNet) -> dict[str, Any]:
    url = net.nodes[net.ministry_id].config.node.url + "/v1/standards/rollout"
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200
        doc: dict[str, Any] = await r.json()
        return doc


async def test_ministry_sees_every_nodes_release(tmp_path: Path) -> None:
    net = make_network(tmp_path, provinces=2, cities_per_province=1)
    fast(net)
    await net.init_all()
    await net.start_all()
    try:

        async def complete() -> bool:
            doc = await rollout(net)
            return not doc["not_reporting"] and all(
                v["release"] == "std-1" for v in doc["nodes"].values()
            )

        await wait_until(complete, 30, "the ministry did not see every node at release 1")
        doc = await rollout(net)
        assert set(doc["nodes"]) == {e.id for e in net.layout.nodes}
        assert doc["behind"] == []
    finally:
        await net.stop_all()


async def test_reports_outside_the_subtree_or_unsigned_are_refused(tmp_path: Path) -> None:
    net = make_network(tmp_path, provinces=2, cities_per_province=1)
    await net.init_all()
    await net.start_all()
    try:
        province = net.province_ids()[0]
        other_city = next(c for c in net.city_ids() if not c.startswith(province[:2]))
        node = net.nodes[province]
        view = RolloutView(node.config, CollectorRegistry())
        view.update_self("std-9", 0, node.clock.time_ms())
        # The province claims a release for a city of another province.
        view.entries[other_city] = NodeRelease(other_city, "std-9", 0, node.clock.time_ms())
        url = net.nodes[net.ministry_id].config.node.url + REPORT_PATH
        forger = NodeKey.generate()
        async with (
            signing_session(province, node.key, net.ministry_id) as s,
            signing_session(province, forger, net.ministry_id) as f,
        ):
            async with s.post(url, data=view.make_report(node.key, node.clock.time_ms())) as r:
                assert r.status == 403
                assert (await r.json())["error"]["code"] == "not_authorised"
            forged = view.make_report(forger, node.clock.time_ms())
            async with f.post(url, data=forged) as r:
                assert r.status == 401
                assert (await r.json())["error"]["code"] == "bad_signature"
            async with s.post(url, data=b"\x93garbage") as r:
                assert r.status == 400
        doc = await rollout(net)
        assert (doc["nodes"][other_city] or {}).get("release") != "std-9"
    finally:
        await net.stop_all()
