"""End-of-test checks for a process network: every city's accepted records reached its province
and the ministry exactly once, with equal content, and every stored batch verifies."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from node.db import Database
from node.records import validate_record
from node.store import NodeStore, OriginDigest
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


async def _offline(url: str, keys: Mapping[str, Any]) -> tuple[dict[str, OriginDigest], Any]:
    db = Database(url)
    try:
        db.check_schema()
        digests = await NodeStore(db).origin_digests()
        report = await scrub(SyncStore(db), keys) if keys else None
        return digests, report
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
        # Every accepted record was written exactly once at the city: a re-posted chunk whose
        # first attempt had been committed changed nothing.
        assert last_seq == want, f"city {city.node_id} made {last_seq} changes for {want} records"
        for holder_doc in (ministry_status, net.parent_of(city.node_id).status()):
            got = holder_doc["records_by_origin"].get(city.node_id, 0)
            assert got == want, f"{holder_doc['node']} holds {got} of {city.node_id}'s {want}"
            assert holder_doc["watermarks"][city.node_id] == {epoch: last_seq}

    codes = net.terminate_all()
    assert set(codes.values()) == {0}, f"exit codes after SIGTERM: {codes}"

    digests: dict[str, dict[str, OriginDigest]] = {}
    reports: dict[str, ScrubReport] = {}
    for node in net.nodes.values():
        keys = node.config.subtree_keys()
        digests[node.node_id], report = asyncio.run(_offline(node.config.node.database, keys))
        if report is not None:
            reports[node.node_id] = report
    for city in net.cities():
        own = digests[city.node_id][city.node_id]
        assert own.count == expected[city.node_id]
        for holder in (net.parent_of(city.node_id), net.ministry):
            assert digests[holder.node_id].get(city.node_id) == own, (
                f"{holder.node_id}'s copy of {city.node_id} differs from the city's"
            )
    # Batches cover seqs 1..last_seq of every city exactly once, in one unbroken signed chain.
    for holder in [net.ministry, *net.provinces()]:
        report = reports[holder.node_id]
        assert report.ok, f"scrub at {holder.node_id}: {report.problems[:5]}"
        for city in net.cities():
            if holder is net.ministry or net.parent_of(city.node_id) is holder:
                assert report.by_origin.get(city.node_id, 0) == targets[city.node_id][1], (
                    f"{holder.node_id} holds {report.by_origin.get(city.node_id, 0)} signed "
                    f"changes of {city.node_id}, the city made {targets[city.node_id][1]}"
                )
        result = invoke_ok("verify", "--config", str(holder.config_path))
        assert "0 problems" in result.stdout, result.output
