"""Deterministic simulation (reliability.md C5 L0): seeded schedules of writes, transfers,
anti-entropy, lost requests and answers, duplicates, late (reordered) requests, partitions and
crash/restarts, on one fake clock with an in-memory transport; then heal, quiesce, and judge with
every checker.

The default run plays 300 schedules (seeds 1..300) in batches of 20, one test per batch; a batch
plays all its seeds and fails naming every failing seed. Each schedule prints its seed and what
it did; LSNET_SIM_SEED=<seed> replays one schedule exactly, LSNET_SIM_SEEDS=<n> plays seeds
1..n instead (e.g. 3000 for a long night)."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import traceback
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection, select

from node.app import Node
from node.clock import FakeClock
from node.schema import apply_log
from tests.support.final import check_nodes
from tests.support.history import History
from tests.support.network import make_network
from tests.support.sim import (
    Faults,
    SimNet,
    SimTemplate,
    Workload,
    copy_databases,
    fewer_gc_passes,
)

STEPS = 60
BATCH = 20
_replay = os.environ.get("LSNET_SIM_SEED")
SEEDS = (
    [int(_replay)] if _replay else list(range(1, 1 + int(os.environ.get("LSNET_SIM_SEEDS", "300"))))
)
BATCHES = [SEEDS[i : i + BATCH] for i in range(0, len(SEEDS), BATCH)]

Tamper = Callable[[dict[str, Node]], Awaitable[None]]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> SimTemplate:
    net = make_network(tmp_path_factory.mktemp("sim"), provinces=2, cities_per_province=2)
    asyncio.run(net.init_all())
    return SimTemplate.of(net.configs)


async def run_schedule(
    seed: int, template: SimTemplate, root: Path, *, tamper: Tamper | None = None
) -> str:
    """Play one seeded schedule, heal, quiesce and judge; return what happened (the same text
    for the same seed). `tamper` plants a bug in the nodes just before they are judged."""
    rng = random.Random(seed)
    clock = FakeClock()
    net = SimNet(copy_databases(template, root), rng, clock, template)
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
        if tamper is not None:
            await tamper(net.nodes)
        report = await check_nodes(net.nodes, history)
        assert report.ok, f"seed {seed} (replay with LSNET_SIM_SEED={seed}):\n{report.summary()}"
        trace = zlib.crc32(" ".join(net.trace).encode())
        return (
            f"seed {seed}: {history.counts()} faults {dict(sorted(net.injected.items()))} "
            f"trace {trace:08x}"
        )
    finally:
        await net.stop_all()


async def run_batch(
    seeds: list[int], template: SimTemplate, root: Path, *, tamper: Tamper | None = None
) -> list[str]:
    """Play every seed; return one failure text per failing seed (its replay command first).
    A passing seed's files are removed; a failing seed's stay under `root` for inspection."""
    failures = []
    for seed in seeds:
        print(f"simulation seed {seed} (replay with LSNET_SIM_SEED={seed})")
        where = root / f"seed-{seed}"
        try:
            print(await run_schedule(seed, template, where, tamper=tamper))
        except Exception as exc:  # any failure of a seed is a finding: name the seed
            detail = "".join(traceback.format_exception_only(exc)).strip()
            if not isinstance(exc, AssertionError):
                detail = "".join(traceback.format_exception(exc))
            failures.append(f"seed {seed} FAILED (replay: LSNET_SIM_SEED={seed}): {detail}")
            print(failures[-1])
        else:
            shutil.rmtree(where, ignore_errors=True)
    return failures


@pytest.mark.parametrize("seeds", BATCHES, ids=lambda b: f"seeds-{b[0]}-{b[-1]}")
async def test_seeded_schedules(seeds: list[int], template: SimTemplate, tmp_path: Path) -> None:
    with fewer_gc_passes():
        failures = await run_batch(seeds, template, tmp_path)
    assert not failures, f"{len(failures)} of {len(seeds)} seeds failed:\n" + "\n\n".join(failures)


async def test_a_seed_replays_the_same_schedule(template: SimTemplate, tmp_path: Path) -> None:
    first = await run_schedule(7, template, tmp_path / "a")
    again = await run_schedule(7, template, tmp_path / "b")
    assert first == again


async def test_a_batch_names_the_seed_that_fails(template: SimTemplate, tmp_path: Path) -> None:
    """The fast path (inline transactions, shared statement cache, no fsync) still lets the
    checkers fail: a double apply planted at a province after the schedule is caught, and the
    batch names the seed and how to replay it."""
    province = next(n for n, c in template.configs.items() if c.parent is not None and c.children)

    def replay_first_apply(conn: Connection) -> None:
        row = conn.execute(select(apply_log).order_by(apply_log.c.id).limit(1)).mappings().one()
        conn.execute(apply_log.insert().values(**{k: v for k, v in row.items() if k != "id"}))

    async def plant(nodes: dict[str, Node]) -> None:
        await nodes[province].db.write(replay_first_apply)

    failures = await run_batch([3, 4], template, tmp_path, tamper=plant)
    assert len(failures) == 2
    assert failures[0].startswith("seed 3 FAILED (replay: LSNET_SIM_SEED=3)")
    assert "applied more than once" in failures[0]
    assert (tmp_path / "seed-3").is_dir()  # a failing seed's databases are kept
