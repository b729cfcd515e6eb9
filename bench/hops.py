"""Multi-process hop benchmarks on any database: city → province (one hop) or city → province →
ministry (two hops), each node a real `lsnet node run` process talking HTTP on 127.0.0.1, each
node's database a SQLite file or a PostgreSQL database (given by URL).

It times from the moment the city reports it is running (its change log already holds N records,
ingested untimed) until the target node's watermark for the city's epoch reaches the city's last
seq, then checks the target holds exactly the city's records (count and content digest), and
reads peak RSS and CPU of every node. The baseline of the same run is the driver-only bulk upsert
of the same rows into the target's database (`ceiling`).

What it does not do: it never contacts anything but 127.0.0.1, and it does not create or drop
PostgreSQL databases (callers pass URLs; see `bench.suite`).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.one_hop import (
    RECORD_COLUMNS,
    UPDATED_COLUMNS,
    BenchError,
    _children_peak_rss_kib,
    _connect,
    _cpu_with_children,
    _healthy,
    _metrics,
    _peak_rss_kib,
    _spawn,
    _stop,
    _tail,
    _wait,
    create_records_table,
)
from hierarchy_config.loader import load_config
from hierarchy_config.network_init import init_network
from node.app import Node
from node.datagen import generate_records
from node.db import sqlite_path
from node.demo import free_port_range
from node.records import validate_record

INGEST_CHUNK = 2000
POLL_S = 0.05
STARTUP_TIMEOUT_S = 60.0
_COLS = ", ".join(f'"{c}"' for c in RECORD_COLUMNS)


@dataclass
class Tree:
    root: Path
    ids: dict[str, str]  # level -> node id
    configs: dict[str, Path]
    urls: dict[str, str] = field(default_factory=dict)
    urls_http: dict[str, str] = field(default_factory=dict)


def lay_out_tree(
    root: Path,
    databases: dict[str, str] | None = None,
    limits: dict[str, int] | None = None,
    sync: dict[str, object] | None = None,
) -> Tree:
    """ministry → province → city in `root`; `databases` maps a level to a database URL."""
    layout = init_network(
        root / "net", provinces=1, cities_per_province=1, base_port=free_port_range(3)
    )
    entries = {
        "ministry": layout.ministry(),
        "province": layout.provinces()[0],
        "city": layout.cities()[0],
    }
    tree = Tree(
        root, {k: e.id for k, e in entries.items()}, {k: e.config_path for k, e in entries.items()}
    )
    for level, entry in entries.items():
        doc = tomllib.loads(entry.config_path.read_text(encoding="utf-8"))
        if databases and level in databases:
            doc["node"]["database"] = databases[level]
        doc["limits"] = {**doc.get("limits", {}), **(limits or {})}
        doc["sync"] = {**doc.get("sync", {}), **(sync or {})}
        entry.config_path.write_bytes(tomli_w.dumps(doc).encode())
        tree.urls[level] = load_config(entry.config_path).node.database
        tree.urls_http[level] = entry.url
    return tree


async def init_databases(tree: Tree, levels: list[str]) -> None:
    """Create (migrate) the databases of `levels`, empty."""
    for level in levels:
        node = Node.open(load_config(tree.configs[level]))
        try:
            await node.init_database()
        finally:
            await node.stop()


async def prepare_tree(tree: Tree, n: int, seed: int = 1) -> dict[str, Any]:
    """Initialise every database; fill the city's change log with n generated records."""
    await init_databases(tree, ["ministry", "province"])
    city = Node.open(load_config(tree.configs["city"]))
    try:
        await city.init_database()
        t0 = time.perf_counter()
        recs = [validate_record(o) for o in generate_records(tree.ids["city"], n, seed=seed)]
        for i in range(0, len(recs), INGEST_CHUNK):
            await city.store.ingest(recs[i : i + INGEST_CHUNK], city.clock.time_ms())
        meta = await city.store.meta()
        ingest_s = time.perf_counter() - t0
    finally:
        await city.stop()
    if meta.last_seq != n:
        raise BenchError(f"city change log holds {meta.last_seq} entries, expected {n}")
    return {"epoch": meta.epoch, "last_seq": meta.last_seq, "ingest_s": ingest_s}


def city_rows(tree: Tree) -> list[tuple[Any, ...]]:
    engine = create_engine(tree.urls["city"])
    try:
        with engine.connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(
                    text(f"SELECT {_COLS} FROM records WHERE owner = :o ORDER BY seq"),
                    {"o": tree.ids["city"]},
                )
            ]
    finally:
        engine.dispose()


def content_digest(url: str, owner: str) -> tuple[int, str]:
    """Count and SHA-256 of an owner's records (all but updated_ms), in key order."""
    cols = ", ".join(f'"{c}"' for c in RECORD_COLUMNS if c != "updated_ms")
    h = hashlib.sha256()
    count = 0
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            for row in conn.execute(
                text(f'SELECT {cols} FROM records WHERE owner = :o ORDER BY record_type, "key"'),
                {"o": owner},
            ):
                vals = [bool(v) if i == 4 else v for i, v in enumerate(row)]
                h.update(repr(vals).encode())
                count += 1
    finally:
        engine.dispose()
    return count, h.hexdigest()


# -- baselines -------------------------------------------------------------------------------------


def ceiling(rows: list[tuple[Any, ...]], url: str, work: Path, repeats: int = 3) -> dict[str, Any]:
    """The same rows bulk-upserted into an empty `records` table of the same database, with the
    same columns, primary key and secondary indexes (the node's schema: every insert maintains
    them), with the driver only: SQLite executemany in one transaction (the node's pragmas), or
    on PostgreSQL binary COPY into a staging table + INSERT … SELECT … ON CONFLICT
    (version-guarded). Best of `repeats`.

    On PostgreSQL it also times, for information, a binary COPY of the same rows straight into
    such a table (`copy_new_records_per_s`: what rows known to be new can do; not an upsert)."""
    times = []
    copy_times = []
    path = sqlite_path(url)
    marks = ", ".join("?" for _ in RECORD_COLUMNS)
    sets = ", ".join(f'"{c}" = excluded."{c}"' for c in UPDATED_COLUMNS)
    for attempt in range(repeats):
        if path is not None:
            file = work / f"ceiling-{secrets.token_hex(4)}.db"
            create_records_table(file)
            conn = _connect(file)
            try:
                sql = (
                    f"INSERT INTO records ({_COLS}) VALUES ({marks}) ON CONFLICT"
                    f' (record_type, owner, "key") DO UPDATE SET {sets}'
                    " WHERE excluded.version > records.version"
                )
                t0 = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
                times.append(time.perf_counter() - t0)
                (count,) = conn.execute("SELECT count(*) FROM records").fetchone()
            finally:
                conn.close()
        else:
            count, seconds = _pg_ceiling(rows, url, sets, attempt, merge=True)
            times.append(seconds)
            copied, copy_seconds = _pg_ceiling(rows, url, sets, attempt, merge=False)
            copy_times.append(copy_seconds)
            if copied != len(rows):
                raise BenchError(f"COPY table holds {copied} rows, expected {len(rows)}")
        if count != len(rows):
            raise BenchError(f"ceiling table holds {count} rows, expected {len(rows)}")
    best = min(times)
    out = {
        "rows": len(rows),
        "seconds": best,
        "all_seconds": times,
        "records_per_s": len(rows) / best,
        "table": "records (node schema: primary key and secondary indexes)",
    }
    if copy_times:
        out["copy_new_records_per_s"] = len(rows) / min(copy_times)
    return out


_PG_TYPES = ("text", "text", "text", "int8", "bool", "text", "text", "text", "text", "int8", "int8")


def _pg_ceiling(
    rows: list[tuple[Any, ...]], url: str, sets: str, attempt: int, *, merge: bool
) -> tuple[int, float]:
    """Into a copy of the database's own `records` table (LIKE … INCLUDING ALL: its primary key
    and indexes): binary COPY into a staging table and one version-guarded merge, or (merge
    False) binary COPY straight into the table."""
    import psycopg

    rows = [(*r[:4], bool(r[4]), *r[5:]) for r in rows]  # SQLite gives 0/1 for booleans
    table = f"bench_ceiling_{attempt}_{secrets.token_hex(3)}"
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as pg:
        pg.execute(f"CREATE TABLE {table} (LIKE records INCLUDING ALL)")
        try:
            t0 = time.perf_counter()
            with pg.transaction(), pg.cursor() as cur:
                if merge:
                    cur.execute(f"CREATE TEMP TABLE stage (LIKE {table}) ON COMMIT DROP")
                target = "stage" if merge else table
                with cur.copy(f"COPY {target} ({_COLS}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(_PG_TYPES)
                    for r in rows:
                        copy.write_row(r)
                if merge:
                    cur.execute(
                        f"INSERT INTO {table} ({_COLS}) SELECT {_COLS} FROM stage"
                        f' ON CONFLICT (record_type, owner, "key") DO UPDATE SET {sets}'
                        f" WHERE excluded.version > {table}.version"
                    )
            seconds = time.perf_counter() - t0
            (count,) = pg.execute(f"SELECT count(*) FROM {table}").fetchone() or (0,)
        finally:
            pg.execute(f"DROP TABLE IF EXISTS {table}")
    return int(count), seconds


# -- the timed run ---------------------------------------------------------------------------------


def timed_hops(
    tree: Tree,
    levels: list[str],
    target: str,
    epoch: str,
    last_seq: int,
    timeout_s: float,
    servers: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Start `levels` top-down as processes; time until `target` has applied the city's log."""
    procs: dict[str, Any] = {}
    logs = {lv: tree.root / f"{lv}.log" for lv in levels}
    engine = create_engine(tree.urls[target])
    try:
        for lv in levels:
            if lv == "city":
                continue
            procs[lv] = _spawn(tree.configs[lv], logs[lv])
            _wait(
                lv,
                lambda lv=lv: _healthy(tree.urls_http[lv]),
                procs[lv],
                logs[lv],
                STARTUP_TIMEOUT_S,
            )
        procs["city"] = _spawn(tree.configs["city"], logs["city"])
        started = _wait(
            "city",
            lambda: b"running on" in logs["city"].read_bytes(),
            procs["city"],
            logs["city"],
            STARTUP_TIMEOUT_S,
        )
        cpu0 = {lv: _cpu_with_children(p.pid) or 0.0 for lv, p in procs.items()}
        server0 = {k: server_cpu_seconds(d) for k, d in (servers or {}).items()}
        seq = 0
        deadline = time.monotonic() + timeout_s
        with engine.connect() as conn:
            while True:
                row = conn.execute(
                    text("SELECT seq FROM watermarks WHERE origin = :o AND epoch = :e"),
                    {"o": tree.ids["city"], "e": epoch},
                ).first()
                conn.rollback()
                seq = 0 if row is None else int(row[0])
                if seq >= last_seq or time.monotonic() > deadline:
                    break
                for lv, p in procs.items():
                    if p.poll() is not None:
                        raise BenchError(f"{lv} exited with {p.returncode}: {_tail(logs[lv])}")
                time.sleep(POLL_S)
        done = time.perf_counter()
        if seq < last_seq:
            raise BenchError(f"{target} reached seq {seq} of {last_seq} within {timeout_s}s")
        rss = {lv: (_peak_rss_kib(p.pid) or 0) / 1024 for lv, p in procs.items()}
        for lv, p in procs.items():  # a receiving node's apply process (ADR 0014)
            children = _children_peak_rss_kib(p.pid) / 1024
            if children:
                rss[f"{lv}_children"] = children
        cpu = {lv: (_cpu_with_children(p.pid) or 0.0) - cpu0[lv] for lv, p in procs.items()}
        server_cpu = {k: server_cpu_seconds(d) - server0[k] for k, d in (servers or {}).items()}
        city_m, target_m = _metrics(tree.urls_http["city"]), _metrics(tree.urls_http[target])
    finally:
        engine.dispose()
        for p in reversed(list(procs.values())):
            _stop(p)
    seconds = done - started
    round_trips = city_m.get("lsnet_sync_push_seconds_sum", 0.0)
    return {
        "seconds": seconds,
        "records_per_s": last_seq / seconds,
        "peak_rss_mib": rss,
        "cpu_s": cpu,
        # Where the wall time went, from the nodes' own metrics: the city waiting for answers
        # (of which the target applying in its database), and the rest (the city cutting,
        # signing and recording acknowledgements between pushes).
        "city_push_round_trips_s": round_trips,
        "city_pushes": int(city_m.get("lsnet_sync_push_seconds_count", 0.0)),
        "target_apply_s": target_m.get("lsnet_sync_apply_seconds_sum", 0.0),
        "city_between_pushes_s": max(0.0, seconds - round_trips),
        "server_cpu_s": server_cpu,
    }


def server_cpu_seconds(datadir: Path) -> float:
    """CPU time so far of a PostgreSQL cluster's server processes (the postmaster and its live
    children: the nodes' backends, WAL writer, checkpointer ...), from /proc."""
    try:
        postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return _cpu_with_children(postmaster) or 0.0


def check_content(tree: Tree, holder: str, n: int) -> None:
    own = content_digest(tree.urls["city"], tree.ids["city"])
    held = content_digest(tree.urls[holder], tree.ids["city"])
    if own != held or own[0] != n:
        raise BenchError(
            f"{holder} holds {held[0]} records of the city (digest {held[1][:12]}), "
            f"the city {own[0]} (digest {own[1][:12]})"
        )


def sqlite_rows_from(path: Path, owner: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(
            f"SELECT {_COLS} FROM records WHERE owner = ? ORDER BY seq", (owner,)
        ).fetchall()
    finally:
        conn.close()
