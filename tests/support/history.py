"""Jepsen-style history of every write attempt a test driver makes (reliability.md C4.1).

Each attempt is recorded as `invoke`, then completed as `ok` (the node committed it), `fail`
(the node positively refused it) or `info` (indeterminate: timeout, connection error, crash —
it may or may not have happened). Each operation names the origin node and, per record, the
content digest (`content_digest`), so checkers can tell a lost record from an invented one.
The history can be written as JSON lines for a failure report. It does not talk to nodes itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.records import ValidRecord, validate_record
from node.store import payload_json


def content_digest(record_type: str, key: str, deleted: bool, payload: Mapping[str, Any]) -> str:
    """Digest of one record's content as written (without the version the owner assigns)."""
    text = "\x1f".join((record_type, key, "1" if deleted else "0", payload_json(payload)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digest_of(rec: ValidRecord) -> str:
    return content_digest(rec.record_type, rec.key, rec.deleted, rec.payload)


@dataclass(frozen=True)
class Written:
    """One record of one write attempt."""

    origin: str
    record_type: str
    key: str
    digest: str


@dataclass
class Op:
    index: int
    process: str
    origin: str
    records: tuple[Written, ...]
    status: str = "invoke"  # invoke | ok | fail | info
    seqs: tuple[int, ...] = ()
    invoked_s: float = 0.0
    completed_s: float = 0.0
    error: str = ""


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def copy(self) -> History:
        return History([dataclasses.replace(op) for op in self.ops])

    def invoke(self, process: str, origin: str, objs: Iterable[Mapping[str, Any]]) -> Op:
        return self.invoke_valid(process, origin, [validate_record(dict(o)) for o in objs])

    def invoke_valid(self, process: str, origin: str, recs: Iterable[ValidRecord]) -> Op:
        """`invoke` for records the driver has validated already (it writes these objects)."""
        written = [Written(origin, r.record_type, r.key, digest_of(r)) for r in recs]
        with self._lock:
            op = Op(len(self.ops), process, origin, tuple(written), invoked_s=time.monotonic())
            self.ops.append(op)
        return op

    def ok(self, op: Op, seqs: Iterable[int] = ()) -> None:
        op.status, op.seqs, op.completed_s = "ok", tuple(seqs), time.monotonic()

    def fail(self, op: Op, error: str) -> None:
        op.status, op.error, op.completed_s = "fail", error, time.monotonic()

    def info(self, op: Op, error: str) -> None:
        op.status, op.error, op.completed_s = "info", error, time.monotonic()

    def attempted(self) -> set[Written]:
        """Every record any attempt carried (ok, info, or still open)."""
        return {w for op in self.ops if op.status != "fail" for w in op.records}

    def accepted(self) -> set[Written]:
        """Records of attempts the node positively committed."""
        return {w for op in self.ops if op.status == "ok" for w in op.records}

    def origins(self) -> set[str]:
        return {op.origin for op in self.ops}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.ops:
            out[op.status] = out.get(op.status, 0) + 1
        return out

    def dump(self, path: Path) -> None:
        with path.open("w", encoding="utf-8") as f:
            for op in self.ops:
                f.write(
                    json.dumps(
                        {
                            "index": op.index,
                            "process": op.process,
                            "origin": op.origin,
                            "type": op.status,
                            "seqs": list(op.seqs),
                            "records": [[w.record_type, w.key, w.digest] for w in op.records],
                            "error": op.error,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )


async def write_through(
    history: History, node: Any, process: str, objs: list[dict[str, Any]]
) -> Op:
    """Write `objs` at an in-process node (`Node.ingest`), recording the attempt."""
    op = history.invoke(process, node.config.node_id, objs)
    try:
        result = await node.ingest([validate_record(o) for o in objs])
    except Exception as exc:  # indeterminate: the transaction may or may not have committed
        history.info(op, repr(exc))
        raise
    history.ok(op, result.seqs)
    return op
