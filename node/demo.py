"""`lsnet demo`: a whole network in one process, filled, synced and verified end to end.

Builds 1 ministry, N provinces and M cities per province (real aiohttp servers on 127.0.0.1,
embedded SQLite), generates realistic records in every city, waits (polling with a deadline)
until the ministry has everything, then checks that the ministry's and each province's records
equal the cities' (count and content digest per origin) and that every batch at the ministry
verifies against its origin city's key and chains. Prints a tree (or JSON) and returns the exit
code. It does not simulate faults (see the tests).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.tree import Tree

from hierarchy_config.loader import load_config
from hierarchy_config.model import Level
from hierarchy_config.network_init import NetworkLayout, init_network
from node.app import Node
from node.datagen import generate_records
from node.records import validate_record
from sync.scrub import scrub

INGEST_CHUNK = 1000


@dataclass(frozen=True)
class DemoOptions:
    records_per_city: int = 1000
    provinces: int = 2
    cities_per_province: int = 2
    data_dir: Path | None = None
    as_json: bool = False
    keep_running: bool = False
    timeout_s: float = 300.0
    seed: int = 1


PORT_RANGE_ENV = "LSNET_PORT_RANGE"


def ephemeral_low() -> int:
    """The lowest port the kernel hands out for outgoing connections (32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_bases_from_env(count: int) -> tuple[int, int] | None:
    """The bases [low, top) of `count` consecutive ports within LSNET_PORT_RANGE=LOW-HIGH (HIGH
    exclusive), or None when it is unset. It confines free_port_range and `lsnet simulate`, e.g.
    so that processes choosing ports at the same time (the test suite's parallel workers) each
    search only their own ports; unset, they search below the kernel's ephemeral range."""
    spec = os.environ.get(PORT_RANGE_ENV, "").strip()
    if not spec:
        return None
    try:
        low, high = (int(p) for p in spec.split("-", 1))
    except ValueError:
        raise ValueError(
            f"{PORT_RANGE_ENV}={spec!r}: expected LOW-HIGH, e.g. 20000-30000"
        ) from None
    if not 1024 <= low < high <= 65536 or high - low < count:
        raise ValueError(f"{PORT_RANGE_ENV}={spec!r} has no room for {count} consecutive ports")
    return low, high - count + 1


def free_port_range(count: int, host: str = "127.0.0.1", attempts: int = 50) -> int:
    """A base port such that `count` consecutive ports are free right now.

    Chosen below the system's ephemeral range: a port found free there could be taken by any
    outgoing connection (a database client, an HTTP request) before the node binds it. Within
    LSNET_PORT_RANGE when that is set (port_bases_from_env)."""
    import random

    rng = random.Random()
    high = min(ephemeral_low(), 60000)
    low = 10000 if high - count > 12000 else 1024
    low, top = port_bases_from_env(count) or (low, high - count)
    for _ in range(attempts):
        base = rng.randrange(low, top)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free range of local ports found")


async def start_network(layout: NetworkLayout) -> dict[str, Node]:
    nodes: dict[str, Node] = {}
    for entry in layout.nodes:
        node = Node.open(load_config(entry.config_path))
        await node.init_database()
        nodes[entry.id] = node
    # Parents first, so the first pushes find them listening.
    for level in (Level.MINISTRY, Level.PROVINCE, Level.CITY):
        for entry in layout.nodes:
            if entry.level is level:
                await nodes[entry.id].start()
    return nodes


async def roll_out_standards(layout: NetworkLayout, nodes: dict[str, Node]) -> None:
    """Refresh standards top-down once, so every node verifies and applies the ministry's
    release now instead of at its next scheduled poll."""
    for level in (Level.MINISTRY, Level.PROVINCE, Level.CITY):
        for entry in layout.nodes:
            channel = nodes[entry.id].standards
            if entry.level is level and channel is not None:
                await channel.refresh()


async def stop_network(nodes: dict[str, Node]) -> None:
    for node in reversed(list(nodes.values())):
        await node.stop()


async def fill_city(node: Node, n: int, seed: int) -> int:
    objs = generate_records(node.config.node_id, n, seed=seed)
    recs = [validate_record(o) for o in objs]
    for i in range(0, len(recs), INGEST_CHUNK):
        await node.ingest(recs[i : i + INGEST_CHUNK])
    return len(recs)


async def wait_converged(
    layout: NetworkLayout, nodes: dict[str, Node], timeout_s: float
) -> dict[str, tuple[str, int]] | None:
    """Poll until every node above a city has applied all of that city's changes (up to the seq
    each city had reached when the wait began); those (epoch, seq) targets, or None on timeout.
    Later changes (end-to-end probes keep coming) are not waited for."""
    deadline = time.monotonic() + timeout_s
    targets = {}
    for city in layout.cities():
        meta = await nodes[city.id].store.meta()
        targets[city.id] = (meta.epoch, meta.last_seq)
    while time.monotonic() < deadline:
        done = True
        for holder in [layout.ministry(), *layout.provinces()]:
            marks = await nodes[holder.id].sync_store.watermarks_for(targets)
            have = {(w.origin, w.epoch): w.seq for w in marks}
            for city_id, (epoch, last) in targets.items():
                if holder.level is Level.PROVINCE and layout.by_id(city_id).parent_id != holder.id:
                    continue
                if have.get((city_id, epoch), 0) < last:
                    done = False
        if done:
            return targets
        await asyncio.sleep(0.05)
    return None


async def verify_network(
    layout: NetworkLayout, nodes: dict[str, Node], targets: dict[str, tuple[str, int]]
) -> dict[str, Any]:
    """Records compared with records (count and digest per city, at the city, its province and
    the ministry); signed changes compared with seqs: the ministry's batches of a city form one
    verified chain covering exactly seqs 1..its watermark, and that watermark reached the city's
    seq at convergence (`targets`). End-to-end probes take seqs but are never records, so a
    city's seq is not its record count."""
    problems: list[str] = []
    digests = {entry.id: await nodes[entry.id].store.origin_digests() for entry in layout.nodes}
    ministry = layout.ministry().id
    for city in layout.cities():
        own = digests[city.id].get(city.id)
        for holder in (city.parent_id, ministry):
            assert holder is not None
            got = digests[holder].get(city.id)
            if own is None or got is None or got.count != own.count or got.digest != own.digest:
                problems.append(
                    f"{holder} does not hold exactly city {city.id}'s records "
                    f"({got.count if got else 0} vs {own.count if own else 0})"
                )
    ministry_node = nodes[ministry]

    async def marks() -> dict[tuple[str, str], int]:
        got = await ministry_node.sync_store.watermarks_for(targets)
        return {(w.origin, w.epoch): w.seq for w in got}

    # Probes may still arrive while the scrub pages through the batches: the count it verified
    # must lie between the watermarks read before and after it.
    before = await marks()
    report = await scrub(ministry_node.sync_store, ministry_node.config.subtree_keys())
    after = await marks()
    problems.extend(report.problems)
    for city_id, (epoch, target) in targets.items():
        low, high = before.get((city_id, epoch), 0), after.get((city_id, epoch), 0)
        held = report.by_origin.get(city_id, 0)
        if not (target <= low <= held <= high):
            problems.append(
                f"ministry holds {held} signed changes of {city_id} (watermark {low}..{high}), "
                f"the city had made {target}"
            )
    return {
        "problems": problems,
        "batches_verified": report.batches,
        "changes_verified": report.changes,
        "digests": {
            c.id: digests[c.id][c.id].digest for c in layout.cities() if c.id in digests[c.id]
        },
    }


async def run_demo(opts: DemoOptions) -> int:
    console = Console(stderr=opts.as_json)
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if opts.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="lsnet-demo-")
        root = Path(tmp.name) / "network"
    else:
        root = opts.data_dir
    count = 1 + opts.provinces * (1 + opts.cities_per_province)
    layout = init_network(
        root,
        provinces=opts.provinces,
        cities_per_province=opts.cities_per_province,
        base_port=free_port_range(count),
    )
    nodes: dict[str, Node] = {}
    try:
        if not opts.as_json:
            console.print(f"[bold]lsnet demo[/]: {count} nodes in {root}")
        nodes = await start_network(layout)
        await roll_out_standards(layout, nodes)
        started = time.monotonic()
        sizes = await asyncio.gather(
            *(fill_city(nodes[c.id], opts.records_per_city, opts.seed) for c in layout.cities())
        )
        generated = time.monotonic()
        targets = await wait_converged(layout, nodes, opts.timeout_s)
        converged = targets is not None
        synced = time.monotonic()
        result = (
            await verify_network(layout, nodes, targets)
            if targets is not None
            else {"problems": ["did not converge before the timeout"]}
        )
        releases = {e.id: nodes[e.id].standards_version for e in layout.nodes}
        top = releases[layout.ministry().id]
        for node_id, release in releases.items():
            if release != top:
                result["problems"].append(
                    f"node {node_id} runs standards {release}, the ministry {top}"
                )
        verified = converged and not result["problems"]
        statuses = {e.id: await nodes[e.id].status_dict() for e in layout.nodes}
        summary = {
            "verified": verified,
            "nodes": {
                e.id: {
                    "name": e.name,
                    "level": e.level.value,
                    "parent": e.parent_id,
                    "records": statuses[e.id]["records_total"],
                    "records_by_origin": statuses[e.id]["records_by_origin"],
                    "backlog": statuses[e.id]["backlog"],
                    "lag_seconds": statuses[e.id]["lag_seconds"],
                    "standards_release": statuses[e.id]["standards"].get("release"),
                }
                for e in layout.nodes
            },
            "records_per_city": opts.records_per_city,
            "records_generated": sum(sizes),
            "seconds_to_generate": round(generated - started, 3),
            "seconds_to_converge": round(synced - generated, 3),
            "batches_verified": result.get("batches_verified", 0),
            "changes_verified": result.get("changes_verified", 0),
            "problems": result["problems"],
            "data_dir": str(root) if opts.data_dir else None,
        }
        if opts.as_json:
            print(json.dumps(summary, ensure_ascii=False, indent=2))
        else:
            render(console, layout, summary)
        if opts.keep_running:
            console.print("network is running; press Ctrl-C to stop")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        return 0 if verified else 1
    finally:
        await stop_network(nodes)
        if tmp is not None:
            tmp.cleanup()


def render(console: Console, layout: NetworkLayout, summary: dict[str, Any]) -> None:
    nodes = summary["nodes"]

    def label(node_id: str) -> str:
        n = nodes[node_id]
        lag = n["lag_seconds"]
        extra = "" if lag is None else f", backlog {n['backlog']}, lag {lag:.1f}s"
        release = n.get("standards_release")
        std = f", std {release}" if release else ", built-in std"
        return f"[bold]{node_id}[/] {n['name']} ({n['level']}): {n['records']} records{extra}{std}"

    ministry = layout.ministry()
    tree = Tree(label(ministry.id))
    for prov in layout.provinces():
        branch = tree.add(label(prov.id))
        for city in layout.cities():
            if city.parent_id == prov.id:
                branch.add(label(city.id))
    console.print(tree)
    console.print(
        f"{summary['records_generated']} records generated in "
        f"{summary['seconds_to_generate']}s; ministry complete after "
        f"{summary['seconds_to_converge']}s; {summary['batches_verified']} batches "
        f"({summary['changes_verified']} changes) verified against their cities' keys"
    )
    if summary["verified"]:
        console.print(
            "[bold green]verified[/]: the ministry holds exactly the union of the cities' records"
        )
    else:
        console.print("[bold red]NOT verified[/]:")
        for problem in summary["problems"]:
            console.print(f"  - {problem}", markup=False)
