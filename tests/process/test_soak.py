"""Soak: real node processes, several cities writing continuously while a seeded fault schedule
runs — link faults in fault proxies (every child→parent link goes through one), kill -9 and
restart, SIGSTOP/SIGCONT — then heal, converge and judge with every checker. Prints a report:
records written, faults injected, time to converge after the last fault, peak memory per node.

Bounded: LSNET_SOAK_S seconds of faults (default 20; e.g. LSNET_SOAK_S=600 for a long run),
LSNET_CHAOS_SEED replays the schedule's choices (the OS decides thread timing).
Reproduce: LSNET_SOAK_S=60 .venv/bin/python -m pytest -q -s tests/process/test_soak.py
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from node.datagen import generate_records
from tests.process.conftest import FAST_RETRY, MakeNet
from tests.process.test_kill9 import chaos_seed
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.final import final_check_offline
from tests.support.history import History
from tests.support.procs import NodeProc, RequestFailed, poll, tune_config

pytestmark = pytest.mark.process

SOAK_S = float(os.environ.get("LSNET_SOAK_S", "20"))
CHUNK = 10
LINK_FAULTS = [
    Fault.BLACKHOLE,
    Fault.REFUSE,
    Fault.DROP_RESPONSE,
    Fault.RESET_REQUEST,
    Fault.RESET_RESPONSE,
    Fault.DUPLICATE,
    Fault.CORRUPT,
    Fault.LATENCY,
    Fault.SLOW_DRIP,
]
T = TypeVar("T")


class ProxyLoop:
    """The fault proxies run on an event loop in a thread of their own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def peak_rss_kib(node: NodeProc) -> int:
    """VmHWM (peak resident memory) of the node's current process, in KiB; 0 if unknown."""
    if node.proc is None or node.proc.poll() is not None:
        return 0
    try:
        for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def test_soak_mixed_faults_then_all_checkers_green(make_procnet: MakeNet) -> None:
    seed = chaos_seed()
    rng = random.Random(seed)
    tune = {
        "sync": {**FAST_RETRY, "request_timeout_s": 2.0, "anti_entropy_interval_s": 2.0},
        "limits": {"max_batch_changes": 50},
    }
    net = make_procnet(cities_per_province=3, tune=tune)
    proxies_loop = ProxyLoop()
    proxies: dict[str, FaultProxy] = {}
    history = History()
    faults: Counter[str] = Counter()
    peak: dict[str, int] = {}
    try:
        for node in net.nodes.values():
            if node.config.parent is None:
                continue
            target = net.nodes[node.config.parent.id].config.node
            proxy = FaultProxy(target.host, target.port, name=node.node_id)
            proxies_loop.run(proxy.start())
            proxies[node.node_id] = proxy
            tune_config(node.config_path, parent={"url": proxy.url})
        net.start_all()
        cities = net.cities()
        stop_writing = threading.Event()
        written = Counter[str]()

        def writer(city: NodeProc, wseed: int) -> None:
            pool = generate_records(city.node_id, 5000, seed=wseed)
            retry: list[list[dict[str, Any]]] = []
            i = 0
            while (not stop_writing.is_set() or retry) and i < len(pool):
                if retry:
                    chunk = retry.pop(0)
                else:
                    chunk, i = pool[i : i + CHUNK], i + CHUNK
                op = history.invoke("writer", city.node_id, chunk)
                try:
                    answer = city.post_records(chunk, timeout_s=5.0)
                except RequestFailed as exc:
                    history.info(op, str(exc))
                    retry.append(chunk)
                    # The city is down (killed, restarting): wait until it answers again.
                    poll(lambda: city.healthy() or None, 150, f"{city} did not come back")
                    continue
                if answer.status == 200:
                    history.ok(op)
                    written[city.node_id] += len(chunk)
                else:
                    history.fail(op, str(answer.status))
                    retry.append(chunk)  # e.g. 503 while starting: try again

        threads = [
            threading.Thread(target=writer, args=(c, rng.randrange(1 << 30)), daemon=True)
            for c in cities
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + SOAK_S
        while time.monotonic() < deadline:
            for node in net.nodes.values():
                peak[node.node_id] = max(peak.get(node.node_id, 0), peak_rss_kib(node))
            kind = rng.choice(["link", "link", "link", "kill", "pause"])
            if kind == "link":
                name = rng.choice(sorted(proxies))
                fault = rng.choice(LINK_FAULTS)
                proxies_loop.run(proxies[name].set(fault))
                faults[f"link {fault.value}"] += 1
                time.sleep(rng.uniform(0.3, 1.5))  # how long the fault lasts
                proxies_loop.run(proxies[name].heal())
            elif kind == "kill":
                victim = rng.choice([*cities, *net.provinces()])
                victim.kill9()
                faults[f"kill -9 {victim.config.level.value}"] += 1
                victim.start(timeout_s=120)  # slow on a loaded machine
            else:
                province = net.provinces()[0]
                assert province.proc is not None
                province.proc.send_signal(signal.SIGSTOP)
                time.sleep(rng.uniform(0.3, 1.0))  # how long the pause lasts
                province.proc.send_signal(signal.SIGCONT)
                faults["sigstop province"] += 1
        last_fault = time.monotonic()
        stop_writing.set()
        for t in threads:
            t.join(timeout=60)
        net.wait_converged(timeout_s=90)
        converge_s = time.monotonic() - last_fault
        for node in net.nodes.values():
            peak[node.node_id] = max(peak.get(node.node_id, 0), peak_rss_kib(node))
        codes = net.terminate_all()
        assert set(codes.values()) == {0}, codes
    finally:
        for node in net.nodes.values():
            if node.running and node.proc is not None:
                node.proc.send_signal(signal.SIGCONT)
        for proxy in proxies.values():
            proxies_loop.run(proxy.stop())
        proxies_loop.close()
    configs = {n.node_id: n.config for n in net.nodes.values()}
    report = asyncio.run(final_check_offline(configs, history))
    lines = [
        f"soak: {SOAK_S:.0f} s of faults, seed {seed}",
        f"records accepted: {sum(written.values())} ({dict(sorted(written.items()))})",
        f"write attempts: {history.counts()}",
        f"faults injected: {sum(faults.values())} {dict(sorted(faults.items()))}",
        f"converged {converge_s:.1f} s after the last fault",
        "peak RSS per node (MiB): "
        + ", ".join(f"{n} {kib / 1024:.0f}" for n, kib in sorted(peak.items())),
        report.summary(),
    ]
    print("\n".join(lines))
    report.assert_green()
    assert sum(faults.values()) >= 3
