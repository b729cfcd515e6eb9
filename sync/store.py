"""Database use cases of upward sync; each public coroutine is one transaction.

Sending side: cut signed batches from the local change log, pick the next bounded transfer,
record the parent's watermarks (acknowledge, or un-acknowledge what the parent no longer holds),
quarantine a batch the parent refused, persist link state. Receiving side: apply one verified
batch — records, the original signed bytes and the watermark advance — in one transaction.
Trust decisions are made in `sync.verify`; this module only stores.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, and_, bindparam, delete, exists, select, update
from sqlalchemy.orm import aliased

from network_mgmt.probe import is_probe, note_probes_txn
from node.db import Database
from node.schema import (
    apply_log,
    batches,
    changelog,
    link_errors,
    links,
    node_meta,
    watermarks,
)
from node.store import insert_for, read_meta_txn, record_rows
from security.keys import NodeKey
from security.signing import sign
from sync.epochs import epoch_standing, upsert_for_epoch
from sync.held import hold_txn
from sync.verify import Order, VerifiedBatch, decide_order
from sync.wire import (
    PURPOSE_BATCH,
    ZERO_HASH,
    BatchHeader,
    BatchResult,
    BatchStatus,
    Change,
    Code,
    SignedBatch,
    Watermark,
    encode_body,
    header_hash,
    sha256,
)


@dataclass(frozen=True, slots=True)
class PendingBatch:
    id: int
    origin: str
    epoch: str
    first_seq: int
    last_seq: int
    signed: SignedBatch


@dataclass(frozen=True, slots=True)
class LinkState:
    peer: str
    mode: str
    failures: int
    backoff_until_ms: int
    last_success_ms: int
    last_error: str
    last_error_ms: int


def _store_batch(
    conn: Connection,
    header: BatchHeader,
    signed: SignedBatch,
    hh: bytes,
    *,
    source: str,
    acked: bool,
    now_ms: int,
) -> None:
    """Keep a signed batch exactly as made: for sending upward, relaying and proving provenance."""
    conn.execute(
        batches.insert().values(
            **_batch_values(header, signed, hh, source=source, acked=acked, now_ms=now_ms)
        )
    )


def _batch_values(
    header: BatchHeader,
    signed: SignedBatch,
    hh: bytes,
    *,
    source: str,
    acked: bool,
    now_ms: int,
) -> dict[str, Any]:
    return {
        "origin": header.origin,
        "epoch": header.epoch,
        "first_seq": header.first_seq,
        "last_seq": header.last_seq,
        "header": signed.header_bytes,
        "signature": signed.signature,
        "body": signed.body,
        "header_hash": hh,
        "size": signed.size,
        "created_ms": header.created_ms,
        "stored_ms": now_ms,
        "source": source,
        "acked": acked,
        "quarantined": False,
        "quarantine_code": "",
        "quarantine_reason": "",
    }


# -- sending side ----------------------------------------------------------------------------------


def cut_batch_txn(
    conn: Connection, key: NodeKey, max_changes: int, max_bytes: int, now_ms: int
) -> bool:
    """Make at most one new signed batch from unbatched change-log entries. True if one was made."""
    meta = read_meta_txn(conn)
    if meta.batched_seq >= meta.last_seq:
        return False
    c = changelog.c
    rows = conn.execute(
        select(c.seq, c.record_type, c.key, c.version, c.deleted, c.payload, c.standards)
        .where(c.seq > meta.batched_seq)
        .order_by(c.seq)
        .limit(max_changes)
    ).all()  # plain row tuples: the per-row mapping view cost more than the query (issue 8)
    changes: list[Change] = []
    size = 512
    loads = orjson.loads  # the stored text is canonical JSON (node.store.payload_json)
    for seq, rtype, rkey, version, deleted, text, standards in rows:
        change = Change(seq, rtype, rkey, version, bool(deleted), loads(text), standards)
        # Bytes, not characters: the wire carries UTF-8 (three bytes per Chinese character).
        approx = len(text.encode("utf-8")) + len(rkey.encode("utf-8")) + 64
        if changes and size + approx > max_bytes:
            break
        changes.append(change)
        size += approx
    if not changes:
        return False
    body = encode_body(changes)
    header = BatchHeader(
        origin=meta.node_id,
        epoch=meta.epoch,
        first_seq=changes[0].seq,
        last_seq=changes[-1].seq,
        count=len(changes),
        standards=changes[-1].standards,
        created_ms=now_ms,
        digest=sha256(body),
        prev=meta.chain_head,
        kid=key.kid,
    )
    header_bytes = header.to_bytes()
    signed = SignedBatch(header_bytes, sign(key, PURPOSE_BATCH, header_bytes), body)
    hh = header_hash(header_bytes)
    _store_batch(conn, header, signed, hh, source="local", acked=False, now_ms=now_ms)
    conn.execute(
        update(node_meta)
        .where(node_meta.c.id == 1)
        .values(batched_seq=header.last_seq, chain_head=hh)
    )
    return True


def cut_batches_txn(
    conn: Connection, key: NodeKey, max_changes: int, max_bytes: int, now_ms: int, count: int
) -> int:
    """Make up to `count` new signed batches in this one transaction (one commit, one fsync,
    instead of one per batch). Returns how many were made."""
    made = 0
    while made < count and cut_batch_txn(conn, key, max_changes, max_bytes, now_ms):
        made += 1
    return made


# At most this many batches are cut by one ingest transaction (a bulk import of a few thousand
# records per chunk never comes near it); whatever is left is cut by the next ingest or the queue.
CUT_AT_INGEST_MAX = 64


def cut_full_batches_txn(
    conn: Connection, key: NodeKey, max_changes: int, max_bytes: int, now_ms: int
) -> int:
    """Cut the *full* batches waiting in the change log, in the caller's (ingest) transaction:
    a node with a parent signs a large backlog as it is written, so that after an outage it only
    has to send it (issue 8). A partly filled batch is left for the upstream queue, which cuts
    it when it sends (as small as the live traffic needs). Returns how many were made."""
    made = 0
    while made < CUT_AT_INGEST_MAX:
        meta = read_meta_txn(conn)
        if meta.last_seq - meta.batched_seq < max_changes:
            break
        if not cut_batch_txn(conn, key, max_changes, max_bytes, now_ms):
            break
        made += 1
    return made


def _transfer_rows(conn: Connection, max_batches: int, max_bytes: int, after_id: int) -> list[Any]:
    """Id, origin, epoch, range and size of the batches `next_transfer_txn` would send."""
    q = aliased(batches)
    blocked = exists().where(
        and_(
            q.c.origin == batches.c.origin,
            q.c.epoch == batches.c.epoch,
            q.c.first_seq <= batches.c.first_seq,
            q.c.quarantined.is_(True),
        )
    )
    rows = conn.execute(
        select(
            batches.c.id,
            batches.c.origin,
            batches.c.epoch,
            batches.c.first_seq,
            batches.c.last_seq,
            batches.c.size,
        )
        .where(batches.c.acked.is_(False), batches.c.id > after_id, ~blocked)
        .order_by(batches.c.id)
        .limit(max_batches)
    ).all()
    chosen: list[Any] = []
    total = 0
    for row in rows:
        if chosen and total + row.size > max_bytes:
            break
        chosen.append(row)
        total += row.size
    return chosen


def next_transfer_ids_txn(conn: Connection, max_batches: int, max_bytes: int) -> list[int]:
    """The ids of the batches `next_transfer_txn` would return now, without their bytes."""
    return [row.id for row in _transfer_rows(conn, max_batches, max_bytes, 0)]


def next_transfer_txn(
    conn: Connection, max_batches: int, max_bytes: int, after_id: int = 0
) -> list[PendingBatch]:
    """The oldest unacknowledged batches (with an id above `after_id`), bounded in count and
    bytes.

    A quarantined batch, and the batches of its (origin, epoch) after it, wait for an operator:
    sending them would only produce gaps at the parent. The batches before it are still sent.
    """
    chosen = _transfer_rows(conn, max_batches, max_bytes, after_id)
    out = []
    for row in chosen:
        full = conn.execute(
            select(batches.c.header, batches.c.signature, batches.c.body).where(
                batches.c.id == row.id
            )
        ).one()
        out.append(
            PendingBatch(
                row.id,
                row.origin,
                row.epoch,
                row.first_seq,
                row.last_seq,
                SignedBatch(bytes(full.header), bytes(full.signature), bytes(full.body)),
            )
        )
    return out


def apply_acks_txn(conn: Connection, marks: Sequence[Watermark]) -> tuple[int, int]:
    """Mark batches covered by the parent's watermarks acknowledged; un-acknowledge batches above
    a watermark (the parent no longer holds them, e.g. it was restored from a backup).
    Returns (newly acknowledged, re-queued)."""
    acked = requeued = 0
    for wm in marks:
        res = conn.execute(
            update(batches)
            .where(
                batches.c.origin == wm.origin,
                batches.c.epoch == wm.epoch,
                batches.c.last_seq <= wm.seq,
                batches.c.acked.is_(False),
            )
            .values(acked=True)
        )
        acked += res.rowcount or 0
        res = conn.execute(
            update(batches)
            .where(
                batches.c.origin == wm.origin,
                batches.c.epoch == wm.epoch,
                batches.c.last_seq > wm.seq,
                batches.c.acked.is_(True),
            )
            .values(acked=False)
        )
        requeued += res.rowcount or 0
    return acked, requeued


def quarantine_txn(
    conn: Connection,
    batch_id: int,
    code: str,
    reason: str,
    error: tuple[str, int, str] | None = None,
) -> None:
    """Quarantine a batch (and note the link error, peer/time/message, in the same transaction)."""
    if error is not None:
        note_link_error_txn(conn, *error)
    conn.execute(
        update(batches)
        .where(batches.c.id == batch_id)
        .values(quarantined=True, quarantine_code=code[:64], quarantine_reason=reason[:2000])
    )


def load_link_txn(conn: Connection, peer: str) -> LinkState:
    row = conn.execute(select(links).where(links.c.peer == peer)).mappings().first()
    if row is None:
        return LinkState(peer, "live", 0, 0, 0, "", 0)
    return LinkState(**dict(row))


KEPT_LINK_ERRORS = 100


def note_link_error_txn(conn: Connection, peer: str, time_ms: int, message: str) -> None:
    """Remember one error of the link to `peer`, keeping the last KEPT_LINK_ERRORS."""
    conn.execute(link_errors.insert().values(peer=peer, time_ms=time_ms, message=message[:2000]))
    cutoff = conn.execute(
        select(link_errors.c.id)
        .where(link_errors.c.peer == peer)
        .order_by(link_errors.c.id.desc())
        .offset(KEPT_LINK_ERRORS - 1)
        .limit(1)
    ).scalar()
    if cutoff is not None:
        conn.execute(
            delete(link_errors).where(link_errors.c.peer == peer, link_errors.c.id < cutoff)
        )


def recent_link_errors_txn(conn: Connection, peer: str, limit: int) -> list[tuple[int, str]]:
    """The last `limit` errors of the link to `peer`, oldest first."""
    rows = conn.execute(
        select(link_errors.c.time_ms, link_errors.c.message)
        .where(link_errors.c.peer == peer)
        .order_by(link_errors.c.id.desc())
        .limit(limit)
    ).all()
    return [(int(r.time_ms), str(r.message)) for r in reversed(rows)]


def save_link_txn(conn: Connection, state: LinkState, error: tuple[int, str] | None = None) -> None:
    """Persist the link state (and, in the same transaction, the error that changed it)."""
    if error is not None:
        note_link_error_txn(conn, state.peer, error[0], error[1])
    values: dict[str, Any] = {
        "mode": state.mode,
        "failures": state.failures,
        "backoff_until_ms": state.backoff_until_ms,
        "last_success_ms": state.last_success_ms,
        "last_error": state.last_error[:2000],
        "last_error_ms": state.last_error_ms,
    }
    ins = insert_for(conn)(links).values(peer=state.peer, **values)
    conn.execute(ins.on_conflict_do_update(index_elements=[links.c.peer], set_=values))


# -- receiving side --------------------------------------------------------------------------------


def _watermark_row(conn: Connection, origin: str, epoch: str) -> tuple[int, bytes] | None:
    stmt = select(watermarks.c.seq, watermarks.c.last_hash).where(
        watermarks.c.origin == origin, watermarks.c.epoch == epoch
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    return None if row is None else (row.seq, bytes(row.last_hash))


def log_apply(conn: Connection, h: BatchHeader, hh: bytes, kind: str, now_ms: int) -> None:
    """Append to the apply log (append-only; makes a double apply observable)."""
    conn.execute(apply_log.insert().values(**_log_values(h, hh, kind, now_ms)))


def _log_values(h: BatchHeader, hh: bytes, kind: str, now_ms: int) -> dict[str, Any]:
    return {
        "origin": h.origin,
        "epoch": h.epoch,
        "first_seq": h.first_seq,
        "last_seq": h.last_seq,
        "header_hash": hh,
        "kind": kind,
        "applied_ms": now_ms,
    }


@dataclass(frozen=True, slots=True)
class BatchRows:
    """The `records` rows (node.store.RECORD_COLUMNS order) and the end-to-end probes of a
    verified batch: what `apply_batch_txn` writes for its changes, made where it was verified
    when an apply process writes it (sync.apply_worker)."""

    rows: list[tuple[Any, ...]]
    probes: list[Change]


def batch_rows(vb: VerifiedBatch, now_ms: int) -> BatchRows:
    """Rows for every change of `vb` but its probes, made in one pass (no per-record dict)."""
    h = vb.header
    probes = [c for c in vb.changes if is_probe(c.record_type)]
    origin, epoch = h.origin, h.epoch
    changes = [c for c in vb.changes if not is_probe(c.record_type)] if probes else vb.changes
    return BatchRows(record_rows(origin, epoch, changes, now_ms), probes)


class PushApply:
    """The verified batches of one push applied in the caller's transaction, in order.

    Each batch is judged against the watermark its predecessors left. The watermark of an
    (origin, epoch) is read once per push (locked on PostgreSQL, `_watermark_row`; SQLite writers
    hold the database lock) and then followed here, as is the epoch rule's standing. A batch's
    records are written when it is added; the bookkeeping of every applied batch — the signed
    bytes, the apply log, the watermark advance — is written by `finish`, one statement per
    table instead of one per batch and table. The first watermark of a new (origin, epoch) is
    written at once, because it changes the standing of the origin's other epochs.

    A refused batch applies nothing and does not stop the others. Nothing is durable before the
    caller commits, so `finish` must run before the commit, and a failure anywhere leaves the
    whole transaction to roll back.
    """

    def __init__(self, conn: Connection, now_ms: int, keep_for_relay: bool) -> None:
        self.conn = conn
        self.now_ms = now_ms
        self.keep_for_relay = keep_for_relay
        # (origin, epoch) -> [seq, last hash, advanced since read]
        self._marks: dict[tuple[str, str], list[Any]] = {}
        self._standing: dict[tuple[str, str], str] = {}
        self._stored: list[dict[str, Any]] = []
        self._logged: list[dict[str, Any]] = []

    def add(self, vb: VerifiedBatch, made: BatchRows | None = None) -> BatchResult:
        """Apply one verified batch; `made` is `batch_rows(vb, now_ms)` when the caller made it
        already (then `vb.changes` is not read)."""
        conn, h, now_ms = self.conn, vb.header, self.now_ms
        mark = self._marks.get((h.origin, h.epoch))
        if mark is None:
            current = _watermark_row(conn, h.origin, h.epoch)
            if current is not None:
                mark = self._marks[(h.origin, h.epoch)] = [*current, False]
        wm_seq, wm_hash = (mark[0], mark[1]) if mark is not None else (0, ZERO_HASH)
        order = decide_order(h, wm_seq, wm_hash)

        def result(
            status: BatchStatus, code: str = "", message: str = "", need: int = 0
        ) -> BatchResult:
            return BatchResult(
                h.origin, h.epoch, h.first_seq, h.last_seq, status, code, message, need
            )

        if order is Order.DUPLICATE:
            return result(BatchStatus.DUPLICATE)
        if order is Order.GAP:
            return result(
                BatchStatus.GAP, Code.BAD_RANGE.value, "gap before this batch", wm_seq + 1
            )
        if order is Order.OVERLAP:
            return result(
                BatchStatus.REJECTED,
                Code.BAD_RANGE.value,
                f"batch [{h.first_seq}, {h.last_seq}] overlaps the applied prefix ending at "
                f"{wm_seq}",
                wm_seq + 1,
            )
        if order is Order.CHAIN_BROKEN:
            return result(
                BatchStatus.REJECTED,
                Code.CHAIN_BROKEN.value,
                f"batch [{h.first_seq}, {h.last_seq}] of {h.origin} does not chain to the batch "
                f"applied before it",
            )
        if made is None:
            made = batch_rows(vb, now_ms)
        standing = self._standing.get((h.origin, h.epoch))
        if standing is None:
            standing = epoch_standing(conn, h.origin, h.epoch)
            self._standing[(h.origin, h.epoch)] = standing
        if mark is None:  # the first batch of this (origin, epoch) anywhere: its watermark now
            conn.execute(
                watermarks.insert().values(
                    origin=h.origin,
                    epoch=h.epoch,
                    seq=h.last_seq,
                    last_hash=vb.header_hash,
                    first_seen_ms=now_ms,
                    updated_ms=now_ms,
                )
            )
            self._marks[(h.origin, h.epoch)] = [h.last_seq, vb.header_hash, False]
            for known in [k for k in self._standing if k[0] == h.origin]:
                del self._standing[known]  # a new epoch changes the standing of the others
        else:
            mark[:] = [h.last_seq, vb.header_hash, True]
        # a re-installed origin's new epoch wins (sync.epochs)
        upsert_for_epoch(conn, h.origin, h.epoch, made.rows, standing)
        note_probes_txn(conn, h.origin, made.probes, now_ms)  # end-to-end lag probes: not records
        hold_txn(conn, h, vb.held, now_ms)  # poison records held aside by policy (sync.held)
        self._stored.append(
            _batch_values(
                h,
                vb.signed,
                vb.header_hash,
                source="relay",
                acked=not self.keep_for_relay,
                now_ms=now_ms,
            )
        )
        self._logged.append(_log_values(h, vb.header_hash, "push", now_ms))
        return result(BatchStatus.APPLIED)

    def finish(self) -> None:
        """Write the bookkeeping of the batches applied so far (before the caller commits)."""
        conn = self.conn
        if self._stored:
            conn.execute(batches.insert(), self._stored)
            conn.execute(apply_log.insert(), self._logged)
        advanced = [
            {"o": origin, "e": epoch, "s": m[0], "h": m[1], "t": self.now_ms}
            for (origin, epoch), m in self._marks.items()
            if m[2]
        ]
        if advanced:
            w = watermarks.c
            conn.execute(
                update(watermarks)
                .where(w.origin == bindparam("o"), w.epoch == bindparam("e"))
                .values(seq=bindparam("s"), last_hash=bindparam("h"), updated_ms=bindparam("t")),
                advanced,
            )
        self._stored, self._logged = [], []
        for m in self._marks.values():
            m[2] = False


def apply_batch_txn(
    conn: Connection,
    vb: VerifiedBatch,
    now_ms: int,
    keep_for_relay: bool,
    made: BatchRows | None = None,
) -> BatchResult:
    """Apply one verified batch: version-guarded upserts, the signed bytes, the watermark — all in
    this one transaction, or nothing (`PushApply` for one batch)."""
    push = PushApply(conn, now_ms, keep_for_relay)
    result = push.add(vb, made)
    push.finish()
    return result


def apply_push_txn(
    conn: Connection,
    verified: Sequence[VerifiedBatch],
    now_ms: int,
    keep_for_relay: bool,
    subtree: Sequence[str],
) -> tuple[list[BatchResult], list[Watermark]]:
    """Apply the verified batches of one push in order, in one transaction (one commit, one
    fsync), and read the watermarks to answer with. Each batch is judged against the watermark
    its predecessors left; a refused batch applies nothing and does not stop the others."""
    push = PushApply(conn, now_ms, keep_for_relay)
    results = [push.add(vb) for vb in verified]
    push.finish()
    return results, watermarks_for_txn(conn, subtree)


def watermarks_for_txn(conn: Connection, origins: Iterable[str]) -> list[Watermark]:
    wanted = list(origins)
    if not wanted:
        return []
    rows = conn.execute(
        select(watermarks.c.origin, watermarks.c.epoch, watermarks.c.seq)
        .where(watermarks.c.origin.in_(wanted))
        .order_by(watermarks.c.origin, watermarks.c.epoch)
    )
    return [Watermark(r.origin, r.epoch, r.seq) for r in rows]


def stored_batches_txn(
    conn: Connection, after_id: int, limit: int
) -> list[tuple[int, str, SignedBatch]]:
    """Stored batches in id order, for scrubbing signatures; paged to bound memory."""
    rows = conn.execute(
        select(
            batches.c.id, batches.c.origin, batches.c.header, batches.c.signature, batches.c.body
        )
        .where(batches.c.id > after_id)
        .order_by(batches.c.id)
        .limit(limit)
    )
    return [
        (r.id, r.origin, SignedBatch(bytes(r.header), bytes(r.signature), bytes(r.body)))
        for r in rows
    ]


class SyncStore:
    """Replication use cases on one node's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def cut_batch(self, key: NodeKey, max_changes: int, max_bytes: int, now_ms: int) -> bool:
        return await self.db.write(cut_batch_txn, key, max_changes, max_bytes, now_ms)

    async def cut_batches(
        self, key: NodeKey, max_changes: int, max_bytes: int, now_ms: int, count: int
    ) -> int:
        return await self.db.write(cut_batches_txn, key, max_changes, max_bytes, now_ms, count)

    async def next_transfer(
        self, max_batches: int, max_bytes: int, after_id: int = 0
    ) -> list[PendingBatch]:
        return await self.db.read(next_transfer_txn, max_batches, max_bytes, after_id)

    async def next_transfer_ids(self, max_batches: int, max_bytes: int) -> list[int]:
        return await self.db.read(next_transfer_ids_txn, max_batches, max_bytes)

    async def apply_acks(self, marks: Sequence[Watermark]) -> tuple[int, int]:
        return await self.db.write(apply_acks_txn, marks)

    async def quarantine(
        self, batch_id: int, code: str, reason: str, error: tuple[str, int, str] | None = None
    ) -> None:
        await self.db.write(quarantine_txn, batch_id, code, reason, error)

    async def recent_link_errors(self, peer: str, limit: int) -> list[tuple[int, str]]:
        return await self.db.read(recent_link_errors_txn, peer, limit)

    async def load_link(self, peer: str) -> LinkState:
        return await self.db.read(load_link_txn, peer)

    async def save_link(self, state: LinkState, error: tuple[int, str] | None = None) -> None:
        await self.db.write(save_link_txn, state, error)

    async def apply_batch(
        self, vb: VerifiedBatch, now_ms: int, keep_for_relay: bool
    ) -> BatchResult:
        return await self.db.write(apply_batch_txn, vb, now_ms, keep_for_relay)

    async def apply_push(
        self,
        verified: Sequence[VerifiedBatch],
        now_ms: int,
        keep_for_relay: bool,
        subtree: Sequence[str],
    ) -> tuple[list[BatchResult], list[Watermark]]:
        return await self.db.write(apply_push_txn, verified, now_ms, keep_for_relay, subtree)

    async def watermarks_for(self, origins: Iterable[str]) -> list[Watermark]:
        return await self.db.read(watermarks_for_txn, list(origins))

    async def stored_batches(self, after_id: int, limit: int) -> list[tuple[int, str, SignedBatch]]:
        return await self.db.read(stored_batches_txn, after_id, limit)
