"""Catch-up after an outage at several backlog sizes, with the set-up done once.

A city's change log fills while its province is down; then the province (a `lsnet node run`
process) starts, the city starts, and the time until the province's watermark covers the whole
log is measured with both processes' peak RSS (VmHWM). The sizes share one laid-out tree: the
city's log is filled to the smallest size, saved, measured; then the saved log is restored and
filled up to the next size, and the province gets its pristine (initialised, empty) database
back before every run. So the set-up costs one ingest of the largest backlog, not one per size.
`python -m bench` uses the same `Prepared` tree for its SQLite one-hop and two-hop runs too.

The baseline of each size is the driver-only bulk upsert of the same rows into the province's
database (`bench.hops.ceiling`). Run alone: `python -m bench.catch_up --sizes 20000,200000`.

What it does not do: PostgreSQL (SQLite files only), and it never contacts anything but
127.0.0.1. Records added for a larger size come from another generator seed, so some of them
are new versions of earlier records: every size is a backlog of exactly N changes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import hops
from bench.one_hop import BenchError
from hierarchy_config.loader import load_config
from node.app import Node
from node.datagen import generate_records
from node.db import sqlite_path
from node.demo import free_port_range
from node.records import validate_record

SUFFIXES = ("", "-wal", "-shm")
LEVELS = ("ministry", "province", "city")


def save_db(src: Path, dst: Path) -> None:
    """Copy a closed SQLite database with its WAL files (nothing may have it open)."""
    for suffix in SUFFIXES:
        s, d = Path(f"{src}{suffix}"), Path(f"{dst}{suffix}")
        if s.exists():
            shutil.copyfile(s, d)
        elif d.exists():
            d.unlink()


async def grow_backlog(tree: hops.Tree, extra: int, seed: int) -> int:
    """Ingest `extra` more generated records into the city's change log; return its last seq."""
    city = Node.open(load_config(tree.configs["city"]))
    try:
        recs = [validate_record(o) for o in generate_records(tree.ids["city"], extra, seed=seed)]
        for i in range(0, len(recs), hops.INGEST_CHUNK):
            await city.store.ingest(recs[i : i + hops.INGEST_CHUNK], city.clock.time_ms())
        return (await city.store.meta()).last_seq
    finally:
        await city.stop()


@dataclass
class Prepared:
    """A ministry → province → city tree on SQLite whose city holds an unsent backlog, with
    saved copies: the city's backlog and the empty, initialised ministry and province. Every
    run starts from `reset()`; `grow_to(n)` ingests only the records beyond the saved backlog."""

    tree: hops.Tree
    work: Path
    epoch: str
    last_seq: int
    ingest_s: float
    grown: int = 0

    def _saved(self, level: str) -> Path:
        return self.work / f"saved-{level}.db"

    def _path(self, level: str) -> Path:
        path = sqlite_path(self.tree.urls[level])
        if path is None:
            raise BenchError("a prepared tree is on SQLite files only")
        return path

    def save(self) -> None:
        for level in LEVELS:
            save_db(self._path(level), self._saved(level))

    def reset(self) -> None:
        """Every database back to its saved state: the city's backlog unsent, parents empty."""
        for level in LEVELS:
            save_db(self._saved(level), self._path(level))

    def fresh_ports(self) -> None:
        """Move the three nodes to ports that are free now. The tree lives for minutes (ingest,
        several runs) on a shared machine: the ports picked at layout time may have been taken
        by another program since (seen: a health check answered by a stranger)."""
        old = {level: int(url.rsplit(":", 1)[1]) for level, url in self.tree.urls_http.items()}
        base = free_port_range(len(old))
        new = {level: base + i for i, level in enumerate(old)}
        swap = {f"127.0.0.1:{old[lv]}": f"127.0.0.1:{new[lv]}" for lv in old}
        pattern = re.compile("|".join(re.escape(k) for k in swap))
        for config in self.tree.configs.values():
            text = config.read_text(encoding="utf-8")
            config.write_text(pattern.sub(lambda m: swap[m.group(0)], text), encoding="utf-8")
        for level in old:
            self.tree.urls_http[level] = f"http://127.0.0.1:{new[level]}"

    def grow_to(self, n: int) -> None:
        if n < self.last_seq:
            raise BenchError(f"the prepared backlog holds {self.last_seq} changes, more than {n}")
        if n == self.last_seq:
            return
        self.reset()
        self.grown += 1
        t0 = time.perf_counter()
        last = asyncio.run(grow_backlog(self.tree, n - self.last_seq, seed=1 + self.grown))
        self.ingest_s += time.perf_counter() - t0
        if last != n:
            raise BenchError(f"city change log holds {last} entries, expected {n}")
        self.last_seq = n
        save_db(self._path("city"), self._saved("city"))


def prepare(work: Path, n: int) -> Prepared:
    """Lay out the tree in `work`, initialise it, fill the city's log with n records, save."""
    tree = hops.lay_out_tree(work)
    t0 = time.perf_counter()
    prep = asyncio.run(hops.prepare_tree(tree, n))
    prepared = Prepared(tree, work, prep["epoch"], prep["last_seq"], time.perf_counter() - t0)
    prepared.save()
    return prepared


def measure(
    prepared: Prepared, levels: list[str], target: str, timeout_s: float, ceiling_repeats: int = 3
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One timed run from the saved state: (run, ceiling at the target's database); checks the
    target then holds exactly the city's records."""
    prepared.reset()
    prepared.fresh_ports()
    tree = prepared.tree
    rows = hops.city_rows(tree)
    ceil = hops.ceiling(rows, tree.urls[target], prepared.work, repeats=ceiling_repeats)
    del rows
    for leftover in prepared.work.glob("ceiling-*.db"):
        leftover.unlink()
    run = hops.timed_hops(tree, levels, target, prepared.epoch, prepared.last_seq, timeout_s)
    own = hops.content_digest(tree.urls["city"], tree.ids["city"])
    held = hops.content_digest(tree.urls[target], tree.ids["city"])
    if own != held:
        raise BenchError(f"{target} holds {held[0]} records of the city, the city {own[0]}")
    run["records"] = own[0]
    return run, ceil


def run(
    sizes: tuple[int, ...], timeout_s: float, work: Path, prepared: Prepared | None = None
) -> list[dict[str, Any]]:
    """One catch-up per backlog size (ascending) on one prepared tree; see the module docstring."""
    sizes = tuple(sorted(sizes))
    if prepared is None:
        prepared = prepare(work, sizes[0])
    out = []
    for n in sizes:
        prepared.grow_to(n)
        timed, ceil = measure(prepared, ["province", "city"], "province", timeout_s, 2)
        out.append(
            {
                "backlog": n,
                "records": timed["records"],
                "seconds": timed["seconds"],
                "records_per_s": timed["records_per_s"],
                "peak_rss_mib": timed["peak_rss_mib"],
                "cpu_s": timed["cpu_s"],
                "ceiling": ceil,
                "ingest_s_so_far": prepared.ingest_s,
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.catch_up", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--sizes", default="20000,200000", help="comma-separated backlog sizes")
    ap.add_argument("--timeout", type=float, default=1800.0)
    args = ap.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(",") if s.strip())
    with tempfile.TemporaryDirectory(prefix="lsnet-catchup-") as tmp:
        results = run(sizes, args.timeout, Path(tmp))
    for r in results:
        rss = r["peak_rss_mib"]
        print(
            f"{r['backlog']:>9,}: {r['seconds']:6.1f} s  {r['records_per_s']:8,.0f} rec/s  "
            f"RSS province {rss['province']:.0f} MiB, city {rss['city']:.0f} MiB",
            file=sys.stderr,
        )
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
