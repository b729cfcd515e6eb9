"""One province, two cities and the ministry converge over real HTTP on both backends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from node.datagen import generate_records
from sync.scrub import scrub
from tests.support.network import make_network


async def test_tree_converges_and_verifies(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    net = make_network(tmp_path, database_for=database_for)
    await net.init_all()
    await net.start_all()
    try:
        for i, city in enumerate(net.city_ids()):
            await net.ingest(city, generate_records(city, 300, seed=i))
        await net.wait_converged()
        ministry = await net.digests(net.ministry_id)
        for city in net.city_ids():
            own = (await net.digests(city))[city]
            assert ministry[city] == own
            assert own.count == 300
        node = net.nodes[net.ministry_id]
        report = await scrub(node.sync_store, node.config.subtree_keys())
        assert report.ok, report.problems
        assert report.changes == 600
    finally:
        await net.stop_all()
