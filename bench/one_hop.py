"""One-hop replication benchmark: city → province over real HTTP on 127.0.0.1, SQLite files.

What it measures: the rate (records/s) at which a province applies a city's backlog of N records
that are already in the city's change log, as a ratio to the local ceiling measured in the same
run — a bulk upsert of the same record rows into an empty `records` table made from the node's
own schema (same columns, primary key and secondary indexes, which every insert must also
maintain) with the `sqlite3` module directly (one `executemany`, one transaction, the node's
pragmas: WAL, synchronous=FULL, cache size).

How: lay out a ministry → province → city network in a temporary folder (the ministry is never
started; the province's relay attempts towards it fail fast and back off), initialise both
databases, generate N records with `node.datagen` and ingest them into the city through
`NodeStore` in chunks, before any upstream queue runs. Then start the province and the city as
separate `lsnet node run` processes (so each one's peak RSS can be read from /proc), and time from
the moment the city reports it is running until the province's watermark for the city's epoch
equals the city's last_seq (read from the province's SQLite file, polled with a short interval
and a deadline). Then read both nodes' /metrics, peak RSS (VmHWM) and CPU time from /proc, stop
them, and check that the province holds exactly the city's records (count and content digest).

What it does not do: it sends no traffic anywhere but 127.0.0.1, it does not start the ministry,
and it does not profile (see bench/README.md for how the analysis in docs/benchmarks.md was made).

    python bench/one_hop.py [--records 100000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from sqlalchemy import create_engine

from hierarchy_config.loader import load_config
from hierarchy_config.network_init import NetworkLayout, init_network
from node.app import Node
from node.datagen import generate_records
from node.db import sqlite_path
from node.demo import free_port_range
from node.records import validate_record
from node.schema import records

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: find `bench`
from bench.delay_link import DelayLink

INGEST_CHUNK = 1000
POLL_INTERVAL_S = 0.01  # the watermark poll: a cheap indexed read; 50 ms steps were 3 % of a run
LOG_LEVEL = os.environ.get("LSNET_BENCH_LOG_LEVEL", "warning")
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
CEILING_REPEATS = 3
CACHE_PAGES = 20_000  # as node.db._make_engine
RECORD_COLUMNS = tuple(c.name for c in records.c)
UPDATED_COLUMNS = RECORD_COLUMNS[3:]


class BenchError(Exception):
    """The benchmark could not complete; the message says which step failed."""


@dataclass(frozen=True)
class Nodes:
    layout: NetworkLayout
    city_id: str
    province_id: str
    city_config: Path
    province_config: Path
    city_db: Path
    province_db: Path


# -- set-up ----------------------------------------------------------------------------------------


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))


def _set_parent_url(config: Path, url: str) -> None:
    """Point the city at `url` (the delay relay) instead of its province."""
    doc = tomllib.loads(config.read_text(encoding="utf-8"))
    doc["parent"]["url"] = url
    config.write_bytes(tomli_w.dumps(doc).encode())


def lay_out(root: Path, limits: dict[str, int], sync: dict[str, object]) -> Nodes:
    layout = init_network(
        root / "net", provinces=1, cities_per_province=1, base_port=free_port_range(3)
    )
    city = layout.cities()[0]
    province = layout.provinces()[0]
    if limits or sync:
        for entry in (city, province):
            doc = tomllib.loads(entry.config_path.read_text(encoding="utf-8"))
            doc["limits"] = {**doc.get("limits", {}), **limits}
            doc["sync"] = {**doc.get("sync", {}), **sync}
            entry.config_path.write_bytes(tomli_w.dumps(doc).encode())
    city_db = sqlite_path(load_config(city.config_path).node.database)
    province_db = sqlite_path(load_config(province.config_path).node.database)
    if city_db is None or province_db is None:
        raise BenchError("the laid-out network does not use SQLite files")
    return Nodes(
        layout, city.id, province.id, city.config_path, province.config_path, city_db, province_db
    )


async def prepare(nodes: Nodes, n: int, seed: int) -> dict[str, Any]:
    """Initialise both databases and fill the city's change log; no upstream queue runs."""
    province = Node.open(load_config(nodes.province_config))
    try:
        await province.init_database()
    finally:
        await province.stop()
    city = Node.open(load_config(nodes.city_config))
    try:
        await city.init_database()
        t0 = time.perf_counter()
        recs = [validate_record(o) for o in generate_records(nodes.city_id, n, seed=seed)]
        t1 = time.perf_counter()
        for i in range(0, len(recs), INGEST_CHUNK):
            await city.store.ingest(recs[i : i + INGEST_CHUNK], city.clock.time_ms())
        t2 = time.perf_counter()
        meta = await city.store.meta()
    finally:
        await city.stop()
    if meta.last_seq != n:
        raise BenchError(f"city change log holds {meta.last_seq} entries, expected {n}")
    return {
        "epoch": meta.epoch,
        "last_seq": meta.last_seq,
        "generate_s": t1 - t0,
        "ingest_s": t2 - t1,
    }


def snapshot(nodes: Nodes, into: Path) -> None:
    """Copy both databases, as `prepare` left them, so that each of several timed runs starts
    from the same state (`--runs`)."""
    into.mkdir()
    for db in (nodes.city_db, nodes.province_db):
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        shutil.copyfile(db, into / f"{db.parent.name}-{db.name}")


def restore(nodes: Nodes, frm: Path) -> None:
    """Put back the databases `snapshot` copied (the nodes are stopped)."""
    for db in (nodes.city_db, nodes.province_db):
        for extra in ("-wal", "-shm"):
            db.with_name(db.name + extra).unlink(missing_ok=True)
        shutil.copyfile(frm / f"{db.parent.name}-{db.name}", db)


# -- local ceiling ---------------------------------------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute(f"PRAGMA cache_size=-{CACHE_PAGES * 4}")
    return conn


def create_records_table(path: Path) -> None:
    """An empty `records` table in a new SQLite file, from the node's schema: the same columns,
    primary key and secondary indexes as the table a province applies into."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        records.create(engine)
    finally:
        engine.dispose()


def measure_ceiling(nodes: Nodes, work: Path, repeats: int = CEILING_REPEATS) -> dict[str, Any]:
    """Bulk upsert of the city's own record rows into an empty `records` table (node schema).

    Repeated `repeats` times, each into a new file; the fastest counts (fsync times vary)."""
    src = sqlite3.connect(f"file:{nodes.city_db}?mode=ro", uri=True)
    cols = ", ".join(f'"{c}"' for c in RECORD_COLUMNS)
    try:
        rows = src.execute(
            f"SELECT {cols} FROM records WHERE owner = ? ORDER BY seq", (nodes.city_id,)
        ).fetchall()
    finally:
        src.close()
    marks = ", ".join("?" for _ in RECORD_COLUMNS)
    sets = ", ".join(f'"{c}" = excluded."{c}"' for c in UPDATED_COLUMNS)
    sql = (
        f"INSERT INTO records ({cols}) VALUES ({marks})"
        f' ON CONFLICT (record_type, owner, "key") DO UPDATE SET {sets}'
        " WHERE excluded.version > records.version"
    )
    times = []
    for attempt in range(repeats):
        path = work / f"ceiling-{attempt}.db"
        create_records_table(path)
        conn = _connect(path)
        try:
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows)
            conn.execute("COMMIT")
            times.append(time.perf_counter() - t0)
            (count,) = conn.execute("SELECT count(*) FROM records").fetchone()
        finally:
            conn.close()
        if count != len(rows):
            raise BenchError(f"ceiling table holds {count} rows, expected {len(rows)}")
    best = min(times)
    return {
        "rows": len(rows),
        "seconds": best,
        "all_seconds": times,
        "records_per_s": len(rows) / best,
    }


# -- the timed run ---------------------------------------------------------------------------------


def _lsnet() -> str:
    exe = Path(sys.executable).with_name("lsnet")
    if exe.exists():
        return str(exe)
    found = shutil.which("lsnet")
    if found is None:
        raise BenchError("the 'lsnet' command is not installed next to this Python")
    return found


def _spawn(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`lsnet node run` for `config`; under py-spy when LSNET_BENCH_PYSPY names a folder (raw
    wall-clock profiles with idle time, one file per node; the node is then stopped with SIGINT,
    on which py-spy writes the profile)."""
    command = [_lsnet(), "node", "run", "--config", str(config), "--log-level", LOG_LEVEL]
    profile_dir = os.environ.get("LSNET_BENCH_PYSPY")
    if profile_dir:
        out = Path(profile_dir) / f"{config.parent.name}-{config.stem}.txt"
        py_spy = str(Path(sys.executable).parent / "py-spy")
        command = [
            py_spy,
            "record",
            "-r",
            "250",
            "-f",
            os.environ.get("LSNET_BENCH_PYSPY_FORMAT", "raw"),
            "--idle",
            "-t",
            "--subprocesses",
        ]
        command += ["-o", str(out)]
        command += ["--"]
        command += [_lsnet(), "node", "run", "--config", str(config), "--log-level", LOG_LEVEL]
    with log.open("wb") as fh:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT
        )


def _get(url: str, timeout_s: float = 10.0) -> bytes:
    if not url.startswith("http://127.0.0.1:"):
        raise BenchError(f"refusing to contact {url}: the benchmark talks to 127.0.0.1 only")
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return bytes(resp.read())


def _wait(
    what: str, ready: Any, proc: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> float:
    """Poll `ready()` until true; return the time it became true (perf_counter)."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / 0.01) + 1):
        if ready():
            return time.perf_counter()
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}: {_tail(log)}")
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    raise BenchError(f"{what} not ready within {timeout_s}s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(encoding="utf-8", errors="replace")[-2000:]
    except OSError:
        return ""


def _healthy(url: str) -> bool:
    try:
        _get(url + "/healthz", timeout_s=1.0)
        return True
    # HTTPException: before the node listens, a loopback connect to a free port can connect the
    # socket to itself and read back its own request (BadStatusLine "GET /healthz ...").
    except (OSError, BenchError, http.client.HTTPException):
        return False


def _peak_rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (from /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child_pids(pid: int) -> list[int]:
    """Live children of a process, from /proc (a node's apply process, ADR 0014, and
    multiprocessing's resource tracker; a PostgreSQL postmaster's backends)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text_ = stat.read_text()
        except OSError:
            continue
        fields = text_[text_.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:  # ppid
            found.append(int(stat.parent.name))
    return found


def _cpu_with_children(pid: int) -> float | None:
    """CPU time so far of a process and its live children: children's time counts in the
    parent only once they are reaped, which is after the benchmark has read it."""
    own = _cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(_cpu_seconds(child) or 0.0 for child in _child_pids(pid))


def _cpu_split(province: int, city: int) -> dict[str, float | None]:
    """CPU so far of the province (with its children), of its main process alone (the verifier)
    and of the city."""
    return {
        "province": _cpu_with_children(province),
        "province_main": _cpu_seconds(province),
        "city": _cpu_seconds(city),
    }


def _children_peak_rss_kib(pid: int) -> int:
    """Sum of the peak RSS of a process's live children (0 when it has none)."""
    return sum(_peak_rss_kib(child) or 0 for child in _child_pids(pid))


_METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def _metrics(url: str) -> dict[str, float]:
    """Prometheus text → {name: value} summed over label sets, and {name{labels}: value}."""
    out: dict[str, float] = {}
    for line in _get(url + "/metrics").decode().splitlines():
        m = _METRIC.match(line)
        if m is None:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out[m.group(1)] = out.get(m.group(1), 0.0) + value
        if m.group(2):
            out[m.group(1) + m.group(2)] = value
    return out


def content_digest(db: Path, owner: str) -> tuple[int, str]:
    """Count and SHA-256 of an owner's records (everything but updated_ms), in key order."""
    h = hashlib.sha256()
    count = 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cols = ", ".join(f'"{c}"' for c in RECORD_COLUMNS if c != "updated_ms")
        for row in conn.execute(
            f'SELECT {cols} FROM records WHERE owner = ? ORDER BY record_type, "key"', (owner,)
        ):
            h.update(repr(row).encode())
            count += 1
    finally:
        conn.close()
    return count, h.hexdigest()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT if os.environ.get("LSNET_BENCH_PYSPY") else signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)


def timed_run(
    nodes: Nodes, work: Path, epoch: str, last_seq: int, timeout_s: float, tag: str = ""
) -> dict[str, Any]:
    """One timed sync of the prepared backlog; the nodes' logs go to `province{tag}.log` and
    `city{tag}.log` in `work`."""
    city_entry = nodes.layout.by_id(nodes.city_id)
    province_entry = nodes.layout.by_id(nodes.province_id)
    province_log, city_log = work / f"province{tag}.log", work / f"city{tag}.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        province = _spawn(nodes.province_config, province_log)
        procs.append(province)
        _wait(
            "province",
            lambda: _healthy(province_entry.url),
            province,
            province_log,
            STARTUP_TIMEOUT_S,
        )
        spawned = time.perf_counter()
        city = _spawn(nodes.city_config, city_log)
        procs.append(city)
        started = _wait(
            "city",
            lambda: b"running on" in city_log.read_bytes(),
            city,
            city_log,
            STARTUP_TIMEOUT_S,
        )
        cpu0 = _cpu_split(province.pid, city.pid)
        watch = sqlite3.connect(f"file:{nodes.province_db}?mode=ro", uri=True, isolation_level=None)
        try:
            seq = 0
            deadline = time.monotonic() + timeout_s
            for _ in range(int(timeout_s / POLL_INTERVAL_S) + 1):
                row = watch.execute(
                    "SELECT seq FROM watermarks WHERE origin = ? AND epoch = ?",
                    (nodes.city_id, epoch),
                ).fetchone()
                seq = 0 if row is None else int(row[0])
                if seq >= last_seq or time.monotonic() > deadline:
                    break
                for proc, log in ((province, province_log), (city, city_log)):
                    if proc.poll() is not None:
                        raise BenchError(f"a node exited with {proc.returncode}: {_tail(log)}")
                time.sleep(POLL_INTERVAL_S)
            done = time.perf_counter()
            (held,) = watch.execute(
                "SELECT count(*) FROM records WHERE owner = ?", (nodes.city_id,)
            ).fetchone()
        finally:
            watch.close()
        if seq < last_seq:
            raise BenchError(
                f"province reached seq {seq} of {last_seq} within {timeout_s}s: {_tail(city_log)}"
            )
        rss = {
            "province": _peak_rss_kib(province.pid),
            "province_children": _children_peak_rss_kib(province.pid),
            "city": _peak_rss_kib(city.pid),
        }
        cpu1 = _cpu_split(province.pid, city.pid)
        pm, cm = _metrics(province_entry.url), _metrics(city_entry.url)
    finally:
        for proc in reversed(procs):
            _stop(proc)
    seconds = done - started
    return {
        "seconds": seconds,
        "seconds_from_spawn": done - spawned,
        "city_startup_s": started - spawned,
        "records_per_s": last_seq / seconds,
        "province_records": int(held),
        "peak_rss_kib": rss,
        "cpu_s": {k: (cpu1[k] or 0.0) - (cpu0[k] or 0.0) for k in cpu0},
        "province_read_s": pm.get('lsnet_sync_receive_seconds_sum{stage="read"}', 0.0),
        "province_verify_s": pm.get('lsnet_sync_receive_seconds_sum{stage="verify"}', 0.0),
        "province_apply_s": pm.get("lsnet_sync_apply_seconds_sum", 0.0),
        "province_batches_applied": int(pm.get("lsnet_sync_apply_seconds_count", 0.0)),
        "province_records_applied": int(pm.get("lsnet_sync_records_applied_total", 0.0)),
        "city_push_round_trip_s": cm.get("lsnet_sync_push_seconds_sum", 0.0),
        "city_pushes": int(cm.get("lsnet_sync_push_seconds_count", 0.0)),
        "city_batches_sent": int(cm.get("lsnet_sync_batches_sent_total", 0.0)),
    }


# -- report ----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
    }


def render(r: dict[str, Any]) -> str:
    run, ceil = r["run"], r["ceiling"]
    rss = run["peak_rss_kib"]
    outside = run["seconds"] - run["city_push_round_trip_s"]
    in_push = run["city_push_round_trip_s"] - run["province_apply_s"]
    m = r["machine"]
    lines = [
        f"one hop city {r['city']} -> province {r['province']}, {r['records']} records, "
        f"limits {r['limits'] or 'default'}, sync {r['sync'] or 'default'}",
        f"machine: {m['nproc']} cpu, Python {m['python']}, SQLite {m['sqlite']}",
        f"applied at province : {run['records_per_s']:>10,.0f} records/s "
        f"({run['seconds']:.2f} s from city start; {run['seconds_from_spawn']:.2f} s from spawn)",
        f"local ceiling       : {ceil['records_per_s']:>10,.0f} records/s "
        f"({ceil['seconds']:.2f} s, sqlite3 executemany, one transaction, best of "
        f"{len(ceil['all_seconds'])})",
        f"ratio               : {r['ratio']:.3f} (target >= 0.5)",
        f"peak RSS            : province {rss['province'] / 1024:.0f} MiB "
        f"(+ {rss['province_children'] / 1024:.0f} MiB in its apply process), "
        f"city {rss['city'] / 1024:.0f} MiB",
        f"CPU during the run  : province {run['cpu_s']['province']:.2f} s, "
        f"city {run['cpu_s']['city']:.2f} s",
        f"province apply (DB) : {run['province_apply_s']:.2f} s over "
        f"{run['province_batches_applied']} batches (lsnet_sync_apply_seconds_sum)",
        f"province read, verify: {run['province_read_s']:.2f} s, {run['province_verify_s']:.2f} s "
        "(lsnet_sync_receive_seconds_sum; with an apply process, writing overlaps verifying)",
        f"province verify+HTTP: {in_push:.2f} s (push round trips minus apply)",
        f"city cut/sign/acks  : {outside:.2f} s (wall minus push round trips, "
        f"{run['city_pushes']} pushes)",
        f"set-up              : generate+validate {r['prepare']['generate_s']:.1f} s, "
        f"ingest into city {r['prepare']['ingest_s']:.1f} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000, help="records in the city's log")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--no-revalidate",
        action="store_true",
        help="set [sync] revalidate_records = false on the province (ADR 0005)",
    )
    ap.add_argument(
        "--apply-process",
        choices=("on", "off"),
        default=None,
        help="set [sync] apply_process on the province (ADR 0014); default: the node's default",
    )
    ap.add_argument(
        "--pushes-in-flight",
        type=int,
        default=None,
        help="set [sync] pushes_in_flight on both nodes (ADR 0015); default: the node's default",
    )
    ap.add_argument(
        "--rtt-ms",
        type=float,
        default=0.0,
        help="route the city's pushes through a loopback relay adding this round-trip time "
        "(bench/delay_link.py), as a WAN link between the two centres would",
    )
    ap.add_argument(
        "--runs",
        type=int,
        default=1,
        help="timed runs from the same prepared databases; the run with the median records/s "
        "counts (all are listed)",
    )
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds allowed for the sync")
    ap.add_argument("--dir", type=Path, default=None, help="keep the data in this empty folder")
    ap.add_argument(
        "--max-batch-changes",
        type=int,
        default=None,
        help="override [limits] max_batch_changes on both nodes",
    )
    ap.add_argument(
        "--max-batches-per-transfer",
        type=int,
        default=None,
        help="override [limits] max_batches_per_transfer on both nodes",
    )
    ap.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        help="override [limits] max_body_bytes on both nodes",
    )
    args = ap.parse_args(argv)
    if not 1 <= args.records <= 10_000_000:
        ap.error("--records must be between 1 and 10,000,000")
    if not 1 <= args.runs <= 20:
        ap.error("--runs must be between 1 and 20")
    if not 0 < args.timeout <= 3600:
        ap.error("--timeout must be in (0, 3600] seconds")
    limits = {
        k: v
        for k, v in (
            ("max_batch_changes", args.max_batch_changes),
            ("max_batches_per_transfer", args.max_batches_per_transfer),
            ("max_body_bytes", args.max_body_bytes),
        )
        if v is not None
    }
    sync: dict[str, object] = {}
    if args.no_revalidate:
        sync["revalidate_records"] = False
    if args.apply_process is not None:
        sync["apply_process"] = args.apply_process == "on"
    if args.pushes_in_flight is not None:
        if not 1 <= args.pushes_in_flight <= 8:
            ap.error("--pushes-in-flight must be between 1 and 8")
        sync["pushes_in_flight"] = args.pushes_in_flight
    if not 0 <= args.rtt_ms <= 2000:
        ap.error("--rtt-ms must be between 0 and 2000")
    tmp = None
    if args.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="lsnet-bench-")
        work = Path(tmp.name)
    else:
        work = args.dir.resolve()
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            ap.error(f"{work} is not empty")

    def log(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr)

    try:
        nodes = lay_out(work, limits, sync)
        log(f"preparing {args.records} records in city {nodes.city_id} ...")
        prep = asyncio.run(prepare(nodes, args.records, args.seed))
        log("measuring the local ceiling ...")
        ceil = measure_ceiling(nodes, work)
        log("timed run: province and city as separate processes ...")
        link = None
        if args.rtt_ms:
            link = DelayLink(_port(nodes.layout.by_id(nodes.province_id).url), args.rtt_ms / 2000)
            _set_parent_url(nodes.city_config, link.start().url)
        if args.runs > 1:
            snapshot(nodes, work / "prepared")
        runs = []
        try:
            for i in range(args.runs):
                if i:
                    restore(nodes, work / "prepared")
                tag = f"-{i + 1}" if args.runs > 1 else ""
                one = timed_run(nodes, work, prep["epoch"], prep["last_seq"], args.timeout, tag)
                own = content_digest(nodes.city_db, nodes.city_id)
                held = content_digest(nodes.province_db, nodes.city_id)
                if own != held or own[0] != args.records:
                    raise BenchError(
                        f"province holds {held[0]} records of the city (digest {held[1][:12]}), "
                        f"the city {own[0]} (digest {own[1][:12]})"
                    )
                one["content_matches"] = True
                runs.append(one)
                log(f"run {i + 1}: {one['records_per_s']:,.0f} records/s")
        finally:
            if link is not None:
                link.stop()
        speeds = [r["records_per_s"] for r in runs]
        run = sorted(runs, key=lambda r: r["records_per_s"])[(len(runs) - 1) // 2]
        if len(runs) > 1:
            run["all_records_per_s"] = speeds
            run["median_records_per_s"] = statistics.median(speeds)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if tmp is not None:
            tmp.cleanup()
    result = {
        "benchmark": "one_hop",
        "records": args.records,
        "city": nodes.city_id,
        "province": nodes.province_id,
        "limits": limits,
        "sync": sync,
        "rtt_ms": args.rtt_ms,
        "machine": machine(),
        "prepare": prep,
        "ceiling": ceil,
        "run": run,
        "ratio": run["records_per_s"] / ceil["records_per_s"],
        "target_ratio": 0.5,
    }
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
