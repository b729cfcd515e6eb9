"""`lsnet simulate`: a national network (1 ministry, up to 31 provinces, up to ~330 cities) in one
process, filled with realistic records (`node.datagen`), timed until the ministry holds
everything, then checked (counts and content digests per city at its province and the ministry).

It reports the time to converge at the ministry, the throughput at each level (records applied
per second at the provinces together and at the ministry), the peak RSS of the process, the
number of open file descriptors and threads at the peak, and the per-node cost. The tree uses
real GB/T 2260 divisions: the 31 mainland provinces, their prefectures (for the four
municipalities, their district group), cities spread round-robin so every province has some.

What it does to scale to hundreds of nodes in one process (measured, see docs/benchmarks.md):
raises the soft open-files limit to the hard one (each node holds SQLite files, a listening
socket and client connections), stretches the nodes' periodic timers so that all of them
together do about as much as 20 nodes at the default pace (`pace_for_one_process`), and starts
the nodes and rolls out standards in bounded concurrent groups. What it does not do: no faults,
no attacks (the scenario tests cover those), and nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
import tomllib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from hierarchy_config import regions
from hierarchy_config.loader import load_config
from hierarchy_config.model import Level
from hierarchy_config.network_init import NetworkLayout, init_network
from node.app import Node
from node.datagen import generate_records
from node.db import sqlite_path
from node.demo import ephemeral_low, port_bases_from_env
from node.records import validate_record

MAINLAND = 31
INGEST_CHUNK = 1000
START_GROUP = 32  # nodes opened/started concurrently
DEFAULT_EXECUTOR_THREADS = 64
POLL_S = 0.25
# Periodic work (polls, heartbeats, probes, retries) is paced for one node per machine. A process
# running n nodes on about one core does as much of it in total as NODES_AT_DEFAULT_PACE nodes
# at the default intervals: each interval is stretched by n / NODES_AT_DEFAULT_PACE.
NODES_AT_DEFAULT_PACE = 20
PACED_INTERVALS: dict[str, dict[str, float]] = {  # section -> setting -> default seconds
    "standards": {"poll_interval_s": 5.0},
    "network": {"heartbeat_interval_s": 10.0, "e2e_probe_interval_s": 30.0},
    "sync": {"retry_interval_s": 2.0, "key_sync_interval_s": 30.0},
}
MAX_INTERVAL_S = 3600.0


class SimulationError(Exception):
    """The simulation could not be set up (e.g. more cities than the divisions provide)."""


@dataclass(frozen=True)
class SimOptions:
    provinces: int = MAINLAND
    cities: int = 330
    records_per_city: int = 100
    timeout_s: float = 1800.0
    seed: int = 1
    data_dir: Path | None = None
    standards: bool = True


def national_tree(provinces: int, cities: int) -> list[tuple[regions.Region, list[regions.Region]]]:
    """`provinces` mainland provinces (largest first) and `cities` prefectures spread round-robin
    over them, so each province gets at least one when cities >= provinces."""
    mainland = [p for p in regions.provinces() if int(p.code[:2]) < 70]
    pools: list[tuple[regions.Region, list[regions.Region]]] = []
    for p in mainland:
        prefs = list(regions.prefectures(p.code))
        if not prefs:  # a municipality: its district group stands for the city level
            prefs = [regions.Region(p.code[:2] + "0100", p.name, None, None)]
        pools.append((p, prefs))
    pools.sort(key=lambda pair: (-len(pair[1]), pair[0].code))
    chosen = pools[:provinces]
    if len(chosen) < provinces:
        raise SimulationError(f"only {len(chosen)} mainland provinces exist; ask for fewer")
    available = sum(len(prefs) for _, prefs in chosen)
    if cities < provinces or cities > available:
        raise SimulationError(
            f"cities must be between {provinces} (one per province) and {available} "
            f"(the prefectures of {provinces} provinces)"
        )
    picked: list[list[regions.Region]] = [[] for _ in chosen]
    left = cities
    depth = 0
    while left:
        for i, (_, prefs) in enumerate(chosen):
            if left and depth < len(prefs):
                picked[i].append(prefs[depth])
                left -= 1
        depth += 1
    return [(p, sorted(c, key=lambda r: r.code)) for (p, _), c in zip(chosen, picked, strict=True)]


def raise_open_files_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


async def _gather_bounded(coros: Sequence[Any], group: int = START_GROUP) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(coros), group):
        out.extend(await asyncio.gather(*coros[i : i + group]))
    return out


class PortHold:
    """Keeps `count` consecutive loopback ports bound (not listening) from layout until each
    node starts, so nothing else on a busy machine takes one meanwhile. The range lies below
    the kernel's ephemeral ports, which outgoing connections use (or within LSNET_PORT_RANGE)."""

    def __init__(self, count: int, attempts: int = 50) -> None:
        top = max(ephemeral_low(), 20_000 + count + 1)
        low, top = port_bases_from_env(count) or (20_000, top - count)
        rng = random.Random()
        for _ in range(attempts):
            base = rng.randrange(low, top)
            held: dict[int, socket.socket] = {}
            try:
                for port in range(base, base + count):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    held[port] = sock
                    sock.bind(("127.0.0.1", port))
            except OSError:
                for sock in held.values():
                    sock.close()
                continue
            self.base, self.held = base, held
            return
        raise SimulationError(f"no {count} consecutive free loopback ports found")

    def release(self, port: int) -> None:
        sock = self.held.pop(port, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for port in list(self.held):
            self.release(port)


def pace_for_one_process(layout: NetworkLayout) -> float:
    """Stretch every node's periodic intervals for a process that runs the whole layout; returns
    the factor (1.0 up to NODES_AT_DEFAULT_PACE nodes).

    At 362 nodes the defaults meant ~70 standards polls (each a TUF refresh of several HTTP
    fetches), ~70 rollout reports, ~36 heartbeats and ~180 retry pokes per second on one event
    loop: the loop fell behind, connections to it timed out, failed pushes retried, and the
    standards rollout never finished. Data and standards changes still travel at once (pushes
    follow writes after the debounce; children long-poll their parent's standards hint); only
    the safety-net timers slow down."""
    factor = max(1.0, len(layout.nodes) / NODES_AT_DEFAULT_PACE)
    if factor == 1.0:
        return factor
    for entry in layout.nodes:
        doc = tomllib.loads(entry.config_path.read_text(encoding="utf-8"))
        for section, settings in PACED_INTERVALS.items():
            table = doc.setdefault(section, {})
            for name, default in settings.items():
                table[name] = min(MAX_INTERVAL_S, float(table.get(name, default)) * factor)
        entry.config_path.write_bytes(tomli_w.dumps(doc).encode("utf-8"))
    return factor


async def start_national(layout: NetworkLayout, ports: PortHold | None = None) -> dict[str, Node]:
    nodes: dict[str, Node] = {}
    for entry in layout.nodes:
        nodes[entry.id] = Node.open(load_config(entry.config_path))
    await _init_databases(list(nodes.values()))

    async def start(node: Node) -> None:
        if ports is not None:
            ports.release(node.config.node.port)
        await node.start()

    for level in (Level.MINISTRY, Level.PROVINCE, Level.CITY):
        await _gather_bounded([start(nodes[e.id]) for e in layout.nodes if e.level is level])
    return nodes


async def _init_databases(nodes: list[Node]) -> None:
    """Migrate one SQLite database and copy its file to the others (an empty, migrated
    schema), then give each its own identity and epoch. Running every node's migrations would
    take minutes at national scale; Alembic also cannot run concurrently in one process."""
    template: Path | None = None
    for node in nodes:
        path = sqlite_path(node.config.node.database)
        if path is not None and template is not None and not path.exists():
            shutil.copyfile(template, path)
        await node.init_database()  # a no-op migration on a copy; creates the epoch row
        if path is not None and template is None:
            template = path.with_name("template.db")
            await asyncio.to_thread(_snapshot_schema, path, template)


def _snapshot_schema(src: Path, dst: Path) -> None:
    """A copy of a freshly migrated database without its identity row."""
    conn = sqlite3.connect(src)
    try:
        conn.execute(f"VACUUM INTO '{dst}'")
    finally:
        conn.close()
    copy = sqlite3.connect(dst)
    try:
        copy.execute("DELETE FROM node_meta")
        for (table,) in copy.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN "
            "('alembic_version', 'sqlite_sequence', 'node_meta')"
        ).fetchall():
            copy.execute(f'DELETE FROM "{table}"')
        copy.commit()
    finally:
        copy.close()


async def roll_out_concurrently(layout: NetworkLayout, nodes: dict[str, Node]) -> None:
    """Refresh standards level by level (parents first, as `node.demo.roll_out_standards`), the
    nodes of one level concurrently: one after another took ~1 s per node, minutes for a
    country."""
    for level in (Level.MINISTRY, Level.PROVINCE, Level.CITY):
        channels = [nodes[e.id].standards for e in layout.nodes if e.level is level]
        await _gather_bounded([c.refresh() for c in channels if c is not None])


async def stop_national(nodes: dict[str, Node]) -> None:
    await _gather_bounded([n.stop() for n in reversed(list(nodes.values()))])


async def _fill(node: Node, n: int, seed: int) -> int:
    recs = [validate_record(o) for o in generate_records(node.config.node_id, n, seed=seed)]
    for i in range(0, len(recs), INGEST_CHUNK):
        await node.ingest(recs[i : i + INGEST_CHUNK])
        await asyncio.sleep(0)
    return len(recs)


async def _applied(nodes: dict[str, Node], holder: str, targets: dict[str, tuple[str, int]]) -> int:
    marks = await nodes[holder].sync_store.watermarks_for(list(targets))
    have = {(m.origin, m.epoch): m.seq for m in marks}
    return sum(min(have.get((c, ep), 0), last) for c, (ep, last) in targets.items())


async def run_simulation(opts: SimOptions, progress: Any = None) -> dict[str, Any]:
    """Build, fill and converge the network; return the report (raises SimulationError)."""
    tree = national_tree(opts.provinces, opts.cities)
    fds_before, fds_after = raise_open_files_limit()
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if opts.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="lsnet-sim-")
        root = Path(tmp.name) / "network"
    else:
        root = opts.data_dir
    count = 1 + len(tree) + opts.cities
    say = progress or (lambda _msg: None)
    t0 = time.monotonic()
    ports = PortHold(count)
    # Blocking work (TUF refreshes, migrations) goes to the loop's default executor, sized for
    # one node per process (cores + 4 threads); hundreds of nodes queue behind each other there.
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=DEFAULT_EXECUTOR_THREADS))
    nodes: dict[str, Node] = {}
    try:
        layout = init_network(root, base_port=ports.base, tree=tree, standards=opts.standards)
        pace = pace_for_one_process(layout)
        say(f"{count} nodes laid out in {time.monotonic() - t0:.1f}s; starting them ...")
        t1 = time.monotonic()
        nodes = await start_national(layout, ports)
        say(f"nodes started in {time.monotonic() - t1:.1f}s; rolling out standards ...")
        if opts.standards:
            await roll_out_concurrently(layout, nodes)
        started = time.monotonic()
        rss_idle = peak_rss_mib()
        say(f"started in {started - t1:.1f}s (peak RSS {rss_idle:.0f} MiB); filling cities ...")
        cities = layout.cities()
        sizes = await _gather_bounded(
            [_fill(nodes[c.id], opts.records_per_city, opts.seed) for c in cities], 16
        )
        filled = time.monotonic()
        targets: dict[str, tuple[str, int]] = {}
        for c in cities:
            meta = await nodes[c.id].store.meta()
            targets[c.id] = (meta.epoch, meta.last_seq)
        total = sum(last for _, last in targets.values())
        by_province: dict[str, dict[str, tuple[str, int]]] = {}
        for c in cities:
            assert c.parent_id is not None
            by_province.setdefault(c.parent_id, {})[c.id] = targets[c.id]
        ministry = layout.ministry().id
        say(
            f"{sum(sizes)} records written in {filled - started:.1f}s; waiting for the ministry ..."
        )
        provinces_done_at: float | None = None
        deadline = filled + opts.timeout_s
        converged = False
        while time.monotonic() < deadline:
            at_top = await _applied(nodes, ministry, targets)
            if provinces_done_at is None:
                below = 0
                for p, t in by_province.items():
                    below += await _applied(nodes, p, t)
                if below >= total:
                    provinces_done_at = time.monotonic()
            if at_top >= total and provinces_done_at is not None:
                converged = True
                break
            await asyncio.sleep(POLL_S)
        done = time.monotonic()
        fds_peak = open_fds()
        threads = threading.active_count()
        problems: list[str] = [] if converged else ["the ministry did not converge in time"]
        if converged:
            problems += await _check(layout, nodes)
        top_release = nodes[ministry].standards_version
        behind = [e.id for e in layout.nodes if nodes[e.id].standards_version != top_release]
        if opts.standards and behind:
            problems.append(f"{len(behind)} nodes do not run the ministry's standards release")
        return {
            "converged": converged and not problems,
            "problems": problems,
            "nodes": count,
            "provinces": len(tree),
            "cities": len(cities),
            "records_per_city": opts.records_per_city,
            "records_total": sum(sizes),
            "standards_release": top_release if opts.standards else "built-in",
            "seconds_to_start": round(started - t1, 2),
            "seconds_to_fill": round(filled - started, 2),
            "seconds_to_converge_from_fill_start": round(done - started, 2),
            "seconds_after_fill_to_converge": round(done - filled, 2),
            "seconds_provinces_complete_from_fill_start": (
                round(provinces_done_at - started, 2) if provinces_done_at else None
            ),
            "records_per_s_at_provinces": (
                round(total / (provinces_done_at - started)) if provinces_done_at else None
            ),
            "records_per_s_at_ministry": round(total / (done - started)) if converged else None,
            "peak_rss_mib": round(peak_rss_mib()),
            "peak_rss_mib_started_idle": round(rss_idle),
            "rss_per_node_mib_idle": round(rss_idle / count, 2),
            "open_fds": fds_peak,
            "open_files_limit": {"before": fds_before, "after": fds_after},
            "threads": threads,
            "cpus": os.cpu_count(),
            "intervals_stretched_by": round(pace, 2),
        }
    finally:
        ports.close()
        await stop_national(nodes)
        if tmp is not None:
            tmp.cleanup()


async def _check(layout: NetworkLayout, nodes: dict[str, Node]) -> list[str]:
    """Each city's records, count and content digest, at its province and at the ministry."""
    problems: list[str] = []
    ministry = await nodes[layout.ministry().id].store.origin_digests()
    by_prov = {p.id: await nodes[p.id].store.origin_digests() for p in layout.provinces()}
    for c in layout.cities():
        own = (await nodes[c.id].store.origin_digests()).get(c.id)
        assert c.parent_id is not None
        for name, held in (("province", by_prov[c.parent_id]), ("ministry", ministry)):
            got = held.get(c.id)
            if own is None or got is None or (got.count, got.digest) != (own.count, own.digest):
                problems.append(f"the {name} does not hold exactly city {c.id}'s records")
    return problems
