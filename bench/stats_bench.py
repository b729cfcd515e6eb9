"""Statistics benchmark: an indicator over N contribution records vs the raw GROUP BY.

What it measures:

1. **Local indicator vs raw SQL.** One SQLite database (the node's schema, migrated) holds N
   contribution records (default 1,000,000) spread over 11 Zhejiang prefectures and 24 months.
   It times `contributions_collected` grouped by prefecture and month for 2024 through the
   statistics package (`node.stats.compute.compute_part_txn`: SQLAlchemy Core statement, result
   shaping) and, in the same run on the same database, a hand-written
   `SELECT substr(...), substr(...), count(*), sum(...) ... GROUP BY 1, 2` through the `sqlite3`
   module, and the indicator's own generated SQL text through `sqlite3` (isolating the package's
   overhead from the shape of the SQL), and what `lsnet stats run` does in all (the disclosure
   family's cells, the answer summed from them, primary and secondary suppression:
   `node.stats.disclosure`). All four run in turns, `--repeat` times after one
   warm-up; the medians and ratios are printed (target: ratio <= 1.5). All must give the same
   cells.
2. **Federated latency.** A demo network (1 ministry, 2 provinces x 2 cities) in this process over
   real HTTP on 127.0.0.1, `--federated-records` per city; the ministry runs the same indicator
   federated (signed query down the tree, partial aggregates combined on the way up) `--repeat`
   times; the median end-to-end latency is printed next to the local run on its replicated copy.

Nothing leaves 127.0.0.1; everything is made in a temporary folder and removed.

    python bench/stats_bench.py [--records 1000000] [--federated-records 5000] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy.dialects import sqlite

from hierarchy_config.standards import default_release
from node.db import Database
from node.stats.compute import compute_part_txn, compute_with_family_txn
from node.stats.disclosure import protect_in_family
from node.stats.family import family_of
from node.stats.query import build_query
from node.stats.regions import rollup_for
from node.stats.request import StatsRequest
from node.store import payload_json

PREFECTURES = (
    "3301",
    "3302",
    "3303",
    "3304",
    "3305",
    "3306",
    "3307",
    "3308",
    "3309",
    "3310",
    "3311",
)
CHUNK = 50_000
RAW_SQL = """
SELECT substr(json_extract(payload, '$."agency_region"'), 1, 4) || '00' AS region,
       substr(json_extract(payload, '$."paid_date"'), 1, 4) || '-'
         || substr(json_extract(payload, '$."paid_date"'), 6, 2) AS period,
       count(*) AS n,
       sum(
         CAST(replace(coalesce(json_extract(payload, '$."unit_amount"'), '0'), '.', '')
           AS INTEGER)
         + CAST(replace(coalesce(json_extract(payload, '$."personal_amount"'), '0'), '.', '')
           AS INTEGER))
FROM records
WHERE record_type = 'contribution' AND deleted = 0
  AND json_extract(payload, '$."paid_date"') >= '2024-01-01'
  AND json_extract(payload, '$."paid_date"') < '2025-01-01'
GROUP BY 1, 2
"""


def _row(i: int) -> tuple[Any, ...]:
    month = i % 24
    year, mon = 2023 + month // 12, month % 12 + 1
    payload = {
        "person_id": f"P{i % 200_000:08d}",
        "insurance_type": ("110", "210", "310", "410", "510")[i % 5],
        "fee_month": f"{year}{mon:02d}",
        "contribution_type": "10",
        "unit_amount": f"{(i % 997) + 100}.{i % 100:02d}",
        "personal_amount": f"{(i % 401) + 20}.50",
        "paid_date": f"{year}-{mon:02d}-{1 + i % 28:02d}",
        "agency_region": PREFECTURES[i % len(PREFECTURES)] + "02",
    }
    key = f"k{i:09d}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    return (
        "contribution",
        "330100",
        key,
        1,
        0,
        payload_json(payload),
        "bench",
        digest,
        "e",
        i + 1,
        0,
    )


def fill(path: Path, n: int) -> float:
    """N rows straight into `records` (the bench measures reads, not ingest)."""
    started = time.perf_counter()
    conn = sqlite3.connect(path)
    for first in range(0, n, CHUNK):
        conn.executemany(
            "INSERT INTO records (record_type, owner, key, version, deleted, payload, standards, "
            "hash, epoch, seq, updated_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [_row(i) for i in range(first, min(n, first + CHUNK))],
        )
        conn.commit()
    conn.close()
    return time.perf_counter() - started


def interleaved(fns: dict[str, Any], repeat: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds of each function, run in turns (so background load hits all alike)."""
    results = {name: fn() for name, fn in fns.items()}  # warm-up (page cache, statement cache)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            started = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}, results


def local_bench(folder: Path, n: int, repeat: int) -> dict[str, Any]:
    path = folder / "stats.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    db.close()
    fill_s = fill(path, n)
    release = default_release()
    indicator = release.indicators["contributions_collected"]
    request = StatsRequest.parse(
        "contributions_collected", "region,period", "2024-01..2024-12", None, "prefecture"
    )
    db = Database(f"sqlite:///{path}")

    def via_stats() -> dict[tuple[str, ...], tuple[int, int]]:
        part = db.read_sync(compute_part_txn, release, indicator, request, None, False)
        return {k: (c.n, c.value) for k, c in part.cells.items()}

    family = family_of(
        request, indicator.dimension_names, indicator.kind, False, rollup_for(release)
    )
    min_cell = release.policy("contribution").min_cell

    def via_service() -> dict[tuple[str, ...], tuple[int, int]]:
        """What `lsnet stats run` does: the disclosure family's cells in the same snapshot (the
        answer summed from them) and primary + secondary suppression."""
        part, fam = db.read_sync(
            compute_with_family_txn, release, indicator, request, family, None, False
        )
        shown = protect_in_family(part.cells, request, family, fam.cells, min_cell)
        return {k: (c.n, c.value) for k, c in shown.cells.items()}

    raw_conn = sqlite3.connect(path)
    # What compute_part_txn sends for a count or sum at the prefecture level: the county
    # grouping (its cells are then added up to prefecture-level units, see below).
    county = StatsRequest.parse(
        "contributions_collected", "region,period", "2024-01..2024-12", None, "county"
    )
    rollup = rollup_for(release)
    generated = str(
        build_query(
            indicator, release.schemas["contribution"], county, "sqlite", regions=rollup
        ).statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
    )

    def via_raw() -> dict[tuple[str, ...], tuple[int, int]]:
        return {(r[0], r[1]): (r[2], r[3]) for r in raw_conn.execute(RAW_SQL)}

    def via_generated_sql() -> dict[tuple[str, ...], tuple[int, int]]:
        out: dict[tuple[str, ...], tuple[int, int]] = {}
        for r in raw_conn.execute(generated):
            key = (rollup.key(r[0], "prefecture"), r[1])
            n, v = out.get(key, (0, 0))
            out[key] = (n + r[2], v + r[3])
        return out

    medians, results = interleaved(
        {
            "indicator": via_stats,
            "raw": via_raw,
            "generated_sql": via_generated_sql,
            "with_disclosure_control": via_service,
        },
        repeat,
    )
    raw_conn.close()
    db.close()
    if not (
        results["indicator"]
        == results["raw"]
        == results["generated_sql"]
        == results["with_disclosure_control"]
    ):
        raise SystemExit("the indicator and the raw GROUP BY disagree")
    return {
        "records": n,
        "fill_seconds": round(fill_s, 1),
        "cells": len(results["indicator"]),
        "indicator_seconds": round(medians["indicator"], 3),
        "raw_group_by_seconds": round(medians["raw"], 3),
        "generated_sql_seconds": round(medians["generated_sql"], 3),
        "ratio": round(medians["indicator"] / medians["raw"], 3),
        "ratio_to_generated_sql": round(medians["indicator"] / medians["generated_sql"], 3),
        "with_disclosure_control_seconds": round(medians["with_disclosure_control"], 3),
        "ratio_with_disclosure_control": round(
            medians["with_disclosure_control"] / medians["raw"], 3
        ),
    }


async def federated_bench(folder: Path, per_city: int, repeat: int) -> dict[str, Any]:
    from hierarchy_config.loader import load_config
    from hierarchy_config.model import Level
    from hierarchy_config.network_init import init_network
    from node.app import Node
    from node.datagen import generate_records
    from node.demo import free_port_range
    from node.records import validate_record

    layout = init_network(
        folder / "net", provinces=2, cities_per_province=2, base_port=free_port_range(7)
    )
    nodes: dict[str, Node] = {}
    for entry in layout.nodes:
        node = Node.open(load_config(entry.config_path))
        await node.init_database()
        await node.stop()
    try:
        for level in (Level.MINISTRY, Level.PROVINCE, Level.CITY):
            for entry in layout.nodes:
                if entry.level is level:
                    nodes[entry.id] = Node.open(load_config(entry.config_path))
                    await nodes[entry.id].start()
        for i, city in enumerate(c.id for c in layout.cities()):
            recs = [validate_record(o) for o in generate_records(city, per_city, seed=i)]
            for first in range(0, len(recs), 1000):
                await nodes[city].ingest(recs[first : first + 1000])
        ministry = nodes[layout.ministry().id]
        deadline = time.monotonic() + 300
        expected = per_city * len(layout.cities())
        while sum((await ministry.store.status()).records_by_origin.values()) < expected:
            if time.monotonic() > deadline:
                raise SystemExit("the demo network did not converge in 300 s")
            await asyncio.sleep(0.2)
        assert ministry.stats is not None
        request = StatsRequest.parse(
            "contributions_collected", "region,period", "2024-01..2024-12", None, "prefecture"
        )
        fed_times, local_times = [], []
        doc: dict[str, Any] = {}
        for _ in range(repeat):
            started = time.perf_counter()
            doc = await ministry.stats.run(request, federated=True)
            fed_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            local = await ministry.stats.run(request)
            local_times.append(time.perf_counter() - started)
        if not doc["complete"] or [c["value_text"] for c in doc["cells"]] != [
            c["value_text"] for c in local["cells"]
        ]:
            raise SystemExit("federated and replicated answers differ")
        return {
            "nodes": len(nodes),
            "records_per_city": per_city,
            "federated_median_seconds": round(statistics.median(fed_times), 3),
            "local_replicated_median_seconds": round(statistics.median(local_times), 3),
            "answered": len(doc["answered"]),
        }
    finally:
        for node in list(nodes.values())[::-1]:
            await node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--federated-records", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lsnet-stats-bench-") as tmp:
        local = local_bench(Path(tmp), args.records, args.repeat)
        federated = asyncio.run(federated_bench(Path(tmp), args.federated_records, args.repeat))
    result = {
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "machine": platform.machine(),
        "local": local,
        "federated": federated,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{local['records']:,} contributions, {local['cells']} cells (prefecture x month, 2024)")
    print(f"  indicator (node.stats): {local['indicator_seconds']:.3f} s")
    print(f"  raw SELECT ... GROUP BY: {local['raw_group_by_seconds']:.3f} s")
    print(f"  the indicator's own SQL via sqlite3: {local['generated_sql_seconds']:.3f} s")
    print(f"  ratio to the raw GROUP BY: {local['ratio']:.3f} (target <= 1.5)")
    print(
        f"  ratio to its own SQL run raw (package overhead): {local['ratio_to_generated_sql']:.3f}"
    )
    print(
        "  with disclosure control (family query + primary/secondary suppression): "
        f"{local['with_disclosure_control_seconds']:.3f} s, "
        f"ratio {local['ratio_with_disclosure_control']:.3f}"
    )
    print(
        f"federated over {federated['nodes']} nodes "
        f"({federated['records_per_city']:,} records per city): "
        f"{federated['federated_median_seconds']:.3f} s end to end; "
        f"local run on the replicated copy: {federated['local_replicated_median_seconds']:.3f} s"
    )


if __name__ == "__main__":
    main()
