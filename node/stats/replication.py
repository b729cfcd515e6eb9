"""Which standards release decides statistics and replication modes at this node.

The release in force (its `ReleaseValidator`), or the shipped default pack while no release has
been verified (nodes then validate with the built-in schemas, but the default pack's indicators
and replication policies apply). `local_record_types` feeds the write path (`node.store`):
records of those types never enter the upward change log. `promote_kept_txn` sends up what was
kept once a later release makes its type replicate.
"""

from __future__ import annotations

from sqlalchemy import Connection, literal_column, select, update

from hierarchy_config.standards import Release, default_release
from node.schema import changelog, node_meta, records
from node.store import read_meta_txn
from node.validation import RecordValidator, ReleaseValidator

__all__ = ["local_record_types", "policy_release", "promote_kept_txn"]


def policy_release(validator: RecordValidator) -> Release:
    if isinstance(validator, ReleaseValidator):
        return validator.standards.release
    return default_release()


def local_record_types(validator: RecordValidator) -> frozenset[str]:
    return policy_release(validator).local_record_types()


def promote_kept_txn(conn: Connection, local_types: frozenset[str], now_ms: int) -> int:
    """Records this node kept (`local`, seq 0) whose type now replicates: give each current
    version the next upward seq and a change-log entry, so it flows up like any change. Returns
    how many were promoted. Nothing happens for types that are still `local`."""
    meta = read_meta_txn(conn)
    query = (
        select(records)
        .where(records.c.owner == meta.node_id, records.c.seq == literal_column("0"))
        .order_by(records.c.record_type, records.c.key)
    )
    rows = [r for r in conn.execute(query).mappings() if r["record_type"] not in local_types]
    if not rows:
        return 0
    first = meta.last_seq + 1
    conn.execute(
        update(node_meta).where(node_meta.c.id == 1).values(last_seq=meta.last_seq + len(rows))
    )
    conn.execute(
        changelog.insert(),
        [
            {
                "seq": first + n,
                "record_type": r["record_type"],
                "key": r["key"],
                "version": r["version"],
                "deleted": r["deleted"],
                "payload": r["payload"],
                "standards": r["standards"],
                "created_ms": now_ms,
            }
            for n, r in enumerate(rows)
        ],
    )
    for n, r in enumerate(rows):
        conn.execute(
            update(records)
            .where(
                records.c.record_type == r["record_type"],
                records.c.owner == r["owner"],
                records.c.key == r["key"],
            )
            .values(seq=first + n, epoch=meta.epoch)
        )
    return len(rows)
