"""Real processes through a seeded schedule of process faults — SIGSTOP/SIGCONT of the province,
kill -9 of a city just after it accepted writes (while it sends), of the province while it
applies, of the ministry while it acknowledges, and a province whose clock runs 15 minutes
ahead — then heal, converge, and judge with every checker of `tests.support.checkers` on a
Jepsen-style history of the writes.

The seed is printed; LSNET_CHAOS_SEED replays the choices (the OS decides thread timing).
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Sequence
from typing import Any

import pytest

from node.clock import CLOCK_OFFSET_ENV
from node.datagen import generate_records
from tests.process.conftest import FAST_RETRY, SMALL_TRANSFERS, MakeNet
from tests.process.test_kill9 import chaos_seed
from tests.support.final import final_check_offline
from tests.support.history import History
from tests.support.procs import NodeProc, RequestFailed, chunked, poll

pytestmark = pytest.mark.process

CHUNK = 20
RECORDS = 240  # per city: 12 chunks


class Writer:
    """Posts chunks to cities and records every attempt in the history."""

    def __init__(self, history: History, cities: Sequence[NodeProc], seed: int) -> None:
        self.history = history
        self.pending: dict[str, list[Sequence[dict[str, Any]]]] = {
            c.node_id: list(chunked(generate_records(c.node_id, RECORDS, seed=seed % 1000), CHUNK))
            for c in cities
        }
        self.cities = {c.node_id: c for c in cities}
        self.retry: dict[str, list[Sequence[dict[str, Any]]]] = {c.node_id: [] for c in cities}

    def post(self, city_id: str) -> None:
        queue = self.retry[city_id] or self.pending[city_id]
        if not queue:
            return
        chunk = queue.pop(0)
        op = self.history.invoke("writer", city_id, chunk)
        try:
            answer = self.cities[city_id].post_records(chunk)
        except RequestFailed as exc:
            self.history.info(op, str(exc))
            self.retry[city_id].append(chunk)  # identical records again are idempotent
            return
        if answer.status == 200:
            self.history.ok(op)
        else:
            self.history.fail(op, f"HTTP {answer.status}: {answer.body}")

    def round(self, n: int = 1) -> None:
        for _ in range(n):
            for city_id in self.cities:
                self.post(city_id)


def test_pause_kill_and_clock_skew_then_all_checkers_green(make_procnet: MakeNet) -> None:
    seed = chaos_seed()
    rng = random.Random(seed)
    net = make_procnet(
        tune={"sync": {**FAST_RETRY, "request_timeout_s": 2.0}, "limits": SMALL_TRANSFERS}
    )
    net.start_all()
    province, cities, ministry = net.provinces()[0], net.cities(), net.ministry
    history = History()
    writer = Writer(history, cities, seed)
    faults: list[str] = []
    try:
        writer.round()
        # Pause: the province stops answering (a long GC-like stall); cities keep accepting.
        assert province.proc is not None
        province.proc.send_signal(signal.SIGSTOP)
        faults.append("sigstop province")
        writer.round(2)
        province.proc.send_signal(signal.SIGCONT)
        # kill -9 of a city right after it accepted a chunk: its push is on the way.
        victim = rng.choice(cities)
        writer.post(victim.node_id)
        victim.kill9()
        faults.append(f"kill -9 {victim.node_id} after a write")
        victim.start(timeout_s=120)
        writer.round()
        # kill -9 of the ministry while the province pushes (acknowledgements in flight).
        writer.round()
        poll(lambda: province.status()["backlog"] > 0 or None, 10, "province had no backlog")
        ministry.kill9()
        faults.append("kill -9 ministry while acknowledging")
        writer.round()
        ministry.start(timeout_s=120)
        # kill -9 of the province while the cities' backlog is being applied; it comes back
        # with its clock 15 minutes ahead, beyond the allowed skew: it refuses pushes as stale.
        writer.round(2)
        province.kill9()
        faults.append("kill -9 province while applying")
        province.env = {CLOCK_OFFSET_ENV: "900"}
        province.start(timeout_s=120)
        faults.append("province clock +900 s")
        writer.round()

        def refused_as_stale() -> bool:
            doc = cities[0].status()
            return "stale" in str((doc.get("parent") or {}).get("last_error") or "")

        poll(refused_as_stale, 20, "a skewed parent did not refuse pushes as stale")
        province.terminate()
        province.env = {}
        province.start(timeout_s=120)
        faults.append("province clock reset")
        while any(writer.pending.values()) or any(writer.retry.values()):
            writer.round()
        net.wait_converged(timeout_s=60)
        codes = net.terminate_all()
        assert set(codes.values()) == {0}, codes
    finally:
        for node in net.nodes.values():
            if node.running and node.proc is not None:
                node.proc.send_signal(signal.SIGCONT)
    configs = {n.node_id: n.config for n in net.nodes.values()}
    report = asyncio.run(final_check_offline(configs, history))
    print(f"seed {seed}; faults: {faults}; history: {history.counts()}")
    print(report.summary())
    report.assert_green()
    assert report.by_name("set").stats["accepted"] == 2 * RECORDS
