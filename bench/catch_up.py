"""Catch-up after an outage at several backlog sizes, with the set-up done once.

A city's change log fills while its province is down; then the province (a `lsnet node run`
process) starts, the city starts, and the time until the province's watermark covers the whole
log is measured with both processes' peak RSS (VmHWM). The sizes share one laid-out tree: the
city's log is filled to the smallest size, saved, measured; then the saved log is restored and
filled up to the next size, and the province gets its pristine (initialised, empty) database
back before every run. So the set-up costs one ingest of the largest backlog, not one per size.

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
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import hops
from bench.one_hop import BenchError
from hierarchy_config.loader import load_config
from node.app import Node
from node.datagen import generate_records
from node.db import sqlite_path
from node.records import validate_record

SUFFIXES = ("", "-wal", "-shm")


def _db_path(tree: hops.Tree, level: str) -> Path:
    path = sqlite_path(tree.urls[level])
    if path is None:
        raise BenchError("catch-up runs on SQLite files only")
    return path


def save_db(src: Path, dst: Path) -> None:
    """Copy a closed SQLite database with its WAL files (nothing may have it open)."""
    for suffix in SUFFIXES:
        s, d = Path(f"{src}{suffix}"), Path(f"{dst}{suffix}")
        if s.exists():
            shutil.copyfile(s, d)
        elif d.exists():
            d.unlink()


async def grow_backlog(
    tree: hops.Tree, extra: int, seed: int, chunk: int = hops.INGEST_CHUNK
) -> int:
    """Ingest `extra` more generated records into the city's change log; return its last seq."""
    city = Node.open(load_config(tree.configs["city"]))
    try:
        recs = [validate_record(o) for o in generate_records(tree.ids["city"], extra, seed=seed)]
        for i in range(0, len(recs), chunk):
            await city.store.ingest(recs[i : i + chunk], city.clock.time_ms())
        return (await city.store.meta()).last_seq
    finally:
        await city.stop()


def run(sizes: tuple[int, ...], timeout_s: float, work: Path) -> list[dict[str, Any]]:
    """One measurement per backlog size (ascending); see the module docstring."""
    sizes = tuple(sorted(sizes))
    tree = hops.lay_out_tree(work)
    t0 = time.perf_counter()
    prep = asyncio.run(hops.prepare_tree(tree, sizes[0]))
    ingest_s = time.perf_counter() - t0
    city_db, prov_db = _db_path(tree, "city"), _db_path(tree, "province")
    pristine_province = work / "province-pristine.db"
    backlog = work / "city-backlog.db"
    save_db(prov_db, pristine_province)
    out = []
    last_seq = prep["last_seq"]
    for i, n in enumerate(sizes):
        if n > last_seq:
            save_db(backlog, city_db)
            t0 = time.perf_counter()
            last_seq = asyncio.run(grow_backlog(tree, n - last_seq, seed=1 + i))
            ingest_s += time.perf_counter() - t0
            if last_seq != n:
                raise BenchError(f"city change log holds {last_seq} entries, expected {n}")
        save_db(city_db, backlog)  # the run below cuts and acknowledges batches
        save_db(pristine_province, prov_db)
        rows = hops.city_rows(tree)
        ceil = hops.ceiling(rows, tree.urls["province"], work, repeats=2)
        del rows
        timed = hops.timed_hops(tree, ["province", "city"], "province", prep["epoch"], n, timeout_s)
        own = hops.content_digest(tree.urls["city"], tree.ids["city"])
        held = hops.content_digest(tree.urls["province"], tree.ids["city"])
        if own != held:
            raise BenchError(f"province holds {held[0]} records of the city, the city {own[0]}")
        out.append(
            {
                "backlog": n,
                "records": own[0],
                "seconds": timed["seconds"],
                "records_per_s": timed["records_per_s"],
                "peak_rss_mib": timed["peak_rss_mib"],
                "cpu_s": timed["cpu_s"],
                "ceiling": ceil,
                "ingest_s_so_far": ingest_s,
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
