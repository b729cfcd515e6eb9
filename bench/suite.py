"""The benchmarks of `python -m bench`, one function each. Every function returns a list of
`Figure`s: a measured value, the baseline measured in the same run, and their ratio (the machine
is shared, so only same-run ratios are comparable between runs).

What it does not do: printing and JSON output (`bench.__main__`); it talks to 127.0.0.1 only
and cleans up every folder, process, database and cluster it made.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from sqlalchemy.engine import make_url

from bench import catch_up as catch_up_bench
from bench import hops
from bench.pg_clusters import Cluster, two_clusters, wait_for
from bench.stages import run_stages
from hierarchy_config.loader import load_config
from hierarchy_config.network_init import init_network
from node.datagen import generate_records
from node.demo import free_port_range, start_network, stop_network
from node.records import validate_record

TARGET_HOP_RATIO = 0.5


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    baseline: float
    baseline_unit: str
    baseline_what: str
    ratio: float
    target: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Sizes:
    one_hop: int
    pg_hop: int
    two_hops: int
    catch_up: tuple[int, ...]
    latency_samples: int
    stages: int
    logical: int
    timeout_s: float
    # Timed runs of each one-hop figure; the run with the median ratio is reported (all listed).
    hop_runs: int = 1
    # Hop / logical replication pairs of the PostgreSQL→PostgreSQL figure (median pair reported):
    # single runs of either vary by ±20 % on a shared 2-core machine.
    logical_runs: int = 1

    @classmethod
    def quick(cls) -> Sizes:
        """Under 5 minutes on this 2-core machine: each hop is large enough that its fixed
        costs (process start, standards load, first debounce) stay outside the timed window
        and the ratio is stable; SQLite hops and both catch-up sizes share one prepared tree."""
        return cls(20_000, 20_000, 20_000, (20_000, 200_000), 20, 10_000, 20_000, 600.0)

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            100_000, 100_000, 100_000, (100_000, 1_000_000), 100, 100_000, 100_000, 3600.0, 3, 5
        )


@contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="lsnet-bench-") as tmp:
        yield Path(tmp)


@contextmanager
def pg_database(admin_url: str) -> Iterator[str]:
    """A fresh database on the server of `admin_url` (SQLAlchemy URL), dropped afterwards."""
    base = make_url(admin_url)
    name = f"lsnet_bench_{secrets.token_hex(5)}"
    dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- hops ------------------------------------------------------------------------------------------


_PREPARED: list[catch_up_bench.Prepared] = []  # the suite's one SQLite tree, grown as needed
_SESSION: list[Path] = []


@contextmanager
def session() -> Iterator[None]:
    """One temporary folder for the whole run: SQLite benchmarks share one prepared tree (the
    city's backlog is ingested once, then grown; every run starts from saved copies)."""
    with workdir() as work:
        _SESSION.append(work)
        try:
            yield
        finally:
            _SESSION.clear()
            _PREPARED.clear()


def _sqlite_tree(n: int) -> catch_up_bench.Prepared:
    """The shared SQLite tree with a backlog of exactly n changes (only grows: the quick and
    full sizes ask for ascending sizes in the suite's order)."""
    if not _SESSION:
        raise RuntimeError("bench.suite.session() is not open")
    if not _PREPARED or _PREPARED[0].last_seq > n:
        work = _SESSION[0] / f"tree-{len(_PREPARED)}"
        work.mkdir()
        _PREPARED[:] = [catch_up_bench.prepare(work, n)]
    _PREPARED[0].grow_to(n)
    return _PREPARED[0]


def _hop(
    n: int,
    databases: dict[str, str],
    levels: list[str],
    target: str,
    timeout_s: float,
    work: Path,
    servers: dict[str, Path] | None = None,
) -> tuple[hops.Tree, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A hop with its own tree (PostgreSQL databases); `servers`: data folders of throw-away
    clusters whose server CPU is measured during the run."""
    tree = hops.lay_out_tree(work, databases)
    prep = asyncio.run(hops.prepare_tree(tree, n))
    ceil = hops.ceiling(hops.city_rows(tree), tree.urls[target], work)
    run = hops.timed_hops(tree, levels, target, prep["epoch"], prep["last_seq"], timeout_s, servers)
    hops.check_content(tree, target, n)
    return tree, prep, ceil, run


def one_hop(
    n: int, n_pg: int, timeout_s: float, pg_admin_url: str | None, runs: int = 1
) -> list[Figure]:
    """City → province, SQLite and (when a server is given) PostgreSQL at the province; `runs`
    timed runs of each (SQLite from one prepared tree, PostgreSQL each on a new database), the
    one with the median ratio reported."""
    out = []
    tree = _sqlite_tree(n)
    sqlite_runs = [
        catch_up_bench.measure(tree, ["province", "city"], "province", timeout_s)
        for _ in range(runs)
    ]
    out.append(_hop_figure(f"one hop city→province, SQLite ({n:,} records)", sqlite_runs, n))
    if pg_admin_url:
        pg_runs = []
        for _ in range(runs):
            with workdir() as work, pg_database(pg_admin_url) as url:
                _tree, _prep, ceil, run = _hop(
                    n_pg, {"province": url}, ["province", "city"], "province", timeout_s, work
                )
            pg_runs.append((run, ceil))
        name = f"one hop city→province, PostgreSQL province ({n_pg:,})"
        out.append(_hop_figure(name, pg_runs, n_pg))
    return out


def _hop_figure(name: str, runs: list[tuple[dict[str, Any], dict[str, Any]]], n: int) -> Figure:
    """The figure of the run (with its own ceiling) whose ratio is the median of `runs`."""
    ratios = [run["records_per_s"] / ceil["records_per_s"] for run, ceil in runs]
    run, ceil = runs[sorted(range(len(runs)), key=ratios.__getitem__)[(len(runs) - 1) // 2]]
    detail: dict[str, Any] = {"records": n, "run": run, "ceiling": ceil}
    if len(runs) > 1:
        detail["ratios_of_all_runs"] = ratios
    return Figure(
        name,
        run["records_per_s"],
        "records/s",
        ceil["records_per_s"],
        "records/s",
        "driver-only bulk upsert of the same rows into the same database",
        run["records_per_s"] / ceil["records_per_s"],
        f">= {TARGET_HOP_RATIO}",
        detail,
    )


def two_hops(n: int, timeout_s: float) -> list[Figure]:
    run, ceil = catch_up_bench.measure(
        _sqlite_tree(n), ["ministry", "province", "city"], "ministry", timeout_s
    )
    return [
        Figure(
            f"two hops city→province→ministry, SQLite ({n:,})",
            run["records_per_s"],
            "records/s",
            ceil["records_per_s"],
            "records/s",
            "driver-only bulk upsert of the same rows into the ministry's database",
            run["records_per_s"] / ceil["records_per_s"],
            "",
            {"records": n, "run": run, "ceiling": ceil},
        )
    ]


def catch_up(sizes: tuple[int, ...], timeout_s: float) -> list[Figure]:
    """A backlog of N changes waits in the city while its province is down; then the province
    comes back. Time to catch up and peak RSS of both nodes, per backlog size."""
    ordered = tuple(sorted(sizes))
    results = catch_up_bench.run(ordered, timeout_s, Path(), _sqlite_tree(ordered[0]))
    out = []
    first_rss: float | None = None
    for r in results:
        n = r["backlog"]
        rss = max(r["peak_rss_mib"].values())
        if first_rss is None:
            first_rss = rss
        baseline_s = n / r["ceiling"]["records_per_s"]
        out.append(
            Figure(
                f"catch-up of a {n:,}-change backlog (SQLite)",
                r["seconds"],
                "s",
                baseline_s,
                "s",
                "driver-only bulk upsert of the same rows",
                r["seconds"] / baseline_s,
                "",
                {**r, "rss_vs_smallest_backlog": rss / first_rss},
            )
        )
    return out


# -- per-record costs ------------------------------------------------------------------------------


def per_record(n: int) -> list[Figure]:
    with workdir() as work:
        st = asyncio.run(run_stages(n, work)).as_dict()
    return [
        Figure(
            "bytes on the wire per record",
            st["wire_bytes_per_record"],
            "B",
            st["json_bytes_per_record"],
            "B",
            "the same records as compact JSON",
            st["wire_bytes_per_record"] / st["json_bytes_per_record"],
            "< 1",
            st,
        ),
        Figure(
            "signature cost per record (sign + verify, batch and envelope, digests)",
            st["signature_us_per_record"],
            "µs",
            st["hop_cpu_us_per_record"],
            "µs",
            "CPU of the whole hop per record (cut+sign, verify, apply)",
            st["signature_us_per_record"] / st["hop_cpu_us_per_record"],
            "negligible",
            st,
        ),
    ]


# -- latency ---------------------------------------------------------------------------------------


async def _latency(samples: int, work: Path) -> tuple[list[float], dict[str, float]]:
    layout = init_network(
        work / "net", provinces=1, cities_per_province=1, base_port=free_port_range(3)
    )
    nodes = await start_network(layout)
    try:
        city_e, prov_e, top_e = layout.cities()[0], layout.provinces()[0], layout.ministry()
        city, top = nodes[city_e.id], nodes[top_e.id]
        objs = generate_records(city_e.id, samples + 5, seed=7)
        recs = [validate_record(o) for o in objs]
        await city.ingest(recs[:1])  # warm the path
        meta = await city.store.meta()

        async def reached(seq: int, deadline: float) -> float:
            while time.perf_counter() < deadline:
                marks = await top.sync_store.watermarks_for([city_e.id])
                if any(m.epoch == meta.epoch and m.seq >= seq for m in marks):
                    return time.perf_counter()
                await asyncio.sleep(0.002)
            raise RuntimeError(f"ministry did not reach seq {seq}")

        await reached(1, time.perf_counter() + 60)
        lat = []
        for i in range(samples):
            t0 = time.perf_counter()
            res = await city.ingest([recs[1 + i]])
            lat.append(await reached(res.last_seq, t0 + 30) - t0)
        # Baseline parts, measured now on the same nodes.
        commits = []
        for rec in recs[1 + samples : 4 + samples]:
            t0 = time.perf_counter()
            await city.ingest([rec])
            commits.append(time.perf_counter() - t0)
        await reached((await city.store.meta()).last_seq, time.perf_counter() + 30)
        rtts = []
        async with aiohttp.ClientSession() as http:
            for _ in range(5):
                t0 = time.perf_counter()
                async with http.get(prov_e.url + "/healthz") as resp:
                    await resp.read()
                rtts.append(time.perf_counter() - t0)
        debounce = load_config(city_e.config_path).sync.debounce_ms / 1000
        parts = {
            "commit_s": statistics.median(commits),
            "http_round_trip_s": statistics.median(rtts),
            "debounce_s": debounce,
        }
        return lat, parts
    finally:
        await stop_network(nodes)


def latency(samples: int) -> list[Figure]:
    with workdir() as work:
        lat, parts = asyncio.run(_latency(samples, work))
    lat.sort()
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
    floor = 2 * parts["debounce_s"] + 3 * parts["commit_s"] + 2 * parts["http_round_trip_s"]
    what = "2 × debounce + 3 × one-record commit + 2 × loopback HTTP round trip"
    details = {"samples": len(lat), **parts, "max_s": lat[-1]}
    return [
        Figure(
            "latency city→ministry, idle, p50",
            p50 * 1000,
            "ms",
            floor * 1000,
            "ms",
            what,
            p50 / floor,
            "",
            details,
        ),
        Figure(
            "latency city→ministry, idle, p99",
            p99 * 1000,
            "ms",
            floor * 1000,
            "ms",
            what,
            p99 / floor,
            "",
            details,
        ),
    ]


# -- PostgreSQL → PostgreSQL vs logical replication ------------------------------------------------


def _logical_replication(
    a: Cluster, b: Cluster, rows: list[tuple[Any, ...]], timeout_s: float
) -> dict[str, Any]:
    """The same rows, published on A and subscribed on B (a records-shaped table); time from
    the start of the load on A (one COPY, one commit) until B holds every row."""
    ddl = (
        "CREATE TABLE lr_records (record_type VARCHAR(64) NOT NULL, owner VARCHAR(64) NOT NULL,"
        ' "key" VARCHAR(512) NOT NULL, version BIGINT NOT NULL, deleted BOOLEAN NOT NULL,'
        " payload TEXT NOT NULL, standards VARCHAR(64) NOT NULL, hash VARCHAR(64) NOT NULL,"
        " epoch VARCHAR(64) NOT NULL, seq BIGINT NOT NULL, updated_ms BIGINT NOT NULL,"
        ' PRIMARY KEY (record_type, owner, "key"))'
    )
    for c in (a, b):
        with psycopg.connect(c.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE lr")
            with psycopg.connect(c.dsn("lr"), autocommit=True) as db:
                db.execute(ddl)
    with psycopg.connect(a.dsn("lr"), autocommit=True) as src:
        src.execute("CREATE PUBLICATION lr_pub FOR TABLE lr_records")
    with psycopg.connect(b.dsn("lr"), autocommit=True) as dst:
        dst.execute(
            f"CREATE SUBSCRIPTION lr_sub CONNECTION '{a.dsn('lr')}' PUBLICATION lr_pub"
            " WITH (copy_data = false)"
        )
        wait_for(
            lambda: (
                dst.execute(
                    "SELECT count(*) FROM pg_stat_subscription"
                    " WHERE subname = 'lr_sub' AND pid IS NOT NULL"
                ).fetchone()
                == (1,)
            ),
            60,
            "the subscription to start",
        )
        cols = ", ".join(f'"{c}"' for c in hops.RECORD_COLUMNS)
        t0 = time.perf_counter()
        with psycopg.connect(a.dsn("lr")) as src, src.cursor() as cur:
            with cur.copy(f"COPY lr_records ({cols}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
            src.commit()
        committed = time.perf_counter()
        done = wait_for(
            lambda: dst.execute("SELECT count(*) FROM lr_records").fetchone() == (len(rows),),
            timeout_s,
            "logical replication of every row",
        )
        dst.execute("DROP SUBSCRIPTION lr_sub")
    return {
        "seconds": done - t0,
        "load_s": committed - t0,
        "replication_after_commit_s": done - committed,
        "records_per_s": len(rows) / (done - t0),
    }


def pg_vs_logical(n: int, timeout_s: float, runs: int = 1) -> list[Figure]:
    """The hop and logical replication between the same two clusters, `runs` times each, in
    turn (hop, replication, hop, ...: the machine's noise falls on both); the pair with the
    median ratio is reported, all listed. Each hop starts from the same prepared databases:
    the city's copied from a template made after preparing, the province's new and migrated."""
    with workdir() as work, two_clusters() as (a, b):
        for c, name in ((a, "city"), (b, "province")):
            with psycopg.connect(c.dsn(), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
        tree = hops.lay_out_tree(work, {"city": a.url("city"), "province": b.url("province")})
        prep = asyncio.run(hops.prepare_tree(tree, n))
        rows = hops.city_rows(tree)
        ceil = hops.ceiling(rows, tree.urls["province"], work)
        with psycopg.connect(a.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE city_prepared TEMPLATE city")
        pairs = []
        for attempt in range(runs):
            if attempt:
                _restart_databases(tree, a, b)
            for c in (a, b):
                with psycopg.connect(c.dsn(), autocommit=True) as conn:
                    conn.execute("DROP DATABASE IF EXISTS lr WITH (FORCE)")
                    conn.execute("CHECKPOINT")
            run = hops.timed_hops(
                tree,
                ["province", "city"],
                "province",
                prep["epoch"],
                prep["last_seq"],
                timeout_s,
                {"city": a.datadir, "province": b.datadir},
            )
            hops.check_content(tree, "province", n)
            for c in (a, b):
                with psycopg.connect(c.dsn(), autocommit=True) as conn:
                    conn.execute("CHECKPOINT")
            pairs.append((run, _logical_replication(a, b, rows, timeout_s)))
    ratios = [run["records_per_s"] / lr["records_per_s"] for run, lr in pairs]
    run, lr = pairs[sorted(range(len(pairs)), key=ratios.__getitem__)[(len(pairs) - 1) // 2]]
    details: dict[str, Any] = {
        "records": n,
        "run": run,
        "logical_replication": lr,
        "ceiling_at_province": ceil,
    }
    if runs > 1:
        details["ratios_of_all_runs"] = ratios
        details["hop_seconds_of_all_runs"] = [r["seconds"] for r, _ in pairs]
        details["logical_seconds_of_all_runs"] = [x["seconds"] for _, x in pairs]
    return [
        Figure(
            f"PostgreSQL→PostgreSQL hop vs logical replication ({n:,})",
            run["records_per_s"],
            "records/s",
            lr["records_per_s"],
            "records/s",
            "PostgreSQL 15 publication/subscription of the same rows between the same two clusters",
            run["records_per_s"] / lr["records_per_s"],
            ">= 1.0",
            details,
        )
    ]


def _restart_databases(tree: hops.Tree, a: Cluster, b: Cluster) -> None:
    """The city's database as prepared (from its template) and a new, migrated province."""
    with psycopg.connect(a.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE city WITH (FORCE)")
        conn.execute("CREATE DATABASE city TEMPLATE city_prepared")
    with psycopg.connect(b.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE province WITH (FORCE)")
        conn.execute("CREATE DATABASE province")
    asyncio.run(hops.init_databases(tree, ["province"]))
