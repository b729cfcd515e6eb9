"""End-of-test checks for a process network: every city's accepted records reached its province
and the ministry exactly once, with equal content, and every stored batch verifies.

Records are compared with records and seqs with seqs: end-to-end probes (network_mgmt.probe) take
change-log seqs but are never records, and keep coming after the network converged, so a city's
last seq is neither its record count nor necessarily the seq its ancestors stopped at."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nacl.signing import VerifyKey
from sqlalchemy import Connection, func, select

from hierarchy_config.model import NodeConfig
from network_mgmt.probe import PROBE_TYPE
from node.db import Database
from node.records import validate_record
from node.schema import changelog, node_meta, watermarks
from node.store import NodeStore, OriginDigest
from security.keys import load_signing_key
from sync.scrub import ScrubReport, scrub
from sync.store import SyncStore
from tests.support.procs import ProcNetwork, invoke_ok


def natural_keys(records: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """(record type, natural key) of each record, as the node computes it."""
    out = set()
    for obj in records:
        rec = validate_record(obj)
        out.add((rec.record_type, rec.key))
    return out


@dataclass(frozen=True)
class Offline:
    digests: dict[str, OriginDigest]
    report: ScrubReport
    last_seq: int  # this node's own change-log seq (records and probes)
    data_changes: int  # this node's own change-log entries that are records (not probes)
    watermarks: dict[tuple[str, str], int]


def _own_key(config: NodeConfig) -> VerifyKey:
    return load_signing_key(config.node.key_file).verify_key


def _seqs_txn(conn: Connection) -> tuple[int, int, dict[tuple[str, str], int]]:
    last = conn.execute(select(node_meta.c.last_seq).where(node_meta.c.id == 1)).scalar_one()
    data = conn.execute(
        select(func.count()).select_from(changelog).where(changelog.c.record_type != PROBE_TYPE)
    ).scalar_one()
    marks = {
        (r.origin, r.epoch): int(r.seq)
        for r in conn.execute(select(watermarks.c.origin, watermarks.c.epoch, watermarks.c.seq))
    }
    return int(last), int(data), marks


async def _offline(url: str, keys: Mapping[str, Any]) -> Offline:
    db = Database(url)
    try:
        db.check_schema()
        digests = await NodeStore(db).origin_digests()
        report = await scrub(SyncStore(db), keys)
        last, data, marks = await db.read(_seqs_txn)
        return Offline(digests, report, last, data, marks)
    finally:
        await asyncio.to_thread(db.close)


def assert_network_holds_exactly(net: ProcNetwork, expected: Mapping[str, int]) -> None:
    """`expected` maps each city to its number of distinct accepted natural keys.

    Waits (with a deadline) until the province and the ministry hold every change of every city,
    checks the live status documents, stops every node with SIGTERM (exit code 0 expected), then
    opens each node's database to compare content digests and scrub the stored batches."""
    targets = net.wait_converged(timeout_s=60)
    ministry_status = net.ministry.status()
    for city in net.cities():
        epoch, last_seq = targets[city.node_id]
        want = expected[city.node_id]
        for holder_doc in (ministry_status, net.parent_of(city.node_id).status()):
            got = holder_doc["records_by_origin"].get(city.node_id, 0)
            assert got == want, f"{holder_doc['node']} holds {got} of {city.node_id}'s {want}"
            marks = holder_doc["watermarks"][city.node_id]
            assert set(marks) == {epoch}, marks
            assert marks[epoch] >= last_seq, f"{holder_doc['node']}: {marks} below {last_seq}"

    codes = net.terminate_all()
    assert set(codes.values()) == {0}, f"exit codes after SIGTERM: {codes}"

    seen: dict[str, Offline] = {}
    for node in net.nodes.values():
        # Its children's keys and its own: a province's own batches hold its probes.
        keys = {**node.config.subtree_keys(), node.node_id: _own_key(node.config)}
        seen[node.node_id] = asyncio.run(_offline(node.config.node.database, keys))
    for city in net.cities():
        own_view = seen[city.node_id]
        # Every accepted record was written exactly once at the city: a re-posted chunk whose
        # first attempt had been committed changed nothing (record changes, probes left out).
        want = expected[city.node_id]
        assert own_view.data_changes == want, (
            f"city {city.node_id} made {own_view.data_changes} record changes for {want} records"
        )
        own = own_view.digests[city.node_id]
        assert own.count == want
        for holder in (net.parent_of(city.node_id), net.ministry):
            assert seen[holder.node_id].digests.get(city.node_id) == own, (
                f"{holder.node_id}'s copy of {city.node_id} differs from the city's"
            )
    # Batches cover seqs 1..watermark of every city exactly once, in one unbroken signed chain,
    # and the watermark lies between the city's seq at convergence and its last seq.
    for holder in [net.ministry, *net.provinces()]:
        report = seen[holder.node_id].report
        assert report.ok, f"scrub at {holder.node_id}: {report.problems[:5]}"
        for city in net.cities():
            if holder is net.ministry or net.parent_of(city.node_id) is holder:
                epoch, target = targets[city.node_id]
                mark = seen[holder.node_id].watermarks.get((city.node_id, epoch), 0)
                assert target <= mark <= seen[city.node_id].last_seq, (
                    f"{holder.node_id} holds {city.node_id} up to seq {mark}; the city was at "
                    f"{target} when converged and made {seen[city.node_id].last_seq}"
                )
                assert report.by_origin.get(city.node_id, 0) == mark, (
                    f"{holder.node_id} holds {report.by_origin.get(city.node_id, 0)} signed "
                    f"changes of {city.node_id}, its watermark is {mark}"
                )
        result = invoke_ok("verify", "--config", str(holder.config_path))
        assert "0 problems" in result.stdout, result.output
