"""Poison records held aside by a receiver: store them, list them, release or skip them.

A batch can be sound (signed by its origin, chained, authorised) and still carry a record this
node's rules refuse — typically standards skew: a code the city's release knows and this node's
does not yet, or a province-local code the ministry has not received. For record types whose
policy is `hold` (`[sync] on_invalid_record`, `on_invalid_record_by_type`), `sync.verify` leaves
such a change out of the batch's changes and reports it as held; the rest of the batch is applied,
the watermark advances over the whole batch and later batches of the origin are not blocked.
The signed batch is stored (and relayed upward) byte for byte as always, so the ancestors decide
for themselves and a restore from this node gives the origin its record back.

Here, in one transaction each:
- `hold_txn` keeps the held changes (idempotent per origin, epoch and seq: a batch received again
  or repaired by anti-entropy does not hold a change twice, nor revive a decided one);
- `release_txn` re-validates a held change with the rules in force now and, if it passes,
  applies it with the normal version guard (a newer version already applied wins: the release
  then reports it as superseded); if it still fails, nothing changes and the reason is returned;
- `skip_txn` records the operator's decision to leave the change out for good;
- `overlay_txn` gives anti-entropy the held and skipped changes, so a parent that holds a record
  aside does not look divergent from its child and ask for the same batch forever.

What this does not do: decide the policy (`hierarchy_config.model.SyncConfig.holds_invalid`),
authenticate or audit the operator (`network_mgmt.admin_api`), or show personal data — listings
carry record type, seq, version and the reason, never the key or the fields.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, select, update

from node.schema import held_changes, records
from node.store import insert_for, payload_json, record_hash, record_rows
from node.validation import RecordValidator
from sync.epochs import upsert_for_epoch
from sync.errors import BatchRejected
from sync.verify import HeldChange, check_change
from sync.wire import BatchHeader, Change

HELD = "held"
RELEASED = "released"
SKIPPED = "skipped"
MAX_REASON = 2000


class HeldError(Exception):
    """An operator action on a held change that cannot be done; `code` goes on the wire."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class OverlayRow:
    """A held or skipped change as anti-entropy digests it (the shape of a `records` row)."""

    seq: int
    record_type: str
    key: str
    version: int
    deleted: bool
    hash: str


def hold_txn(conn: Connection, header: BatchHeader, held: Sequence[HeldChange], now_ms: int) -> int:
    """Keep the held changes of one applied batch; returns how many were new here."""
    if not held:
        return 0
    rows = [
        {
            "origin": header.origin,
            "epoch": header.epoch,
            "seq": h.change.seq,
            "record_type": h.change.record_type[:64],
            "key": h.change.key[:512],
            "version": h.change.version,
            "deleted": h.change.deleted,
            "payload": payload_json(h.change.payload),
            "standards": h.change.standards[:64],
            "code": h.code[:64],
            "message": h.message[:MAX_REASON],
            "held_ms": now_ms,
            "state": HELD,
            "decided_ms": 0,
            "operator": "",
            "reason": "",
        }
        for h in held
    ]
    stmt = (
        insert_for(conn)(held_changes)
        .on_conflict_do_nothing(
            index_elements=[held_changes.c.origin, held_changes.c.epoch, held_changes.c.seq]
        )
        .returning(held_changes.c.id)
    )
    new = 0
    for row in rows:  # rare: a handful per batch at most, one statement each keeps RETURNING simple
        new += len(conn.execute(stmt, row).all())
    return new


_LISTED = (
    held_changes.c.id,
    held_changes.c.origin,
    held_changes.c.epoch,
    held_changes.c.seq,
    held_changes.c.record_type,
    held_changes.c.version,
    held_changes.c.deleted,
    held_changes.c.standards,
    held_changes.c.code,
    held_changes.c.message,
    held_changes.c.held_ms,
    held_changes.c.state,
    held_changes.c.decided_ms,
    held_changes.c.operator,
    held_changes.c.reason,
)


def _doc(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "origin": row.origin,
        "epoch": row.epoch,
        "seq": row.seq,
        "record_type": row.record_type,
        "version": row.version,
        "deleted": bool(row.deleted),
        "standards": row.standards,
        "code": row.code,
        "message": row.message,
        "held_ms": row.held_ms,
        "state": row.state,
        "decided_ms": row.decided_ms,
        "operator": row.operator,
        "reason": row.reason,
    }


def list_txn(conn: Connection, include_decided: bool, limit: int) -> list[dict[str, Any]]:
    stmt = select(*_LISTED).order_by(held_changes.c.id).limit(limit)
    if not include_decided:
        stmt = stmt.where(held_changes.c.state == HELD)
    return [_doc(r) for r in conn.execute(stmt)]


def counts_txn(conn: Connection) -> dict[str, int]:
    """Changes per state: {'held': n, 'released': n, 'skipped': n}."""
    out = {HELD: 0, RELEASED: 0, SKIPPED: 0}
    for state, n in conn.execute(
        select(held_changes.c.state, func.count()).group_by(held_changes.c.state)
    ):
        out[str(state)] = int(n)
    return out


def inspect_txn(conn: Connection, held_id: int) -> dict[str, Any]:
    row = conn.execute(select(*_LISTED).where(held_changes.c.id == held_id)).first()
    if row is None:
        raise HeldError("not_found", f"no held record with id {held_id}", 404)
    return _doc(row)


def _waiting(conn: Connection, held_id: int) -> Any:
    row = conn.execute(select(held_changes).where(held_changes.c.id == held_id)).first()
    if row is None or row.state != HELD:
        raise HeldError("not_found", f"no held record with id {held_id} waits for a decision", 404)
    return row


def _decide(
    conn: Connection, held_id: int, state: str, operator: str, reason: str, now_ms: int
) -> None:
    conn.execute(
        update(held_changes)
        .where(held_changes.c.id == held_id)
        .values(state=state, decided_ms=now_ms, operator=operator[:128], reason=reason[:MAX_REASON])
    )


def release_txn(
    conn: Connection,
    held_id: int,
    rules: RecordValidator,
    operator: str,
    reason: str,
    now_ms: int,
    validate: bool = True,
) -> dict[str, Any]:
    """Re-validate a held change with `rules` and apply it (version-guarded). Raises HeldError
    `still_invalid` (409), changing nothing, if it fails again."""
    row = _waiting(conn, held_id)
    change = Change(
        seq=row.seq,
        record_type=row.record_type,
        key=row.key,
        version=row.version,
        deleted=bool(row.deleted),
        payload=json.loads(row.payload),
        standards=row.standards,
    )
    if validate:
        try:
            check_change(change, rules)
        except BatchRejected as exc:
            raise HeldError("still_invalid", exc.message, 409) from None
    rows = record_rows(row.origin, row.epoch, [change], now_ms)
    upsert_for_epoch(conn, row.origin, row.epoch, rows)  # version-guarded, epoch rule
    _decide(conn, held_id, RELEASED, operator, reason, now_ms)
    current = conn.execute(
        select(records.c.version, records.c.epoch).where(
            records.c.record_type == row.record_type,
            records.c.owner == row.origin,
            records.c.key == row.key,
        )
    ).first()
    doc = inspect_txn(conn, held_id)
    doc["applied"] = (
        current is not None and current.version == row.version and current.epoch == row.epoch
    )
    doc["superseded"] = not doc["applied"]
    return doc


def skip_txn(
    conn: Connection, held_id: int, operator: str, reason: str, now_ms: int
) -> dict[str, Any]:
    _waiting(conn, held_id)
    _decide(conn, held_id, SKIPPED, operator, reason, now_ms)
    return inspect_txn(conn, held_id)


def waiting_ids_txn(conn: Connection, limit: int) -> list[int]:
    """Ids of the changes still held, oldest first (for a re-check after new standards)."""
    return [
        int(r.id)
        for r in conn.execute(
            select(held_changes.c.id)
            .where(held_changes.c.state == HELD)
            .order_by(held_changes.c.id)
            .limit(limit)
        )
    ]


def overlay_txn(conn: Connection, origin: str, epoch: str) -> list[OverlayRow]:
    """Held and skipped changes of one range, as anti-entropy must count them: this node
    accounts for them although it holds no record row for them."""
    rows = conn.execute(
        select(held_changes).where(
            and_(
                held_changes.c.origin == origin,
                held_changes.c.epoch == epoch,
                held_changes.c.state != RELEASED,
            )
        )
    ).all()
    return [
        OverlayRow(
            r.seq,
            r.record_type,
            r.key,
            r.version,
            bool(r.deleted),
            record_hash(
                r.record_type, origin, r.key, r.version, bool(r.deleted), json.loads(r.payload)
            ),
        )
        for r in rows
    ]
