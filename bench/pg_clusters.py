"""Throw-away local PostgreSQL clusters for benchmarks: `initdb` + `pg_ctl` from the Debian
PostgreSQL binaries, each in its own temporary folder, listening on a spare loopback port, with
`wal_level = logical` so one can publish to another. Torn down (stopped, folder removed) on exit.

PostgreSQL refuses to run as root; when the benchmark runs as root the clusters run as the
`postgres` system user (through `runuser`), in folders that user owns.

What it does not do: no tuning beyond what a benchmark needs, no TLS, no passwords (trust
authentication on 127.0.0.1 only). It never touches the shared server on port 5432.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from node.demo import free_port_range

PG_BIN = Path(os.environ.get("LSNET_PG_BIN", "/usr/lib/postgresql/15/bin"))
START_TIMEOUT_S = 60


class ClusterError(Exception):
    """A temporary cluster could not be created or started."""


@dataclass(frozen=True)
class Cluster:
    datadir: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"


def available() -> bool:
    return (PG_BIN / "initdb").exists() and (PG_BIN / "pg_ctl").exists()


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def _run(cmd: list[str], timeout: float = START_TIMEOUT_S) -> None:
    proc = subprocess.run(
        _as_postgres(cmd), capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise ClusterError(f"{' '.join(cmd[:2])} failed: {proc.stderr.strip()[-800:]}")


@contextmanager
def cluster(settings: dict[str, str] | None = None) -> Iterator[Cluster]:
    """One started cluster; stopped and deleted afterwards, whatever happens."""
    if not available():
        raise ClusterError(f"PostgreSQL binaries not found in {PG_BIN}")
    root = Path(tempfile.mkdtemp(prefix="lsnet-pg-"))
    datadir = root / "data"
    started = False
    try:
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(root, pg.pw_uid, pg.pw_gid)
        _run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(datadir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        port = free_port_range(1)
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": f"'{root}'",
            "wal_level": "logical",
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            "shared_buffers": "'256MB'",
            "fsync": "on",
            **(settings or {}),
        }
        with (datadir / "postgresql.conf").open("a", encoding="utf-8") as fh:
            for k, v in conf.items():
                fh.write(f"{k} = {v}\n")
        _run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(datadir),
                "-l",
                str(root / "log"),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "start",
            ]
        )
        started = True
        yield Cluster(datadir, port)
    finally:
        if started:
            with suppress(ClusterError, subprocess.TimeoutExpired):
                _run([str(PG_BIN / "pg_ctl"), "-D", str(datadir), "-m", "fast", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def two_clusters() -> Iterator[tuple[Cluster, Cluster]]:
    with ExitStack() as stack:
        a = stack.enter_context(cluster())
        b = stack.enter_context(cluster())
        yield a, b


def wait_for(predicate: object, timeout_s: float, what: str) -> float:
    """Poll `predicate()` until true; return the perf_counter time it became true."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.perf_counter()
        time.sleep(0.02)
    raise ClusterError(f"{what} did not happen within {timeout_s:.0f}s")
