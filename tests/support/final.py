"""The final phase of a scenario (reliability.md C4.2) on an in-process `TestNet`: wait for
quiescence with a deadline (exceeding it is itself a finding), read every node, scrub every
node's stored batches, and run all checkers. Reads only."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from hierarchy_config.model import NodeConfig
from node.app import Node
from node.db import Database
from security.keys import load_signing_key
from sync.scrub import ScrubReport, scrub
from sync.store import SyncStore
from tests.support.checkers import CheckReport, check_all
from tests.support.history import History
from tests.support.network import TestNet
from tests.support.snapshot import NodeSnapshot, read_snapshot, read_snapshot_offline


def parents_of(net: TestNet) -> dict[str, str | None]:
    return {
        node_id: (cfg.parent.id if cfg.parent is not None else None)
        for node_id, cfg in net.configs.items()
    }


async def read_all(
    nodes: Mapping[str, Node],
) -> tuple[dict[str, NodeSnapshot], dict[str, ScrubReport]]:
    snaps: dict[str, NodeSnapshot] = {}
    scrubs: dict[str, ScrubReport] = {}
    for node_id, node in nodes.items():
        snaps[node_id] = await read_snapshot(node.db)
        keys = dict(node.config.subtree_keys())
        keys[node_id] = node.key.verify_key
        scrubs[node_id] = await scrub(node.sync_store, keys)
    return snaps, scrubs


async def final_check(net: TestNet, history: History, *, timeout_s: float = 30.0) -> CheckReport:
    """Wait until every ancestor holds every change of every city, then judge."""
    await net.wait_converged(timeout_s=timeout_s)
    return await check_nodes(net.nodes, history)


async def check_nodes(nodes: Mapping[str, Node], history: History) -> CheckReport:
    """Judge running nodes (in-process) right now."""
    snaps, scrubs = await read_all(nodes)
    parents = {n: (x.config.parent.id if x.config.parent else None) for n, x in nodes.items()}
    return check_all(history, snaps, parents, scrubs)


async def final_check_offline(
    configs: Mapping[str, NodeConfig], history: History, urls: Mapping[str, str] | None = None
) -> CheckReport:
    """Judge stopped nodes from their database files (or the copies named in `urls`)."""
    snaps: dict[str, NodeSnapshot] = {}
    scrubs: dict[str, ScrubReport] = {}
    for node_id, cfg in configs.items():
        url = (urls or {}).get(node_id, cfg.node.database)
        snaps[node_id] = await read_snapshot_offline(url)
        keys = dict(cfg.subtree_keys())
        keys[node_id] = load_signing_key(cfg.node.key_file).verify_key
        db = Database(url)
        try:
            scrubs[node_id] = await scrub(SyncStore(db), keys)
        finally:
            await asyncio.to_thread(db.close)
    parents = {n: (c.parent.id if c.parent is not None else None) for n, c in configs.items()}
    return check_all(history, snaps, parents, scrubs)
