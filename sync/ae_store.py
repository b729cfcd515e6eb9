"""Database use cases of anti-entropy: digests of what a node holds, and the repair apply.

A range is one origin's records of one epoch. Its summary is a digest per bucket of
`BUCKET_SEQS` sequence numbers over the rows (seq, type, key, version, deleted, content hash)
in seq order, and a top digest over the buckets: equal tops mean equal content, and only
differing buckets need to be compared and resent.

`repair_txn` applies verified batches again: one above the watermark goes through the normal
apply; one at or below it re-upserts its records (a newer version, or the same version with a
different content hash, overwrites — an older version never does), stores the signed batch if
it was missing, and appends a 'repair' row to the apply log. End-to-end probes
(`network_mgmt.probe`) in a repaired batch are never records: they are only noted, as in the
normal apply, so digests of child and parent stay over records alone. Each call is one transaction.
Trust decisions happen before (in `sync.verify`); this module only stores and reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from network_mgmt.probe import is_probe, note_probes_txn
from node.schema import batches, records, watermarks
from node.store import insert_for, payload_json, read_meta_txn, record_hash
from sync.ae_wire import BUCKET_SEQS, RangeSummary, RangeVerdict
from sync.held import OverlayRow, hold_txn, overlay_txn
from sync.store import (
    _store_batch,
    _watermark_row,
    apply_batch_txn,
    log_apply,
    watermarks_for_txn,
)
from sync.verify import VerifiedBatch
from sync.wire import BatchResult, BatchStatus, Code, SignedBatch, Watermark


@dataclass(frozen=True, slots=True)
class RangeDigest:
    origin: str
    epoch: str
    held_seq: int
    count: int
    buckets: dict[int, bytes]

    @property
    def top(self) -> bytes:
        return top_digest(self.buckets)

    def summary(self) -> RangeSummary:
        return RangeSummary(self.origin, self.epoch, self.held_seq, self.count, self.top)


def top_digest(buckets: dict[int, bytes]) -> bytes:
    h = hashlib.sha256()
    for index in sorted(buckets):
        h.update(index.to_bytes(8, "big") + buckets[index])
    return h.digest()


def range_digest_txn(conn: Connection, origin: str, epoch: str, held_seq: int) -> RangeDigest:
    rows: Iterable[Any] = conn.execute(
        select(
            records.c.seq,
            records.c.record_type,
            records.c.key,
            records.c.version,
            records.c.deleted,
            records.c.hash,
        )
        .where(records.c.owner == origin, records.c.epoch == epoch)
        .order_by(records.c.seq)
    )
    overlay = overlay_txn(conn, origin, epoch)
    if overlay:
        rows = _with_overlay(rows, overlay)
    buckets: dict[int, bytes] = {}
    current = -1
    h = hashlib.sha256()
    count = 0
    for row in rows:
        index = row.seq // BUCKET_SEQS
        if index != current:
            if current >= 0:
                buckets[current] = h.digest()
            current, h = index, hashlib.sha256()
        h.update(
            f"{row.seq}\x1f{row.record_type}\x1f{row.key}\x1f{row.version}\x1f"
            f"{int(row.deleted)}\x1f{row.hash}\n".encode()
        )
        count += 1
    if current >= 0:
        buckets[current] = h.digest()
    return RangeDigest(origin, epoch, held_seq, count, buckets)


def _with_overlay(rows: Iterable[Any], overlay: Sequence[OverlayRow]) -> list[Any]:
    """The record rows with the changes held aside here counted in, as the child (which
    applied them) counts them: a held change stands for its key unless a version at least as
    new was applied since. Rare, so done in memory."""
    best: dict[tuple[str, str], OverlayRow] = {}
    for change in overlay:
        k = (change.record_type, change.key)
        if k not in best or best[k].version < change.version:
            best[k] = change
    out: list[Any] = []
    for row in rows:
        o = best.get((row.record_type, row.key))
        if o is not None and o.version > row.version:
            continue  # the held change is newer than the record row: it stands instead
        if o is not None:
            del best[(row.record_type, row.key)]  # applied since at least as new
        out.append(row)
    out.extend(best.values())
    out.sort(key=lambda r: r.seq)
    return out


def child_ranges_txn(conn: Connection) -> list[RangeDigest]:
    """Every range this node holds: its own (up to its last seq) and each relayed origin's epoch
    (up to its watermark)."""
    meta = read_meta_txn(conn)
    out = []
    if meta.last_seq > 0:
        out.append(range_digest_txn(conn, meta.node_id, meta.epoch, meta.last_seq))
    for row in conn.execute(
        select(watermarks.c.origin, watermarks.c.epoch, watermarks.c.seq).order_by(
            watermarks.c.origin, watermarks.c.epoch
        )
    ):
        out.append(range_digest_txn(conn, row.origin, row.epoch, row.seq))
    return out


def verdicts_txn(conn: Connection, ranges: Sequence[RangeSummary]) -> list[RangeVerdict]:
    """The parent's side of each range the child summarised."""
    out = []
    for r in ranges:
        mark = _watermark_row(conn, r.origin, r.epoch)
        seq = mark[0] if mark is not None else 0
        mine = range_digest_txn(conn, r.origin, r.epoch, seq)
        top = mine.top
        buckets = mine.buckets if (seq == r.held_seq and top != r.top) else None
        out.append(RangeVerdict(r.origin, r.epoch, seq, top, buckets))
    return out


def differing_spans(mine: dict[int, bytes], theirs: dict[int, bytes]) -> list[tuple[int, int]]:
    """Seq spans [lo, hi] of the buckets whose digests differ (or exist on one side only)."""
    spans = []
    for index in sorted(set(mine) | set(theirs)):
        if mine.get(index) != theirs.get(index):
            spans.append((index * BUCKET_SEQS, (index + 1) * BUCKET_SEQS - 1))
    return spans


def batches_covering_txn(
    conn: Connection, origin: str, epoch: str, spans: Iterable[tuple[int, int]]
) -> list[tuple[int, SignedBatch]]:
    """The stored signed batches of (origin, epoch) that overlap any span, in seq order."""
    conds = [and_(batches.c.first_seq <= hi, batches.c.last_seq >= lo) for lo, hi in spans]
    if not conds:
        return []
    rows = conn.execute(
        select(batches.c.first_seq, batches.c.header, batches.c.signature, batches.c.body)
        .where(batches.c.origin == origin, batches.c.epoch == epoch, or_(*conds))
        .order_by(batches.c.first_seq)
    )
    return [
        (r.first_seq, SignedBatch(bytes(r.header), bytes(r.signature), bytes(r.body))) for r in rows
    ]


_COLUMNS = ("version", "deleted", "payload", "standards", "hash", "epoch", "seq", "updated_ms")


def _repair_upsert(conn: Connection, rows: list[dict[str, object]]) -> None:
    ins = insert_for(conn)(records)
    stmt = ins.on_conflict_do_update(
        index_elements=[records.c.record_type, records.c.owner, records.c.key],
        set_={c: ins.excluded[c] for c in _COLUMNS},
        where=or_(
            ins.excluded.version > records.c.version,
            and_(ins.excluded.version == records.c.version, ins.excluded.hash != records.c.hash),
        ),
    )
    conn.execute(stmt, rows)


def repair_txn(
    conn: Connection, verified: Sequence[VerifiedBatch], now_ms: int, keep_for_relay: bool
) -> list[BatchResult]:
    out = []
    for vb in verified:
        h = vb.header
        mark = _watermark_row(conn, h.origin, h.epoch)
        if mark is None or h.last_seq > mark[0]:
            out.append(apply_batch_txn(conn, vb, now_ms, keep_for_relay))
            continue
        held = conn.execute(
            select(batches.c.header_hash).where(
                batches.c.origin == h.origin,
                batches.c.epoch == h.epoch,
                batches.c.first_seq == h.first_seq,
            )
        ).first()
        if held is not None and bytes(held.header_hash) != vb.header_hash:
            out.append(
                BatchResult(
                    h.origin,
                    h.epoch,
                    h.first_seq,
                    h.last_seq,
                    BatchStatus.REJECTED,
                    Code.CHAIN_BROKEN.value,
                    "a different batch is stored for this range",
                )
            )
            continue
        rows: list[dict[str, object]] = [
            {
                "record_type": c.record_type,
                "owner": h.origin,
                "key": c.key,
                "version": c.version,
                "deleted": c.deleted,
                "payload": payload_json(c.payload),
                "standards": c.standards,
                "hash": record_hash(
                    c.record_type, h.origin, c.key, c.version, c.deleted, c.payload
                ),
                "epoch": h.epoch,
                "seq": c.seq,
                "updated_ms": now_ms,
            }
            for c in vb.changes
            if not is_probe(c.record_type)
        ]
        if rows:
            _repair_upsert(conn, rows)
        hold_txn(conn, h, vb.held, now_ms)
        note_probes_txn(conn, h.origin, [c for c in vb.changes if is_probe(c.record_type)], now_ms)
        if held is None:
            _store_batch(
                conn,
                h,
                vb.signed,
                vb.header_hash,
                source="relay",
                acked=not keep_for_relay,
                now_ms=now_ms,
            )
        log_apply(conn, h, vb.header_hash, "repair", now_ms)
        out.append(BatchResult(h.origin, h.epoch, h.first_seq, h.last_seq, BatchStatus.APPLIED))
    return out


def repair_push_txn(
    conn: Connection,
    verified: Sequence[VerifiedBatch],
    now_ms: int,
    keep_for_relay: bool,
    subtree: Sequence[str],
) -> tuple[list[BatchResult], list[Watermark]]:
    """A push taken as a repair (the parent asked for these batches again, `network_mgmt.resend`):
    `repair_txn` for every batch, then the watermarks to answer with — one transaction."""
    return repair_txn(conn, verified, now_ms, keep_for_relay), watermarks_for_txn(conn, subtree)
