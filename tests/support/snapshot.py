"""The final read of one node (reliability.md C4.2): everything the checkers judge, read from the
node's database in one read transaction — its own change log, every stored signed batch
(decoded), its records, its watermarks and its apply log.

Works on a running node (`Node.db`) or on a stopped node's database file alike. Reads only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sqlalchemy import Connection, select

from node.db import Database
from node.schema import apply_log, batches, changelog, node_meta, records, watermarks
from node.store import OriginDigest, origin_digests_txn
from sync.wire import BatchHeader, Change, WireError, decode_body, header_hash
from tests.support.history import content_digest


@dataclass(frozen=True)
class HeldChange:
    """One change as a node holds it in a stored signed batch."""

    origin: str
    epoch: str
    seq: int
    record_type: str
    key: str
    version: int
    digest: str  # content digest (history.content_digest)


@dataclass(frozen=True)
class HeldBatch:
    id: int
    origin: str
    epoch: str
    first_seq: int
    last_seq: int
    source: str
    header_hash: bytes


@dataclass(frozen=True)
class AppliedRow:
    id: int
    origin: str
    epoch: str
    first_seq: int
    last_seq: int
    kind: str


@dataclass(frozen=True)
class RecordRow:
    record_type: str
    owner: str
    key: str
    version: int
    deleted: bool
    hash: str
    epoch: str
    seq: int


@dataclass
class NodeSnapshot:
    node_id: str
    epoch: str
    last_seq: int
    own_changes: dict[int, HeldChange] = field(default_factory=dict)  # seq -> change
    held: list[HeldChange] = field(default_factory=list)  # from stored batches
    batches: list[HeldBatch] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)
    records: dict[tuple[str, str, str], RecordRow] = field(default_factory=dict)
    watermarks: dict[tuple[str, str], int] = field(default_factory=dict)
    applied: list[AppliedRow] = field(default_factory=list)
    digests: dict[str, OriginDigest] = field(default_factory=dict)


def _change(origin: str, epoch: str, c: Change) -> HeldChange:
    return HeldChange(
        origin,
        epoch,
        c.seq,
        c.record_type,
        c.key,
        c.version,
        content_digest(c.record_type, c.key, c.deleted, c.payload),
    )


def snapshot_txn(conn: Connection) -> NodeSnapshot:
    import json

    meta = conn.execute(select(node_meta).where(node_meta.c.id == 1)).mappings().one()
    snap = NodeSnapshot(meta["node_id"], meta["epoch"], meta["last_seq"])
    for row in conn.execute(select(changelog).order_by(changelog.c.seq)).mappings():
        payload = json.loads(row["payload"])
        snap.own_changes[row["seq"]] = HeldChange(
            snap.node_id,
            snap.epoch,
            row["seq"],
            row["record_type"],
            row["key"],
            row["version"],
            content_digest(row["record_type"], row["key"], bool(row["deleted"]), payload),
        )
    for row in conn.execute(select(batches).order_by(batches.c.id)).mappings():
        snap.batches.append(
            HeldBatch(
                row["id"],
                row["origin"],
                row["epoch"],
                row["first_seq"],
                row["last_seq"],
                row["source"],
                bytes(row["header_hash"]),
            )
        )
        try:
            header = BatchHeader.from_bytes(bytes(row["header"]))
            changes = decode_body(bytes(row["body"]), header)
        except WireError as exc:
            snap.undecodable.append(f"batch #{row['id']} of {row['origin']}: {exc}")
            continue
        if header_hash(bytes(row["header"])) != bytes(row["header_hash"]):
            snap.undecodable.append(f"batch #{row['id']} of {row['origin']}: header hash differs")
        snap.held.extend(_change(header.origin, header.epoch, c) for c in changes)
    for row in conn.execute(select(records)).mappings():
        rr = RecordRow(
            row["record_type"],
            row["owner"],
            row["key"],
            row["version"],
            bool(row["deleted"]),
            row["hash"],
            row["epoch"],
            row["seq"],
        )
        snap.records[(rr.owner, rr.record_type, rr.key)] = rr
    for row in conn.execute(select(watermarks)).mappings():
        snap.watermarks[(row["origin"], row["epoch"])] = row["seq"]
    for row in conn.execute(select(apply_log).order_by(apply_log.c.id)).mappings():
        snap.applied.append(
            AppliedRow(
                row["id"],
                row["origin"],
                row["epoch"],
                row["first_seq"],
                row["last_seq"],
                row["kind"],
            )
        )
    snap.digests = origin_digests_txn(conn)
    return snap


async def read_snapshot(db: Database) -> NodeSnapshot:
    return await db.read(snapshot_txn)


async def read_snapshot_offline(url: str) -> NodeSnapshot:
    """The final read of a stopped node, from its database URL."""
    db = Database(url)
    try:
        db.check_schema()
        return await db.read(snapshot_txn)
    finally:
        await asyncio.to_thread(db.close)
