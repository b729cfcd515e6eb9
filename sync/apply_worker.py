"""Apply received pushes in a separate process, so that writing one batch overlaps verifying the
next (`[sync] apply_process`, ADR 0014).

A receiver verifies a push batch by batch on its event loop (signatures, digests, re-validation:
Python work that holds the GIL). Without this module the whole push is verified first and then
written by the node's database thread, one after the other; a thread cannot overlap the two,
because the sqlite3 module takes the GIL back after every row it writes and so waits behind the
verifying thread at every row. Here a child process owns a second connection to the same
database: the receiver hands it each batch as soon as that batch is verified, together with the
batch's record rows (JSON text and content hashes, `sync.store.batch_rows`), and the child
writes them with `sync.store.PushApply` (as the node itself would), all batches of a push in one
transaction, committed when the receiver says the push is complete. A batch that fails
verification aborts the job and the child rolls back: nothing of that push is written, exactly as
before. The answer to the sender is sent only after the child's commit.

What it does not do: it makes no decision about trust or validity (the receiver has verified
every batch before handing it over), it does not retry (a job whose child died is answered with
an error and the sender retries, which the watermarks make idempotent; `node.app` starts a new
child), and it is not used for in-memory databases (a second process cannot see them) or for
anti-entropy repairs (those take `sync.ae_store`'s path in the node).

Messages are tuples over `multiprocessing` queues (requests pickled by the node itself,
`ApplyWorker._put`): requests `("batch", job, now_ms, keep, header, signature, body,
header_hash, held, rows, probes)` (held: `HeldChange`s; rows: tuples from
`sync.store.batch_rows`; probes: `Change`s), `("end", job, subtree)`, `("abort", job)`,
`("stop",)`; replies `("ready",)`, `("done", job, results, marks, seconds)` (seconds: the
child's own time in the job's transaction, from its first write to its commit),
`("error", job, message)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import itertools
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sync.errors import ApplyFailed
from sync.store import PushApply, batch_rows
from sync.verify import VerifiedBatch
from sync.wire import BatchResult, Watermark

log = logging.getLogger(__name__)

#: How long `start` waits for the child to open its database before giving up on it.
START_TIMEOUT_S = 60.0
#: How often the reply reader and the child look whether the other side is still there.
POLL_S = 0.5
#: SQLite: the child copies the WAL back into the database file (a checkpoint) once it has
#: committed this many rows since the last one (roughly 250 MB of WAL), and once it has had
#: nothing to do for CHECKPOINT_IDLE_S: not after every push, which wrote the pages a catch-up
#: changes again and again (B-tree pages, the change log's tail) once per push.
CHECKPOINT_ROWS = 200_000
CHECKPOINT_IDLE_S = POLL_S


@dataclass(frozen=True)
class Applied:
    """A job's outcome: per-batch results, the watermarks to answer with, and the seconds the
    child spent in the job's transaction (the `lsnet_sync_apply_seconds` of this push)."""

    results: list[BatchResult]
    marks: list[Watermark]
    seconds: float


class ApplyWorkerDown(ApplyFailed):
    """The apply process is not running (or died during this job); nothing of it is known
    to be written, so the sender must send the push again."""


def batch_message(job: int, now_ms: int, keep: bool, vb: VerifiedBatch) -> tuple[Any, ...]:
    """The request that has the child write `vb`: its bytes (stored for relay), the rows made
    here (`sync.store.batch_rows`, so the child neither decodes nor hashes), probes and held
    changes (both rare)."""
    made = batch_rows(vb, now_ms)
    s = vb.signed
    return (
        "batch",
        job,
        now_ms,
        keep,
        s.header_bytes,
        s.signature,
        s.body,
        vb.header_hash,
        vb.held,
        made.rows,
        made.probes,
    )


@dataclass
class _Pending:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Applied]


@dataclass
class ApplyWorker:
    """The receiver's handle on its apply process: start, hand over jobs, stop."""

    url: str
    checkpoint_rows: int = CHECKPOINT_ROWS
    checkpoint_idle_s: float = CHECKPOINT_IDLE_S
    _process: Any = None
    _requests: Any = None
    _replies: Any = None
    _reader: threading.Thread | None = None
    _pending: dict[int, _Pending] = field(default_factory=dict)
    _jobs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Serialises start and stop (a restart in a thread may meet the node's stop).
    _life: threading.Lock = field(default_factory=threading.Lock)
    _stopping: bool = False
    #: Called (from the reply thread) when the child ends without being asked to.
    on_down: Callable[[], None] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the child and wait until it has opened the database (raises ApplyWorkerDown).
        Also restarts a child that ended: what is left of the old one is cleaned up first."""
        with self._life:
            self._start(timeout_s)

    def _start(self, timeout_s: float) -> None:
        if self._process is not None:
            self._stop(timeout_s)
        ctx = multiprocessing.get_context("spawn")
        self._requests = ctx.Queue()
        self._replies = ctx.Queue()
        self._stopping = False
        self._process = ctx.Process(
            target=serve,
            args=(
                self.url,
                self._requests,
                self._replies,
                os.getpid(),
                (self.checkpoint_rows, self.checkpoint_idle_s),
            ),
            name="lsnet-apply",
            daemon=True,
        )
        self._process.start()
        try:
            first = self._replies.get(timeout=timeout_s)
        except queue.Empty:
            self._kill()
            raise ApplyWorkerDown("the apply process did not start in time") from None
        if first[0] != "ready":
            self._kill()
            raise ApplyWorkerDown(f"the apply process could not start: {first[-1]}")
        self._reader = threading.Thread(target=self._read, name="apply-replies", daemon=True)
        self._reader.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the child to stop after its current job; kill it if it does not."""
        with self._life:
            self._stop(timeout_s)

    def _stop(self, timeout_s: float) -> None:
        if self._process is None:
            return
        self._stopping = True
        alive = self._process.is_alive()
        if alive:
            with contextlib.suppress(Exception):
                self._put(("stop",))
        self._process.join(timeout_s)
        if self._process.is_alive():
            self._kill()
        if self._reader is not None:
            self._reader.join(timeout_s)
        self._fail_all("the apply process was stopped")
        for q in (self._requests, self._replies):
            with contextlib.suppress(Exception):
                if not alive:  # nobody reads what is still buffered: do not wait to flush it
                    q.cancel_join_thread()
                q.close()
                q.join_thread()
        self._process = None

    def _kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join(5.0)

    # -- jobs ------------------------------------------------------------------------------------
    def begin(self, now_ms: int, keep: bool) -> ApplyJob:
        if not self.running:
            raise ApplyWorkerDown("the apply process is not running")
        job = next(self._jobs)
        loop = asyncio.get_running_loop()
        with self._lock:
            self._pending[job] = _Pending(loop, loop.create_future())
        return ApplyJob(self, job, now_ms, keep)

    def _put(self, message: tuple[Any, ...]) -> None:
        # Pickled here, so the queue's feeder thread only copies bytes: when it pickled the
        # rows itself, it and the event loop took the GIL from each other at every batch
        # (the node's own CPU per 100,000 records fell from 0.82 to 0.73-0.76 s).
        self._requests.put(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def _forget(self, job: int) -> None:
        with self._lock:
            self._pending.pop(job, None)

    def _read(self) -> None:
        """Reply reader thread: resolve each job's future on its event loop."""
        while True:
            try:
                reply = self._replies.get(timeout=POLL_S)
            except queue.Empty:
                if self._process is None or not self._process.is_alive():
                    self._ended()
                    return
                continue
            except (EOFError, OSError):
                self._ended()
                return
            kind = reply[0]
            with self._lock:
                pending = self._pending.pop(reply[1], None) if len(reply) > 1 else None
            if pending is None:
                continue
            if kind == "done":
                _settle(pending, Applied(list(reply[2]), list(reply[3]), float(reply[4])), None)
            else:
                _settle(pending, None, ApplyFailed(str(reply[2])))

    def _ended(self) -> None:
        """The child is gone: fail its waiting jobs and, unless it was asked to stop, say so."""
        if not self._stopping:
            if self.on_down is not None:
                self.on_down()
            log.error(
                "the apply process ended unexpectedly; pushes are now applied in the node's own "
                "process"
            )
        self._fail_all("the apply process ended during this push")

    def _fail_all(self, message: str) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for p in pending.values():
            _settle(p, None, ApplyWorkerDown(message))


def _settle(pending: _Pending, value: Applied | None, error: BaseException | None) -> None:
    def apply() -> None:
        if pending.future.done():
            return
        if error is not None:
            pending.future.set_exception(error)
        else:
            assert value is not None
            pending.future.set_result(value)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        pending.loop.call_soon_threadsafe(apply)


@dataclass
class ApplyJob:
    """One push's apply in the child: feed verified batches in order, then end (commit) or abort."""

    worker: ApplyWorker
    job: int
    now_ms: int
    keep: bool
    _closed: bool = False

    def feed(self, vb: VerifiedBatch) -> None:
        self.worker._put(batch_message(self.job, self.now_ms, self.keep, vb))

    def abort(self) -> None:
        """Roll back whatever the child applied of this job (a later batch failed)."""
        if not self._closed:
            self._closed = True
            self.worker._forget(self.job)
            with contextlib.suppress(Exception):
                self.worker._put(("abort", self.job))

    def end(self, subtree: Sequence[str]) -> asyncio.Future[Applied]:
        """Ask for the commit (at once, in order with the other jobs' messages); the future
        gives the batches' results and the watermarks to answer with."""
        self._closed = True
        with self.worker._lock:
            pending = self.worker._pending.get(self.job)
        if pending is None:
            future: asyncio.Future[Applied] = asyncio.get_running_loop().create_future()
            future.set_exception(ApplyWorkerDown("the apply process ended during this push"))
            return future
        self.worker._put(("end", self.job, list(subtree)))
        return pending.future


# -- the child process -------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (kill -9 included)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _checkpoint(engine: Any) -> None:
    """Copy the WAL back into the database file without waiting for readers or writers
    (PASSIVE): whatever a reader still needs stays in the WAL for a later checkpoint."""
    raw = engine.raw_connection()
    try:
        raw.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except Exception as exc:  # a checkpoint not done now is done by the next one
        log.warning("WAL checkpoint failed: %s", exc)
    finally:
        raw.close()


def serve(
    url: str,
    requests: Any,
    replies: Any,
    parent: int,
    checkpoints: tuple[int, float] = (CHECKPOINT_ROWS, CHECKPOINT_IDLE_S),
) -> None:
    """The child's loop: one transaction per job, batches applied as they arrive.
    `checkpoints`: (rows, idle seconds) after which a SQLite database is checkpointed."""
    checkpoint_rows, checkpoint_idle_s = checkpoints
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node stops it with a "stop" message
    try:
        from sqlalchemy import event

        from node.db import _make_engine, is_sqlite
        from sync.store import BatchRows, watermarks_for_txn
        from sync.wire import BatchHeader, SignedBatch

        engine = _make_engine(url, immediate=True)
        sqlite = is_sqlite(url)
        if sqlite:
            # SQLite checkpoints the WAL inside the COMMIT that crosses 1,000 pages, i.e. inside
            # most pushes' commit, before the answer. Here it is done after the answer, once
            # enough rows are owed or the child is idle (CHECKPOINT_ROWS, CHECKPOINT_IDLE_S).
            @event.listens_for(engine, "connect")
            def _no_auto_checkpoint(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")

        with engine.connect():
            pass
    except Exception as exc:  # reported to the parent, which logs it
        replies.put(("error", 0, f"{type(exc).__name__}: {exc}"))
        return
    gc.freeze()
    replies.put(("ready",))
    current: _ChildJob | None = None
    owed = 0  # rows committed since the last checkpoint (SQLite)
    last = time.monotonic()  # when the last message arrived

    def job_for(number: int) -> _ChildJob:
        """The job `number`; whatever another job left open is abandoned (rolled back)."""
        nonlocal current
        if current is None or current.number != number:
            if current is not None:
                current.rollback()
            current = _ChildJob(engine, number)
        return current

    while True:
        try:
            msg = requests.get(timeout=POLL_S)
        except queue.Empty:
            if os.getppid() != parent:
                if current is not None:
                    current.rollback()
                return
            idle = current is None and time.monotonic() - last >= checkpoint_idle_s
            if owed and idle:  # the WAL goes back into the database file
                _checkpoint(engine)
                owed = 0
            continue
        last = time.monotonic()
        msg = pickle.loads(msg)  # `ApplyWorker._put` pickles every request
        kind = msg[0]
        if kind == "stop":
            if current is not None:
                current.rollback()
            engine.dispose()
            return
        if kind == "abort":
            if current is not None and current.number == msg[1]:
                current.rollback()
                current = None
            continue
        if kind == "batch":
            _, number, now_ms, keep, header, signature, body, hh, held, rows, probes = msg
            job = job_for(number)
            if job.failed:
                continue
            try:
                signed = SignedBatch(header, signature, body)
                vb = VerifiedBatch(signed, BatchHeader.from_bytes(header), hh, [], held)
                made = BatchRows(rows, probes)
                job.results.append(job.push(now_ms, keep).add(vb, made))
                job.rows += len(rows)
            except Exception as exc:  # the job fails; the node answers an error
                job.failed = f"{type(exc).__name__}: {exc}"
                job.rollback()
            continue
        if kind == "end":
            _, number, subtree = msg
            job = job_for(number)  # a job with no batches starts here
            current = None
            try:
                if job.failed:
                    raise ApplyFailed(job.failed)
                if job.applier is not None:
                    job.applier.finish()
                marks = watermarks_for_txn(job.open(), subtree)
                seconds = job.commit()
                replies.put(("done", number, job.results, marks, seconds))
                if sqlite:
                    owed += job.rows
                    if owed >= checkpoint_rows:
                        _checkpoint(engine)
                        owed = 0
            except Exception as exc:  # the job fails; the node answers an error
                job.rollback()
                replies.put(("error", number, str(exc)))


class _ChildJob:
    """The child's side of one job: its transaction, opened at its first write."""

    def __init__(self, engine: Any, number: int) -> None:
        self.engine = engine
        self.number = number
        self.failed = ""
        self.results: list[BatchResult] = []
        self.rows = 0
        self._conn: Any = None
        self._txn: Any = None
        self._began = 0.0
        self.applier: PushApply | None = None  # made at the job's first batch

    def push(self, now_ms: int, keep: bool) -> PushApply:
        """The job's `PushApply` (one per job: its bookkeeping is written at its end)."""
        if self.applier is None:
            self.applier = PushApply(self.open(), now_ms, keep)
        return self.applier

    def open(self) -> Any:
        """The job's connection, in its transaction."""
        if self._conn is None:
            self._began = time.perf_counter()
            self._conn = self.engine.connect()
            self._txn = self._conn.begin()
        return self._conn

    def commit(self) -> float:
        """Commit; the seconds from the first write to the commit."""
        self._txn.commit()
        self._conn.close()
        self._conn = self._txn = self.applier = None
        return time.perf_counter() - self._began

    def rollback(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._txn.rollback()
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = self._txn = self.applier = None
