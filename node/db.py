"""Connections to the resource database and the thread that runs its transactions.

SQLite (the default) runs in WAL mode with `synchronous=FULL`; write transactions start with
`BEGIN IMMEDIATE` so a writer never has to upgrade a read lock. PostgreSQL is used by URL
(`postgresql+psycopg://...`). Transaction bodies are plain functions `body(conn, ...)` run on a
worker thread: one writer thread, so change-log sequence numbers are allocated by one writer at a
time, and a small pool of readers. Schema changes go only through Alembic (`migrate`).

This module knows nothing about records or batches.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

P = ParamSpec("P")
T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DatabaseError(Exception):
    """The database cannot be used as configured; the message says what to do."""


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


# SQLite page cache per connection, in KiB. It was 80 MiB: a node's peak RSS then grew with its
# database until every connection's cache was full (catch-up of a 100k backlog: 254 MiB at the
# province, of 1M: 402 MiB). With 8 MiB the cache is full within the first few thousand
# records, so memory stays flat as the data grows; pages beyond it come from the OS page cache
# (docs/benchmarks.md, "Catch-up memory").
SQLITE_CACHE_KIB = 8 * 1024


def _make_engine(url: str, *, immediate: bool, cache_kib: int = SQLITE_CACHE_KIB) -> Engine:
    if is_sqlite(url):
        engine = create_engine(url, poolclass=NullPool if ":memory:" in url else None)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute(f"PRAGMA cache_size=-{cache_kib}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4)


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url[len("sqlite:///") :])
    return None


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


class Database:
    """A resource database: a writer engine, a reader engine and their worker threads."""

    def __init__(self, url: str) -> None:
        self.url = url
        path = sqlite_path(url)
        if path is not None and not path.parent.is_dir():
            raise DatabaseError(f"database folder {path.parent} does not exist")
        self.writer = _make_engine(url, immediate=True)
        self.reader = self.writer if not is_sqlite(url) else _make_engine(url, immediate=False)
        self._write_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="db-write")
        self._read_pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="db-read")

    # -- schema ----------------------------------------------------------------------------------
    def migrate(self) -> str:
        """Create or upgrade the schema to the newest migration; return the revision."""
        cfg = _alembic_config()
        with self.writer.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return head_revision()

    def current_revision(self) -> str | None:
        try:
            with self.reader.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        except OperationalError as exc:
            raise DatabaseError(f"cannot open database: {exc.orig}") from None

    def check_schema(self) -> None:
        """Raise DatabaseError unless the schema is at the newest migration."""
        path = sqlite_path(self.url)
        if path is not None and not path.exists():
            raise DatabaseError(
                f"database {path} does not exist; run 'lsnet node init --config <node.toml>' first"
            )
        current = self.current_revision()
        head = head_revision()
        if current != head:
            raise DatabaseError(
                f"database schema is at {current or 'nothing'}, this software needs {head}; "
                "run 'lsnet node init --config <node.toml>' first"
            )

    # -- transactions ----------------------------------------------------------------------------
    def write_sync(self, body: Callable[..., T], *args: Any) -> T:
        with self.writer.begin() as conn:
            return body(conn, *args)

    def read_sync(self, body: Callable[..., T], *args: Any) -> T:
        with self.reader.begin() as conn:
            return body(conn, *args)

    async def write(self, body: Callable[..., T], *args: Any) -> T:
        """Run `body(conn, *args)` as one write transaction on the writer thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._write_pool, self.write_sync, body, *args)

    async def read(self, body: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_pool, self.read_sync, body, *args)

    def close(self) -> None:
        self._write_pool.shutdown(wait=True)
        self._read_pool.shutdown(wait=True)
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()

    def size_bytes(self) -> int | None:
        path = sqlite_path(self.url)
        if path is None or not path.exists():
            return None
        total = path.stat().st_size
        wal = path.with_name(path.name + "-wal")
        return total + (wal.stat().st_size if wal.exists() else 0)
