"""Database use cases behind the operator actions on the upward link and its poison batches.

Each public coroutine of `LinkAdmin` is one transaction: list or inspect quarantined batches,
replay one (lift the quarantine: it is sent again, byte for byte, with the batches it held back)
or skip one (mark it delivered without delivering it: the parent never gets it, and because
positions are gap-safe the batches after it of the same origin and epoch stay held back — a skip
is for a batch made obsolete, e.g. by a re-initialised origin with a new epoch), pause or resume
the link (persisted), and re-queue acknowledged batches from a seq so they are sent again (the
parent answers duplicates and re-acknowledges; harmless, useful after restoring the parent).

What this does not do: authenticate the operator or write the audit entry (the HTTP handlers
in `network_mgmt.admin_api` do both), talk to the parent, or change a batch's bytes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select, update

from node.db import Database
from node.schema import batches, changelog, held_changes, link_controls, quarantine_actions
from node.store import insert_for, read_meta_txn
from node.validation import RecordValidator
from sync import held as held_store
from sync.held import HELD
from sync.wire import BatchHeader, WireError, decode_body

MAX_REASON = 2000


class LinkAdminError(Exception):
    """An operator action that cannot be done; `code` is the stable error code."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class LinkControl:
    peer: str
    paused: bool
    reason: str
    changed_by: str
    changed_ms: int


def _row_doc(row: Any) -> dict[str, Any]:
    return {
        "batch_id": row.id,
        "origin": row.origin,
        "epoch": row.epoch,
        "first_seq": row.first_seq,
        "last_seq": row.last_seq,
        "range": [row.first_seq, row.last_seq],
        "code": row.quarantine_code,
        "reason": row.quarantine_reason,
        "time_ms": row.stored_ms,
        "source": row.source,
        "skipped": bool(row.acked),
    }


_COLUMNS = (
    batches.c.id,
    batches.c.origin,
    batches.c.epoch,
    batches.c.first_seq,
    batches.c.last_seq,
    batches.c.quarantine_code,
    batches.c.quarantine_reason,
    batches.c.stored_ms,
    batches.c.source,
    batches.c.acked,
)


def list_quarantined_txn(
    conn: Connection, include_skipped: bool, limit: int
) -> list[dict[str, Any]]:
    q = select(*_COLUMNS).where(batches.c.quarantined.is_(True))
    if not include_skipped:
        q = q.where(batches.c.acked.is_(False))
    return [_row_doc(r) for r in conn.execute(q.order_by(batches.c.id).limit(limit))]


def quarantine_counts_txn(conn: Connection) -> tuple[int, int]:
    """(quarantined and still held, skipped)."""
    rows = conn.execute(
        select(batches.c.acked, func.count())
        .where(batches.c.quarantined.is_(True))
        .group_by(batches.c.acked)
    ).all()
    by = {bool(a): int(n) for a, n in rows}
    return by.get(False, 0), by.get(True, 0)


def inspect_txn(conn: Connection, batch_id: int) -> dict[str, Any]:
    row = conn.execute(
        select(*_COLUMNS, batches.c.header, batches.c.body, batches.c.quarantined).where(
            batches.c.id == batch_id
        )
    ).first()
    if row is None or not row.quarantined:
        raise LinkAdminError("not_found", f"no quarantined batch with id {batch_id}", 404)
    doc = _row_doc(row)
    try:
        header = BatchHeader.from_bytes(bytes(row.header))
        changes = decode_body(bytes(row.body), header)
    except WireError as exc:
        doc["decode_error"] = exc.message
        return doc
    doc["standards"] = header.standards
    doc["created_ms"] = header.created_ms
    doc["count"] = header.count
    # Record types and versions only: keys are personal ids and stay in the database.
    doc["record_types"] = dict(Counter(c.record_type for c in changes))
    doc["deletes"] = sum(1 for c in changes if c.deleted)
    doc["actions"] = [
        {"action": a.action, "reason": a.reason, "operator": a.operator, "time_ms": a.time_ms}
        for a in conn.execute(
            select(quarantine_actions)
            .where(quarantine_actions.c.batch_id == batch_id)
            .order_by(quarantine_actions.c.id)
        )
    ]
    return doc


def _decide_txn(
    conn: Connection, batch_id: int, action: str, reason: str, operator: str, now_ms: int
) -> dict[str, Any]:
    row = conn.execute(
        select(*_COLUMNS, batches.c.quarantined).where(batches.c.id == batch_id)
    ).first()
    if row is None or not row.quarantined or row.acked:
        raise LinkAdminError(
            "not_found", f"no quarantined batch with id {batch_id} waits for a decision", 404
        )
    if action == "replay":
        values: dict[str, Any] = {"quarantined": False}
    else:
        values = {"acked": True}
    conn.execute(update(batches).where(batches.c.id == batch_id).values(**values))
    conn.execute(
        quarantine_actions.insert().values(
            batch_id=batch_id,
            action=action,
            reason=reason[:MAX_REASON],
            operator=operator[:128],
            time_ms=now_ms,
        )
    )
    return _row_doc(row)


@dataclass(frozen=True)
class BacklogView:
    """What waits to go upward: cheap to read (no scan of `records`), for every heartbeat."""

    changes: int
    oldest_ms: int | None
    held: int  # quarantined batches waiting for a decision
    held_records: int = 0  # received poison records held aside here (sync.held)

    def lag_ms(self, now_ms: int) -> int:
        return 0 if self.oldest_ms is None else max(0, now_ms - self.oldest_ms)


def backlog_txn(conn: Connection) -> BacklogView:
    meta = read_meta_txn(conn)
    pending = conn.execute(
        select(
            func.coalesce(func.sum(batches.c.last_seq - batches.c.first_seq + 1), 0),
            func.min(batches.c.created_ms),
        ).where(batches.c.acked.is_(False))
    ).one()
    unbatched = conn.execute(
        select(func.min(changelog.c.created_ms)).where(changelog.c.seq > meta.batched_seq)
    ).scalar()
    oldest = [v for v in (pending[1], unbatched) if v is not None]
    held = conn.execute(
        select(func.count())
        .select_from(batches)
        .where(batches.c.quarantined.is_(True), batches.c.acked.is_(False))
    ).scalar_one()
    held_records = conn.execute(
        select(func.count()).select_from(held_changes).where(held_changes.c.state == HELD)
    ).scalar_one()
    return BacklogView(
        changes=int(pending[0]) + (meta.last_seq - meta.batched_seq),
        oldest_ms=min(oldest) if oldest else None,
        held=int(held),
        held_records=int(held_records),
    )


def set_paused_txn(conn: Connection, control: LinkControl) -> None:
    values: dict[str, Any] = {
        "paused": control.paused,
        "reason": control.reason[:MAX_REASON],
        "changed_by": control.changed_by[:128],
        "changed_ms": control.changed_ms,
    }
    ins = insert_for(conn)(link_controls).values(peer=control.peer, **values)
    conn.execute(ins.on_conflict_do_update(index_elements=[link_controls.c.peer], set_=values))


def load_control_txn(conn: Connection, peer: str) -> LinkControl:
    row = conn.execute(select(link_controls).where(link_controls.c.peer == peer)).first()
    if row is None:
        return LinkControl(peer, False, "", "", 0)
    return LinkControl(row.peer, bool(row.paused), row.reason, row.changed_by, row.changed_ms)


def resend_from_txn(conn: Connection, origin: str, epoch: str | None, from_seq: int) -> int:
    """Re-queue acknowledged, not quarantined batches of `origin` ending at or after `from_seq`."""
    q = update(batches).where(
        batches.c.origin == origin,
        batches.c.last_seq >= from_seq,
        batches.c.acked.is_(True),
        batches.c.quarantined.is_(False),
    )
    if epoch is not None:
        q = q.where(batches.c.epoch == epoch)
    return int(conn.execute(q.values(acked=False)).rowcount or 0)


class LinkAdmin:
    """Operator use cases on one node's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def quarantined(
        self, include_skipped: bool = False, limit: int = 100
    ) -> list[dict[str, Any]]:
        return await self.db.read(list_quarantined_txn, include_skipped, limit)

    async def quarantine_counts(self) -> tuple[int, int]:
        return await self.db.read(quarantine_counts_txn)

    async def inspect(self, batch_id: int) -> dict[str, Any]:
        return await self.db.read(inspect_txn, batch_id)

    async def replay(
        self, batch_id: int, reason: str, operator: str, now_ms: int
    ) -> dict[str, Any]:
        return await self.db.write(_decide_txn, batch_id, "replay", reason, operator, now_ms)

    async def skip(self, batch_id: int, reason: str, operator: str, now_ms: int) -> dict[str, Any]:
        return await self.db.write(_decide_txn, batch_id, "skip", reason, operator, now_ms)

    # -- poison records held aside by this node as a receiver (sync.held) ---------------------
    async def held_records(
        self, include_decided: bool = False, limit: int = 100
    ) -> list[dict[str, Any]]:
        return await self.db.read(held_store.list_txn, include_decided, limit)

    async def held_record(self, held_id: int) -> dict[str, Any]:
        return await self.db.read(held_store.inspect_txn, held_id)

    async def held_counts(self) -> dict[str, int]:
        return await self.db.read(held_store.counts_txn)

    async def release_held(
        self,
        held_id: int,
        rules: RecordValidator,
        operator: str,
        reason: str,
        now_ms: int,
        validate: bool = True,
    ) -> dict[str, Any]:
        return await self.db.write(
            held_store.release_txn, held_id, rules, operator, reason, now_ms, validate
        )

    async def skip_held(
        self, held_id: int, operator: str, reason: str, now_ms: int
    ) -> dict[str, Any]:
        return await self.db.write(held_store.skip_txn, held_id, operator, reason, now_ms)

    async def waiting_held_ids(self, limit: int = 1000) -> list[int]:
        return await self.db.read(held_store.waiting_ids_txn, limit)

    async def backlog(self) -> BacklogView:
        return await self.db.read(backlog_txn)

    async def set_paused(self, control: LinkControl) -> None:
        await self.db.write(set_paused_txn, control)

    async def control(self, peer: str) -> LinkControl:
        return await self.db.read(load_control_txn, peer)

    async def resend_from(self, origin: str, epoch: str | None, from_seq: int) -> int:
        return await self.db.write(resend_from_txn, origin, epoch, from_seq)
