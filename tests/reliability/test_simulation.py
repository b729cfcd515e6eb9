"""Deterministic simulation (reliability.md C5 L0): seeded schedules of writes, transfers,
anti-entropy, lost requests and answers, duplicates, late (reordered) requests, partitions and
crash/restarts, on one fake clock with an in-memory transport; then heal, quiesce, and judge with
every checker. Each run prints its seed; LSNET_SIM_SEED=<seed> replays one schedule exactly,
LSNET_SIM_SEEDS=<n> runs more of them (the default run: 12; try 300)."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from hierarchy_config.model import NodeConfig
from node.clock import FakeClock
from tests.support.final import check_nodes
from tests.support.history import History
from tests.support.network import make_network
from tests.support.sim import Faults, SimNet, Workload, copy_databases

STEPS = 60
_replay = os.environ.get("LSNET_SIM_SEED")
SEEDS = (
    [int(_replay)] if _replay else list(range(1, 1 + int(os.environ.get("LSNET_SIM_SEEDS", "12"))))
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, NodeConfig]:
    net = make_network(tmp_path_factory.mktemp("sim"), provinces=2, cities_per_province=2)
    asyncio.run(net.init_all())
    return net.configs


async def run_schedule(seed: int, template: dict[str, NodeConfig], root: Path) -> str:
    rng = random.Random(seed)
    clock = FakeClock()
    net = SimNet(copy_databases(template, root), rng, clock)
    await net.start_all()
    history = History()
    work = Workload(rng, history)
    cities = net.cities()
    uplinks = [n for n, c in net.configs.items() if c.parent is not None]
    try:
        for _ in range(STEPS):
            clock.advance(rng.uniform(0.05, 2.0))
            action = rng.choices(
                ["write", "transfer", "ae", "late", "cut", "heal", "crash"],
                weights=[30, 40, 5, 6, 4, 6, 3],
            )[0]
            if action == "write":
                await work.write(net, rng.choice(cities))
            elif action == "transfer":
                await net.transfer(rng.choice(uplinks))
            elif action == "ae":
                await net.anti_entropy(rng.choice(uplinks))
            elif action == "late":
                await net.deliver_one_delayed()
            elif action == "cut":
                net.blocked.add(rng.choice(uplinks))
                net.note("partition")
            elif action == "heal" and net.blocked:
                net.blocked.discard(rng.choice(sorted(net.blocked)))
            elif action == "crash":
                await net.crash_restart(rng.choice(sorted(net.configs)))
                net.note("crash")
            net.trace.append(action)
        # Heal: no more faults, every late request arrives, every link is open; then quiesce.
        net.blocked.clear()
        net.faults = Faults(0.0, 0.0, 0.0, 0.0)
        while net.delayed:
            await net.deliver_one_delayed()
        for _ in range(300):
            if await net.converged():
                break
            clock.advance(0.5)
            for node_id in net.children_first():
                await net.transfer(node_id)
        assert await net.converged(), f"seed {seed}: no convergence after healing"
        for node_id in net.children_first():
            await net.anti_entropy(node_id)
            ae = net.nodes[node_id].anti_entropy
            assert ae is None or (ae.last is not None and ae.last.divergent == 0), (
                f"seed {seed}: anti-entropy found divergence at {node_id}: {ae.last}"
            )
        report = await check_nodes(net.nodes, history)
        assert report.ok, f"seed {seed} (replay with LSNET_SIM_SEED={seed}):\n{report.summary()}"
        return f"seed {seed}: {history.counts()} faults {dict(sorted(net.injected.items()))}"
    finally:
        await net.stop_all()


@pytest.mark.parametrize("seed", SEEDS)
async def test_seeded_schedule(seed: int, template: dict[str, NodeConfig], tmp_path: Path) -> None:
    print(f"simulation seed {seed} (replay with LSNET_SIM_SEED={seed})")
    print(await run_schedule(seed, template, tmp_path))


async def test_a_seed_replays_the_same_schedule(
    template: dict[str, NodeConfig], tmp_path: Path
) -> None:
    first = await run_schedule(7, template, tmp_path / "a")
    again = await run_schedule(7, template, tmp_path / "b")
    assert first == again
