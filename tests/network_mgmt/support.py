"""Helpers for network-management tests: a network with fast heartbeats, HTTP reads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from hierarchy_config.model import NetworkConfig
from node.app import Node
from tests.support.network import TestNet, make_network

INTERVAL_S = 0.3
MISSED = 10  # 3 s: no false 'down' on a loaded CI machine


def fast_network(
    tmp_path: Path,
    *,
    provinces: int = 1,
    cities: int = 2,
    database_for: Callable[[str], str] | None = None,
    **net: Any,
) -> TestNet:
    """A network whose nodes send a heartbeat every 0.3 s and are down after 10 missed (3 s)."""
    testnet = make_network(
        tmp_path,
        provinces=provinces,
        cities_per_province=cities,
        database_for=database_for,
        overrides={"retry_interval_s": 0.2, "backoff_max_s": 0.5, "backoff_initial_s": 0.1},
    )
    net.setdefault("e2e_probe_interval_s", 0)  # probes would change exact backlog counts
    net.setdefault("heartbeat_interval_s", INTERVAL_S)
    net.setdefault("down_after_missed", MISSED)
    settings = NetworkConfig(**net)
    for node_id, cfg in testnet.configs.items():
        testnet.configs[node_id] = cfg.model_copy(update={"network": settings})
    return testnet


async def get_json(node: Node, path: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.get(node.config.node.url + path, headers=headers) as r,
    ):
        return r.status, await r.json()


async def post_json(
    node: Node, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.post(node.config.node.url + path, json=body, headers=headers) as r,
    ):
        return r.status, await r.json()


def by_id(tree: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["node_id"]: n for n in tree["nodes"]}
