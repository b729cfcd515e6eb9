"""Records of a re-installed origin (a new database epoch, DESIGN §2) against those of its old
epoch, on the receiving side.

A re-installed node numbers its sequence and its record versions from 1 again, so the version
guard alone would keep the old epoch's higher versions forever and silently drop the new
content. The rule here: a change from the origin's newest epoch (the one first seen last)
replaces a row written by another epoch whatever the versions; a change from a superseded epoch
never replaces a row of another epoch; within one epoch the version guard applies as always.
Watermarks stay per (origin, epoch), so no old sequence number is trusted for the new epoch.

This module only decides and writes rows inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from node.schema import records, watermarks
from node.store import RECORD_COLUMNS, insert_for, upsert_record_tuples

_COLUMNS = ("version", "deleted", "payload", "standards", "hash", "epoch", "seq", "updated_ms")


def epoch_standing(conn: Connection, origin: str, epoch: str) -> str:
    """'only' (no other epoch known), 'newest' or 'superseded'."""
    rows = conn.execute(
        select(watermarks.c.epoch, watermarks.c.first_seen_ms).where(watermarks.c.origin == origin)
    ).all()
    others = [r for r in rows if r.epoch != epoch]
    if not others:
        return "only"
    mine = next((r.first_seen_ms for r in rows if r.epoch == epoch), None)
    if mine is None or all(mine >= r.first_seen_ms for r in others):
        return "newest"
    return "superseded"


def upsert_for_epoch(
    conn: Connection,
    origin: str,
    epoch: str,
    rows: Sequence[tuple[Any, ...]],
    standing: str | None = None,
) -> None:
    """Upsert one batch's record rows (tuples in `node.store.RECORD_COLUMNS` order) under the
    epoch rule above; `standing` is `epoch_standing` when the caller knows it already."""
    if not rows:
        return
    if standing is None:
        standing = epoch_standing(conn, origin, epoch)
    if standing == "only":
        upsert_record_tuples(conn, rows)
        return
    ins = insert_for(conn)(records)
    newer = ins.excluded.version > records.c.version
    same_epoch = records.c.epoch == ins.excluded.epoch
    where = or_(newer, ~same_epoch) if standing == "newest" else and_(newer, same_epoch)
    stmt = ins.on_conflict_do_update(
        index_elements=[records.c.record_type, records.c.owner, records.c.key],
        set_={c: ins.excluded[c] for c in _COLUMNS},
        where=where,
    )
    conn.execute(stmt, [dict(zip(RECORD_COLUMNS, r, strict=True)) for r in rows])
