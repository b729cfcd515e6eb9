"""Use cases of the resource database that belong to the node itself: the epoch row, local
record writes with their change-log entries, and the read-only views behind `lsnet status`.

Each public coroutine is one transaction; its body is the `_..._txn` function beside it, so the
transaction boundary is visible. Replication use cases live in `sync.store`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from node.db import Database
from node.pg_bulk import COPY_THRESHOLD, copy_upsert
from node.records import ValidRecord

if TYPE_CHECKING:
    from hierarchy_config.standards import Issue
from node.schema import (
    batches,
    changelog,
    local_changes,
    node_meta,
    record_warnings,
    records,
    watermarks,
)
from sync.wire import ZERO_HASH, Change, pack_record, record_encoder, sorted_payload

# Until standards releases arrive (a later issue) records are validated by the built-in schemas.
BUILTIN_STANDARDS = "builtin-1"


class NodeStateError(Exception):
    """The database belongs to another node or was not initialised."""


@dataclass(frozen=True)
class Meta:
    node_id: str
    epoch: str
    created_ms: int
    last_seq: int
    batched_seq: int
    chain_head: bytes


_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def payload_json(payload: Mapping[str, str]) -> str:
    """Canonical JSON text of a payload, as stored in `records.payload` and `changelog.payload`:
    sorted keys, no spaces, non-ASCII kept as is.

    orjson writes the same text as the standard library's encoder (configured above) for a dict
    of strings, ten times faster; anything orjson refuses (a lone surrogate) goes to the standard
    encoder, so the text never depends on which one ran."""
    try:
        return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        return _JSON.encode(payload)


def record_hash(
    record_type: str, owner: str, key: str, version: int, deleted: bool, payload: Mapping[str, str]
) -> str:
    """Content hash of one record version; equal everywhere the same version is held."""
    data = pack_record(record_type, owner, key, version, deleted, payload)
    return hashlib.sha256(data).hexdigest()


def insert_for(conn: Connection) -> Any:
    """The dialect's INSERT that supports ON CONFLICT."""
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


_UPDATED_ON_CONFLICT = (
    "version",
    "deleted",
    "payload",
    "standards",
    "hash",
    "epoch",
    "seq",
    "updated_ms",
)


def _upsert_statement(insert: Any) -> Any:
    ins = insert(records)
    return ins.on_conflict_do_update(
        index_elements=[records.c.record_type, records.c.owner, records.c.key],
        set_={c: ins.excluded[c] for c in _UPDATED_ON_CONFLICT},
        where=ins.excluded.version > records.c.version,
    )


# A record row as a tuple, in the table's column order (what the bulk paths take).
RECORD_COLUMNS: tuple[str, ...] = tuple(c.name for c in records.c)


@functools.cache
def _sqlite_upsert() -> str:
    """The SQLite upsert compiled once to driver SQL; its parameters are in RECORD_COLUMNS order."""
    compiled = _upsert_statement(sqlite.insert).compile(
        dialect=sqlite.dialect(paramstyle="qmark"), column_keys=list(RECORD_COLUMNS)
    )
    assert compiled.positiontup is not None and tuple(compiled.positiontup) == RECORD_COLUMNS
    return str(compiled)


def record_rows(
    origin: str, epoch: str, changes: Sequence[Change], now_ms: int
) -> list[tuple[Any, ...]]:
    """Each change as a `records` row, a tuple in RECORD_COLUMNS order: its payload's canonical
    text (`payload_json`) and its content hash (`record_hash`), made in one loop in which the
    payload is put in canonical order once for both. A received batch's rows are made here, on
    the verifying process's hot path (`sync.store.batch_rows`)."""
    encode = record_encoder().encode
    sha256 = hashlib.sha256
    dumps = orjson.dumps
    rows = []
    for c in changes:
        payload = sorted_payload(c.payload)
        try:
            text = dumps(payload).decode()  # keys already in order: the canonical text
        except orjson.JSONEncodeError:
            text = _JSON.encode(payload)
        packed = encode([c.record_type, origin, c.key, c.version, c.deleted, payload])
        rows.append(
            (
                c.record_type,
                origin,
                c.key,
                c.version,
                c.deleted,
                text,
                c.standards,
                sha256(packed).hexdigest(),
                epoch,
                c.seq,
                now_ms,
            )
        )
    return rows


def upsert_record_tuples(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert or update records given as tuples in RECORD_COLUMNS order; an older or equal
    version never overwrites a newer one.

    On SQLite (the hot apply path of cities and provinces) the statement goes to the driver's
    executemany directly; SQLAlchemy's per-row parameter processing costs more than SQLite. On
    PostgreSQL many rows go through `node.pg_bulk` (COPY), a few through one multi-row upsert.
    """
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(_sqlite_upsert(), list(rows))
        return
    if len(rows) >= COPY_THRESHOLD:
        copy_upsert(conn, rows)  # PostgreSQL fast path (node.pg_bulk)
        return
    conn.execute(
        _upsert_statement(postgresql.insert),
        [dict(zip(RECORD_COLUMNS, r, strict=True)) for r in rows],
    )


def upsert_record_rows(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """`upsert_record_tuples` for rows given as mappings keyed by column name."""
    upsert_record_tuples(conn, [tuple(r[c] for c in RECORD_COLUMNS) for r in rows])


# -- epoch / meta ----------------------------------------------------------------------------------


def _init_meta_txn(conn: Connection, node_id: str, now_ms: int) -> tuple[Meta, bool]:
    row = conn.execute(select(node_meta).where(node_meta.c.id == 1)).mappings().first()
    if row is not None:
        if row["node_id"] != node_id:
            raise NodeStateError(
                f"this database belongs to node {row['node_id']}, not {node_id}; "
                "check 'database' in the configuration"
            )
        return _meta(row), False
    epoch = secrets.token_hex(16)
    conn.execute(
        node_meta.insert().values(
            id=1,
            node_id=node_id,
            epoch=epoch,
            created_ms=now_ms,
            last_seq=0,
            batched_seq=0,
            chain_head=ZERO_HASH,
        )
    )
    return Meta(node_id, epoch, now_ms, 0, 0, ZERO_HASH), True


def _meta(row: Any) -> Meta:
    return Meta(
        node_id=row["node_id"],
        epoch=row["epoch"],
        created_ms=row["created_ms"],
        last_seq=row["last_seq"],
        batched_seq=row["batched_seq"],
        chain_head=bytes(row["chain_head"]),
    )


def read_meta_txn(conn: Connection) -> Meta:
    row = conn.execute(select(node_meta).where(node_meta.c.id == 1)).mappings().first()
    if row is None:
        raise NodeStateError("database has no node identity; run 'lsnet node init' first")
    return _meta(row)


# -- local writes ----------------------------------------------------------------------------------


@dataclass
class IngestResult:
    changed: int = 0
    unchanged: int = 0
    last_seq: int = 0
    warnings: int = 0
    seqs: list[int] = field(default_factory=list)
    batches_cut: int = 0  # full batches signed in the same transaction (`CutAtIngest`)


CutAtIngest = Callable[[Connection, int], int]
"""Cuts the full batches waiting in the change log, in the ingest transaction (connection, now
in ms); returns how many. `sync.store.cut_full_batches_txn` bound to the node's key and limits."""


def ingest_txn(
    conn: Connection,
    recs: Sequence[ValidRecord],
    now_ms: int,
    standards: str,
    warnings: Sequence[Sequence[Issue]] | None = None,
    local_types: frozenset[str] = frozenset(),
    cut: CutAtIngest | None = None,
) -> IngestResult:
    """Write local records and their change-log entries in the caller's transaction.

    Sequence numbers come from the counter row, updated in this same transaction, so they become
    visible in order. Writing an identical version again is a no-op (imports are idempotent).
    Records of `local_types` (replication mode `local`) take no sequence number: their changes go
    to `local_changes` and never into an upward batch (their `records.seq` is 0).
    `cut` (a node with a parent): signs the full batches now waiting, in this transaction.
    """
    meta = read_meta_txn(conn)
    owner = meta.node_id
    result = IngestResult()
    pending: dict[tuple[str, str], tuple[int, bool, str]] = {}
    changes: list[tuple[ValidRecord, int, str]] = []
    warning_rows: list[dict[str, Any]] = []
    for index, rec in enumerate(recs):
        ident = (rec.record_type, rec.key)
        current = pending.get(ident)
        if current is None:
            row = conn.execute(
                select(records.c.version, records.c.deleted, records.c.payload).where(
                    records.c.record_type == rec.record_type,
                    records.c.owner == owner,
                    records.c.key == rec.key,
                )
            ).first()
            current = (row.version, row.deleted, row.payload) if row is not None else None
        body = payload_json(rec.payload)
        if current is None and rec.deleted:
            result.unchanged += 1
            continue
        if (
            current is not None
            and current[1] == rec.deleted
            and (rec.deleted or current[2] == body)
        ):
            result.unchanged += 1
            continue
        version = 1 if current is None else current[0] + 1
        pending[ident] = (version, rec.deleted, body)
        changes.append((rec, version, body))
        for issue in warnings[index] if warnings is not None else ():
            warning_rows.append(
                {
                    "record_type": rec.record_type,
                    "owner": owner,
                    "key": rec.key,
                    "version": version,
                    "field": issue.field[:128],
                    "rule_id": issue.rule_id[:128],
                    "message": issue.message,
                    "standards": standards,
                    "created_ms": now_ms,
                }
            )
    kept = [c for c in changes if c[0].record_type in local_types]
    changes = [c for c in changes if c[0].record_type not in local_types]
    if warning_rows:
        conn.execute(record_warnings.insert(), warning_rows)
    result.warnings = len(warning_rows)
    if kept:
        _write_kept_txn(conn, kept, owner, meta.epoch, now_ms, standards)
        result.changed = len(kept)
    if not changes:
        result.last_seq = meta.last_seq
        return result
    first = meta.last_seq + 1
    last = meta.last_seq + len(changes)
    conn.execute(update(node_meta).where(node_meta.c.id == 1).values(last_seq=last))
    log_rows = []
    rec_rows = []
    for offset, (rec, version, body) in enumerate(changes):
        seq = first + offset
        log_rows.append(
            {
                "seq": seq,
                "record_type": rec.record_type,
                "key": rec.key,
                "version": version,
                "deleted": rec.deleted,
                "payload": body,
                "standards": standards,
                "created_ms": now_ms,
            }
        )
        rec_rows.append(
            {
                "record_type": rec.record_type,
                "owner": owner,
                "key": rec.key,
                "version": version,
                "deleted": rec.deleted,
                "payload": body,
                "standards": standards,
                "hash": record_hash(
                    rec.record_type, owner, rec.key, version, rec.deleted, rec.payload
                ),
                "epoch": meta.epoch,
                "seq": seq,
                "updated_ms": now_ms,
            }
        )
        result.seqs.append(seq)
    conn.execute(changelog.insert(), log_rows)
    upsert_record_rows(conn, rec_rows)
    result.changed += len(changes)
    result.last_seq = last
    if cut is not None:
        result.batches_cut = cut(conn, now_ms)
    return result


def _write_kept_txn(
    conn: Connection,
    kept: Sequence[tuple[ValidRecord, int, str]],
    owner: str,
    epoch: str,
    now_ms: int,
    standards: str,
) -> None:
    """Records that stay here (mode `local`): the record rows and their local change log."""
    conn.execute(
        local_changes.insert(),
        [
            {
                "record_type": rec.record_type,
                "key": rec.key,
                "version": version,
                "deleted": rec.deleted,
                "payload": body,
                "standards": standards,
                "created_ms": now_ms,
            }
            for rec, version, body in kept
        ],
    )
    upsert_record_rows(
        conn,
        [
            {
                "record_type": rec.record_type,
                "owner": owner,
                "key": rec.key,
                "version": version,
                "deleted": rec.deleted,
                "payload": body,
                "standards": standards,
                "hash": record_hash(
                    rec.record_type, owner, rec.key, version, rec.deleted, rec.payload
                ),
                "epoch": epoch,
                "seq": 0,
                "updated_ms": now_ms,
            }
            for rec, version, body in kept
        ],
    )


class NodeStore:
    """The node's own use cases, each one transaction."""

    def __init__(self, db: Database, cut: CutAtIngest | None = None) -> None:
        self.db = db
        self.cut = cut  # set for a node with a parent: full batches are signed at ingest

    async def init_meta(self, node_id: str, now_ms: int) -> tuple[Meta, bool]:
        return await self.db.write(_init_meta_txn, node_id, now_ms)

    async def meta(self) -> Meta:
        return await self.db.read(read_meta_txn)

    async def ingest(
        self,
        recs: Sequence[ValidRecord],
        now_ms: int,
        standards: str = BUILTIN_STANDARDS,
        warnings: Sequence[Sequence[Issue]] | None = None,
        local_types: frozenset[str] = frozenset(),
    ) -> IngestResult:
        return await self.db.write(
            ingest_txn, recs, now_ms, standards, warnings, local_types, self.cut
        )

    async def warnings(self, limit: int) -> list[dict[str, Any]]:
        return await self.db.read(warnings_txn, limit)

    async def status(self) -> StatusView:
        return await self.db.read(status_txn)

    async def origin_digests(self) -> dict[str, OriginDigest]:
        return await self.db.read(origin_digests_txn)


# -- read views ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusView:
    meta: Meta
    records_by_origin: dict[str, int]
    watermarks: dict[str, dict[str, int]]
    backlog_changes: int
    backlog_batches: int
    oldest_unacked_ms: int | None
    quarantined: int

    def lag_seconds(self, now_ms: int) -> float:
        """Age of the oldest change the parent has not acknowledged (0 when none waits)."""
        if self.oldest_unacked_ms is None:
            return 0.0
        return max(0.0, (now_ms - self.oldest_unacked_ms) / 1000.0)


def status_txn(conn: Connection) -> StatusView:
    meta = read_meta_txn(conn)
    by_origin = {
        row.owner: row.n
        for row in conn.execute(
            select(records.c.owner, func.count().label("n")).group_by(records.c.owner)
        )
    }
    wms: dict[str, dict[str, int]] = {}
    for row in conn.execute(select(watermarks.c.origin, watermarks.c.epoch, watermarks.c.seq)):
        wms.setdefault(row.origin, {})[row.epoch] = row.seq
    wms.setdefault(meta.node_id, {})[meta.epoch] = meta.last_seq
    pending = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(batches.c.last_seq - batches.c.first_seq + 1), 0),
            func.min(batches.c.created_ms),
        ).where(batches.c.acked.is_(False))
    ).one()
    unbatched_oldest = conn.execute(
        select(func.min(changelog.c.created_ms)).where(changelog.c.seq > meta.batched_seq)
    ).scalar()
    oldest_candidates = [v for v in (pending[2], unbatched_oldest) if v is not None]
    quarantined = conn.execute(
        select(func.count()).select_from(batches).where(batches.c.quarantined.is_(True))
    ).scalar_one()
    return StatusView(
        meta=meta,
        records_by_origin=by_origin,
        watermarks=wms,
        backlog_changes=int(pending[1]) + (meta.last_seq - meta.batched_seq),
        backlog_batches=int(pending[0]),
        oldest_unacked_ms=min(oldest_candidates) if oldest_candidates else None,
        quarantined=int(quarantined),
    )


@dataclass(frozen=True)
class OriginDigest:
    count: int
    live: int
    digest: str


def origin_digests_txn(conn: Connection) -> dict[str, OriginDigest]:
    """Per-origin content digest over (type, key, version, deleted, hash), in key order, of the
    records that replicate (records kept `local` have seq 0 and exist only at their owner)."""
    out: dict[str, OriginDigest] = {}
    current: str | None = None
    h = hashlib.sha256()
    count = live = 0
    query = select(
        records.c.owner,
        records.c.record_type,
        records.c.key,
        records.c.version,
        records.c.deleted,
        records.c.hash,
    )
    query = query.where(records.c.seq != 0).order_by(
        records.c.owner, records.c.record_type, records.c.key
    )
    for row in conn.execute(query):
        if row.owner != current:
            if current is not None:
                out[current] = OriginDigest(count, live, h.hexdigest())
            current, h, count, live = row.owner, hashlib.sha256(), 0, 0
        h.update(
            f"{row.record_type}\x1f{row.key}\x1f{row.version}\x1f{int(row.deleted)}\x1f{row.hash}\n".encode()
        )
        count += 1
        live += 0 if row.deleted else 1
    if current is not None:
        out[current] = OriginDigest(count, live, h.hexdigest())
    return out


def warnings_txn(conn: Connection, limit: int) -> list[dict[str, Any]]:
    """The newest stored validation warnings, newest first."""
    rows = conn.execute(
        select(record_warnings).order_by(record_warnings.c.id.desc()).limit(limit)
    ).mappings()
    return [dict(r) for r in rows]
