"""End-to-end lag probes: a tiny heartbeat *record* that travels the data path (like the
replicated heartbeats of Kafka MirrorMaker 2), so every ancestor measures the real latency from
a node to itself — through batching, signing, relaying and applying — even when no business
data flows.

A node with a parent appends, on a schedule (`[network] e2e_probe_interval_s`, 0 = off), one
change of the reserved record type `PROBE_TYPE` to its own change log: key = its node id,
payload `{"sent_ms": "<its clock>"}`. It is batched, signed and relayed like any change, but it
is never business data: it is never written to `records` (so counts, digests, statistics and
validation rules never see it), receivers check its shape with `check_probe` instead of the
record schemas, and on apply they only note it in `e2e_probes` (origin, sent, arrived).

Pure parts: `PROBE_TYPE`, `is_probe`, `check_probe`. Database parts: `write_probe_txn` (the
origin's change-log entry) and `note_probes_txn` / `probes_txn` (the receiving side).
This module does not schedule (network_mgmt.heartbeat does) and does not send anything itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, select, update

from node.schema import changelog, e2e_probes, node_meta
from node.store import insert_for, read_meta_txn
from sync.errors import BatchRejected
from sync.wire import Change, Code

PROBE_TYPE = "_lsnet_probe"  # record types of the standards never start with "_"
_MAX_DIGITS = 16


def is_probe(record_type: str) -> bool:
    return record_type == PROBE_TYPE


def check_probe(change: Change, origin: str) -> None:
    """A probe change must be exactly what `write_probe_txn` makes, for its own origin."""
    sent = change.payload.get("sent_ms", "")
    if (
        change.key != origin
        or change.deleted
        or set(change.payload) != {"sent_ms"}
        or not (sent.isascii() and sent.isdigit() and len(sent) <= _MAX_DIGITS)
    ):
        raise BatchRejected(
            Code.INVALID_RECORD, f"change seq {change.seq}: malformed end-to-end probe"
        )


@dataclass(frozen=True)
class ProbeSeen:
    origin: str
    sent_ms: int
    arrived_ms: int


def write_probe_txn(conn: Connection, now_ms: int, standards: str) -> int:
    """Append one probe change to this node's change log (seq from the counter row, like any
    local write, so it becomes visible in order). Returns its seq."""
    meta = read_meta_txn(conn)
    seq = meta.last_seq + 1
    conn.execute(update(node_meta).where(node_meta.c.id == 1).values(last_seq=seq))
    conn.execute(
        changelog.insert().values(
            seq=seq,
            record_type=PROBE_TYPE,
            key=meta.node_id,
            version=seq,
            deleted=False,
            payload=json.dumps({"sent_ms": str(now_ms)}, separators=(",", ":")),
            standards=standards,
            created_ms=now_ms,
        )
    )
    return seq


def note_probes_txn(conn: Connection, origin: str, probes: Sequence[Change], now_ms: int) -> None:
    """Receiving side, inside the apply transaction: keep the newest probe of `origin`."""
    if not probes:
        return
    sent = max(int(p.payload["sent_ms"]) for p in probes)
    values = {"sent_ms": sent, "arrived_ms": now_ms}
    ins = insert_for(conn)(e2e_probes).values(origin=origin, **values)
    conn.execute(
        ins.on_conflict_do_update(
            index_elements=[e2e_probes.c.origin],
            set_=values,
            where=e2e_probes.c.sent_ms <= sent,
        )
    )


def probes_txn(conn: Connection) -> dict[str, ProbeSeen]:
    return {
        r.origin: ProbeSeen(r.origin, r.sent_ms, r.arrived_ms)
        for r in conn.execute(select(e2e_probes))
    }
