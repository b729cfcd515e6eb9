"""How the deterministic simulation (`tests.support.sim`) runs a node's database: cheaply and on
the event loop's own thread, so that hundreds of seeded schedules fit in the default test run.

Profiling one schedule (cProfile, 7 nodes, 60 steps) showed that opening nodes costs little
(about 1 ms of CPU each) and that the time goes to real work — and to two costs the simulation
does not need:

- **Statement compilation.** SQLAlchemy caches compiled statements per engine, keyed by the
  engine's dialect object; every node (re)opened in every schedule has new engines, so every
  statement was compiled again, about a third of the CPU. `FastSQL` gives all the simulation's
  engines one dialect and one compiled-statement cache. The SQL that runs is the same.
- **Worker threads and fsync.** `Database` runs transactions on worker threads with SQLite's
  `synchronous=FULL`. In the simulation nothing runs concurrently (the schedule awaits every
  step), and a "crash" is an in-process stop that cannot lose the operating system's page cache,
  so `InlineExecutor` runs each transaction body on the loop's thread (which also takes thread
  scheduling out of the run, one source of non-determinism less) and `synchronous=OFF` skips
  the fsyncs. Transactions, WAL mode, `BEGIN IMMEDIATE` and foreign keys stay as in production.
  Durability against a real kill -9 is what the real-process suite (`tests/process`) tests.

This module changes how a `Node`'s `Database` executes, never what it executes; it is for the
simulation only and does not touch production code.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.engine.interfaces import Dialect

from node.app import Node

T = TypeVar("T")


class InlineExecutor(concurrent.futures.Executor):
    """Runs each submitted call at once, on the caller's thread; returns a finished future."""

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # the awaiting coroutine re-raises it
            fut.set_exception(exc)
        return fut


def _no_fsync(dbapi_conn: Any, _record: Any) -> None:
    # Runs after Database's own connect listener (which sets synchronous=FULL).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=OFF")
    cur.close()


class FastSQL:
    """One dialect and one compiled-statement cache for every engine of a simulation."""

    def __init__(self) -> None:
        self._dialect: Dialect | None = None
        self._cache: Any = None

    def _share(self, engine: Engine) -> None:
        if self._dialect is None:
            with engine.connect():  # first connect initialises the dialect (SQLite version)
                pass
            self._dialect, self._cache = engine.dialect, engine._compiled_cache
            return
        engine.dialect = self._dialect
        engine._compiled_cache = self._cache

    def adopt(self, node: Node) -> Node:
        """Make `node`'s database run inline, without fsync, with the shared statement cache.
        Call right after `Node.open`, before the node touches its database."""
        db = node.db
        for engine in dict.fromkeys((db.writer, db.reader)):
            event.listen(engine, "connect", _no_fsync)
            self._share(engine)
        # No thread has started yet (executors start them on first use).
        db._write_pool.shutdown(wait=False)
        db._read_pool.shutdown(wait=False)
        db._write_pool = InlineExecutor()  # type: ignore[assignment]
        db._read_pool = InlineExecutor()  # type: ignore[assignment]
        return node
