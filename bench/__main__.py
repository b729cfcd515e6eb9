"""`python -m bench`: the lsnet benchmark suite. Prints a table (rich) and writes JSON.

Every figure is a ratio to a baseline measured in the same run (the machine is shared, so
absolute figures move between runs; same-run ratios move much less):

- one hop city → province vs a driver-only bulk upsert into the same database (SQLite, and
  PostgreSQL when a server is given);
- two hops city → province → ministry end to end;
- single-record latency city → ministry on an idle network (p50, p99);
- catch-up of a backlog after an outage (time, peak RSS at each size);
- bytes on the wire per record vs the same records as JSON;
- signature cost per record vs the whole hop's CPU per record;
- PostgreSQL → PostgreSQL hop vs PostgreSQL's own logical replication between two local
  clusters (initdb/pg_ctl, torn down afterwards).

Modes: `--quick` (the default, for CI: 20k-record hops, catch-up of 20k and 200k; under 5
minutes on this 2-core machine) and `--full` (100k-record hops, catch-up of 100k and 1M; see
docs/benchmarks.md for its duration). The SQLite benchmarks share one prepared tree: the city's
backlog is ingested once and grown for larger sizes, and every run starts from saved copies of
the databases. `--only NAME` runs some of them. Results go to
bench/results/<mode>-<UTC time>.json or `--out PATH`.

    python -m bench [--quick | --full] [--only one_hop,latency] [--pg-url URL] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import suite
from bench.pg_clusters import available as clusters_available
from bench.suite import Figure, Sizes

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = ("per_record", "latency", "one_hop", "two_hops", "catch_up", "pg_vs_logical")


def machine() -> dict[str, Any]:
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def plan(sizes: Sizes, pg_url: str | None) -> dict[str, Callable[[], list[Figure]]]:
    return {
        "per_record": lambda: suite.per_record(sizes.stages),
        "latency": lambda: suite.latency(sizes.latency_samples),
        "one_hop": lambda: suite.one_hop(
            sizes.one_hop, sizes.pg_hop, sizes.timeout_s, pg_url, sizes.hop_runs
        ),
        "two_hops": lambda: suite.two_hops(sizes.two_hops, sizes.timeout_s),
        "catch_up": lambda: suite.catch_up(sizes.catch_up, sizes.timeout_s),
        "pg_vs_logical": lambda: suite.pg_vs_logical(
            sizes.logical, sizes.timeout_s, sizes.logical_runs
        ),
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def table(figures: list[Figure]) -> Table:
    t = Table(title="lsnet benchmarks (ratios to same-run baselines)")
    t.add_column("benchmark")
    t.add_column("value", justify="right")
    t.add_column("baseline", justify="right")
    t.add_column("ratio", justify="right")
    t.add_column("target")
    for f in figures:
        t.add_row(
            f.name,
            f"{f.value:,.1f} {f.unit}",
            f"{f.baseline:,.1f} {f.baseline_unit}",
            f"{f.ratio:.3f}",
            f.target,
        )
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="bounded CI mode (the default)")
    mode.add_argument("--full", action="store_true", help="1M backlog, larger hops")
    ap.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(NAMES)}")
    ap.add_argument(
        "--pg-url",
        default=os.environ.get("LSNET_BENCH_DATABASE_URL")
        or os.environ.get("LSNET_TEST_DATABASE_URL"),
        help="PostgreSQL server (SQLAlchemy URL) for the PostgreSQL one-hop figure; a database "
        "is created and dropped on it. Default: $LSNET_BENCH_DATABASE_URL or "
        "$LSNET_TEST_DATABASE_URL",
    )
    ap.add_argument("--out", type=Path, default=None, help="JSON output file")
    args = ap.parse_args(argv)
    sizes = Sizes.full() if args.full else Sizes.quick()
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or list(NAMES)
    unknown = [n for n in chosen if n not in NAMES]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    if "pg_vs_logical" in chosen and not clusters_available():
        print("skipping pg_vs_logical: PostgreSQL binaries not found", file=sys.stderr)
        chosen.remove("pg_vs_logical")
    console = Console(stderr=True)
    runs = plan(sizes, args.pg_url)
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    started = time.monotonic()
    mode_name = "full" if args.full else "quick"
    out = args.out
    if out is None:
        RESULTS.mkdir(exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        out = RESULTS / f"{mode_name}-{stamp}.json"
    info = machine()

    def save(complete: bool) -> None:
        """Written after every benchmark, so an interrupted run keeps what it measured."""
        result = {
            "mode": mode_name,
            "complete": complete,
            "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "total_s": round(time.monotonic() - started, 1),
            "seconds_per_benchmark": timings,
            "machine": info,
            "loadavg_at_end": os.getloadavg(),
            "figures": [f.as_dict() for f in figures],
            "errors": errors,
        }
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")

    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so clusters and nodes are torn down.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with suite.session():
            run_all(chosen, runs, figures, errors, timings, console, save)
    except KeyboardInterrupt:
        errors["interrupted"] = "the run was stopped; figures so far are kept"
        save(complete=False)
        console.print(f"[red]interrupted[/]; partial results in {out}")
        return 130
    save(complete=True)
    Console().print(table(figures))
    console.print(f"wrote {out} ({time.monotonic() - started:.0f} s)")
    return 1 if errors else 0


def run_all(
    chosen: list[str],
    runs: dict[str, Callable[[], list[Figure]]],
    figures: list[Figure],
    errors: dict[str, str],
    timings: dict[str, float],
    console: Console,
    save: Callable[[bool], None],
) -> None:
    """Each chosen benchmark in turn; one failing must not lose the others' figures."""
    for name in chosen:
        console.print(f"[bold]running[/] {name} ...")
        t0 = time.monotonic()
        try:
            figures.extend(runs[name]())
        except Exception as exc:  # one failing benchmark must not lose the others' figures
            errors[name] = f"{type(exc).__name__}: {exc}"
            console.print(f"[red]{name} failed[/]: {exc}")
            traceback.print_exc()
        timings[name] = round(time.monotonic() - t0, 1)
        save(False)


if __name__ == "__main__":
    sys.exit(main())
