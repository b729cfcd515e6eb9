"""A whole lsnet network in the test's event loop: real aiohttp servers on 127.0.0.1, real
databases (SQLite files, or PostgreSQL databases when the backend says so), real signatures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hierarchy_config.loader import load_config
from hierarchy_config.model import Level, NodeConfig
from hierarchy_config.network_init import NetworkLayout, init_network
from node.app import Node
from node.clock import Clock
from node.demo import free_port_range
from node.records import ValidRecord, validate_record
from node.store import OriginDigest
from sync.transport import Transport


@dataclass
class TestNet:
    __test__ = False  # not a test class, despite the name

    layout: NetworkLayout
    configs: dict[str, NodeConfig]
    nodes: dict[str, Node] = field(default_factory=dict)
    transports: dict[str, Callable[[], Transport]] = field(default_factory=dict)
    clock: Clock | None = None

    @property
    def ministry_id(self) -> str:
        return self.layout.ministry().id

    def city_ids(self) -> list[str]:
        return [c.id for c in self.layout.cities()]

    def province_ids(self) -> list[str]:
        return [p.id for p in self.layout.provinces()]

    def open(self, node_id: str) -> Node:
        make = self.transports.get(node_id)
        return Node.open(
            self.configs[node_id], clock=self.clock, transport=make() if make else None
        )

    async def init_all(self) -> None:
        for node_id in self.configs:
            node = self.open(node_id)
            await node.init_database()
            await node.stop()

    async def start(self, node_id: str) -> Node:
        node = self.open(node_id)
        await node.start()
        self.nodes[node_id] = node
        return node

    async def start_all(self) -> None:
        for level in (Level.MINISTRY, Level.PROVINCE, Level.CITY):
            for entry in self.layout.nodes:
                if entry.level is level:
                    await self.start(entry.id)

    async def stop(self, node_id: str) -> None:
        node = self.nodes.pop(node_id)
        await node.stop()

    async def stop_all(self) -> None:
        for node_id in list(self.nodes)[::-1]:
            await self.stop(node_id)

    async def ingest(self, node_id: str, objs: list[dict[str, object]]) -> None:
        recs: list[ValidRecord] = [validate_record(o) for o in objs]
        await self.nodes[node_id].ingest(recs)

    async def digests(self, node_id: str) -> dict[str, OriginDigest]:
        return await self.nodes[node_id].store.origin_digests()

    async def converged(self) -> bool:
        """Every ancestor of every city has applied all of the city's changes."""
        for city in self.layout.cities():
            meta = await self.nodes[city.id].store.meta()
            for holder in (city.parent_id, self.ministry_id):
                assert holder is not None
                marks = await self.nodes[holder].sync_store.watermarks_for([city.id])
                applied = {w.epoch: w.seq for w in marks}.get(meta.epoch, 0)
                if applied < meta.last_seq:
                    return False
        return True

    async def wait_converged(self, timeout_s: float = 30.0) -> None:
        await wait_until(self.converged, timeout_s, "network did not converge")


async def wait_until(
    predicate: Callable[[], object], timeout_s: float, message: str, interval_s: float = 0.02
) -> None:
    """Poll `predicate` (sync or async) until true, failing after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} within {timeout_s}s")
        await asyncio.sleep(interval_s)


def make_network(
    root: Path,
    *,
    provinces: int = 1,
    cities_per_province: int = 2,
    database_for: Callable[[str], str] | None = None,
    clock: Clock | None = None,
    overrides: dict[str, object] | None = None,
    network: dict[str, object] | None = None,
) -> TestNet:
    """Write a network with init_network and load its configs, optionally swapping databases
    (e.g. for PostgreSQL), sync settings (`overrides`) and `[network]` settings (`network`, e.g.
    a short `e2e_probe_interval_s`)."""
    count = 1 + provinces * (1 + cities_per_province)
    layout = init_network(
        root / "net",
        provinces=provinces,
        cities_per_province=cities_per_province,
        base_port=free_port_range(count),
    )
    configs = {}
    for entry in layout.nodes:
        cfg = load_config(entry.config_path)
        if database_for is not None:
            cfg = cfg.model_copy(
                update={"node": cfg.node.model_copy(update={"database": database_for(entry.id)})}
            )
        if overrides:
            cfg = cfg.model_copy(update={"sync": cfg.sync.model_copy(update=overrides)})
        if network:
            settings = type(cfg.network)(**{**cfg.network.model_dump(), **network})
            cfg = cfg.model_copy(update={"network": settings})
        configs[entry.id] = cfg
    return TestNet(layout=layout, configs=configs, clock=clock)
