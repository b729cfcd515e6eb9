"""node.store and sync.store on SQLite and PostgreSQL: local writes with their change log, cutting
chained batches, applying verified batches exactly once, acknowledgements and atomicity."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, delete, select
from sqlalchemy.exc import IntegrityError

from node.db import Database
from node.records import ValidRecord, validate_record
from node.schema import apply_log, batches, changelog, links, records, watermarks
from node.store import NodeStore, record_hash
from security.keys import NodeKey
from security.signing import verify
from sync.store import CUT_AT_INGEST_MAX, LinkState, SyncStore, cut_full_batches_txn
from sync.wire import (
    PURPOSE_BATCH,
    ZERO_HASH,
    BatchHeader,
    BatchStatus,
    Code,
    SignedBatch,
    Watermark,
    header_hash,
    sha256,
)
from tests.sync.helpers import (
    CITY_A,
    NOW_MS,
    PROVINCE,
    changes_for,
    make_batch,
    row_counts,
    valid_records,
    verified,
)

BIG = 10**9


@dataclass
class Side:
    db: Database
    store: NodeStore
    sync: SyncStore
    node_id: str

    async def epoch(self) -> str:
        return (await self.store.meta()).epoch


async def open_side(url: str, node_id: str) -> Side:
    db = Database(url)
    await asyncio.to_thread(db.migrate)
    store = NodeStore(db)
    await store.init_meta(node_id, NOW_MS)
    return Side(db, store, SyncStore(db), node_id)


@pytest.fixture
async def city(database_for: Callable[[str], str]) -> AsyncIterator[Side]:
    side = await open_side(database_for(CITY_A), CITY_A)
    yield side
    await asyncio.to_thread(side.db.close)


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[Side]:
    """A city on SQLite that only produces batches for the parent under test."""
    side = await open_side(f"sqlite:///{tmp_path / 'source.db'}", CITY_A)
    yield side
    await asyncio.to_thread(side.db.close)


@pytest.fixture
async def province(database_for: Callable[[str], str]) -> AsyncIterator[Side]:
    side = await open_side(database_for(PROVINCE), PROVINCE)
    yield side
    await asyncio.to_thread(side.db.close)


KEY = NodeKey.generate()


def _rows_txn(conn: Connection, table: Any) -> list[Any]:
    return sorted(conn.execute(select(table)).all())


async def rows(db: Database, table: Any) -> list[Any]:
    return await db.read(_rows_txn, table)


async def snapshot(db: Database) -> dict[str, list[Any]]:
    return {t.name: await rows(db, t) for t in (records, batches, watermarks)}


def _record_txn(conn: Connection, owner: str, key: str) -> Any:
    return conn.execute(
        select(records).where(records.c.owner == owner, records.c.key == key)
    ).one_or_none()


async def record_row(db: Database, owner: str, key: str) -> Any:
    return await db.read(_record_txn, owner, key)


async def cut_all(side: Side, max_changes: int, max_bytes: int = BIG) -> None:
    while await side.sync.cut_batch(KEY, max_changes, max_bytes, NOW_MS):
        pass


async def local_batches(side: Side) -> list[SignedBatch]:
    return [p.signed for p in await side.sync.next_transfer(1000, BIG)]


# -- local writes ----------------------------------------------------------------------------------


async def test_ingest_writes_records_and_change_log_with_dense_seqs(city: Side) -> None:
    recs = valid_records(CITY_A, 10, seed=1)
    first = await city.store.ingest(recs, NOW_MS)
    assert (first.changed, first.unchanged, first.last_seq) == (10, 0, 10)
    assert first.seqs == list(range(1, 11))
    more = await city.store.ingest(valid_records(CITY_A, 15, seed=2)[:5], NOW_MS)
    assert more.seqs == list(range(11, 16))

    log = await rows(city.db, changelog)
    assert [r[0] for r in log] == list(range(1, 16))
    held = await rows(city.db, records)
    assert len(held) == 15
    assert {r.owner for r in held} == {CITY_A}
    assert sorted(r.seq for r in held) == list(range(1, 16))
    epoch = await city.epoch()
    for rec in recs:
        row = await record_row(city.db, CITY_A, rec.key)
        assert row.version == 1 and row.deleted is False and row.epoch == epoch
        assert json.loads(row.payload) == rec.payload
        assert row.hash == record_hash(rec.record_type, CITY_A, rec.key, 1, False, rec.payload)
    assert (await city.store.meta()).last_seq == 15


async def test_reingesting_identical_records_changes_nothing(city: Side) -> None:
    recs = valid_records(CITY_A, 12, seed=3)
    await city.store.ingest(recs, NOW_MS)
    before = (await rows(city.db, changelog), await rows(city.db, records))
    again = await city.store.ingest(recs, NOW_MS + 1000)
    assert (again.changed, again.unchanged, again.last_seq, again.seqs) == (0, 12, 12, [])
    assert (await rows(city.db, changelog), await rows(city.db, records)) == before


async def test_an_update_bumps_the_version(city: Side) -> None:
    recs = valid_records(CITY_A, 5, seed=4)
    await city.store.ingest(recs, NOW_MS)
    target = recs[1]
    changed = ValidRecord(
        target.record_type, target.key, {**target.payload, "name": "新名称有限公司"}, False
    )
    res = await city.store.ingest([changed], NOW_MS)
    assert (res.changed, res.seqs) == (1, [6])
    row = await record_row(city.db, CITY_A, target.key)
    assert (row.version, row.seq) == (2, 6)
    assert json.loads(row.payload)["name"] == "新名称有限公司"
    log = await rows(city.db, changelog)
    assert (log[-1][2], log[-1][3]) == (target.key, 2)


async def test_the_same_record_twice_in_one_ingest_gets_two_versions(city: Side) -> None:
    rec = valid_records(CITY_A, 1, seed=5)[0]
    v2 = ValidRecord(rec.record_type, rec.key, {**rec.payload, "name": "第二版"}, False)
    res = await city.store.ingest([rec, v2], NOW_MS)
    assert (res.changed, res.seqs) == (2, [1, 2])
    row = await record_row(city.db, CITY_A, rec.key)
    assert (row.version, json.loads(row.payload)["name"]) == (2, "第二版")


async def test_tombstones(city: Side) -> None:
    recs = valid_records(CITY_A, 4, seed=6)
    await city.store.ingest(recs, NOW_MS)
    target = recs[0]
    assert target.record_type == "employer"
    tomb = validate_record({"type": "employer", "uscc": target.key, "deleted": True})
    res = await city.store.ingest([tomb], NOW_MS)
    assert (res.changed, res.seqs) == (1, [5])
    row = await record_row(city.db, CITY_A, target.key)
    assert (row.version, row.deleted) == (2, True)
    log = await rows(city.db, changelog)
    assert (log[-1].key, log[-1].version, log[-1].deleted) == (target.key, 2, True)
    # A second tombstone, and a tombstone of a record never held, change nothing.
    other = valid_records(CITY_A, 4, seed=60)[0]
    assert other.key != target.key
    unknown = validate_record({"type": "employer", "uscc": other.key, "deleted": True})
    res = await city.store.ingest([tomb, unknown], NOW_MS)
    assert (res.changed, res.unchanged) == (0, 2)
    assert await record_row(city.db, CITY_A, unknown.key) is None
    # Writing the record again brings it back as a new version.
    res = await city.store.ingest([target], NOW_MS)
    row = await record_row(city.db, CITY_A, target.key)
    assert (res.seqs, row.version, row.deleted) == ([6], 3, False)


async def test_a_failed_ingest_writes_nothing(city: Side) -> None:
    await city.store.ingest(valid_records(CITY_A, 3, seed=7), NOW_MS)
    before = (await rows(city.db, changelog), await rows(city.db, records), await city.store.meta())
    good = valid_records(CITY_A, 6, seed=8)[3:5]
    # A record without a key fails at the change-log insert (NOT NULL), after the change-log
    # counter has been bumped in the same transaction.
    bad = ValidRecord("employer", None, {"name": "x"}, False)  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        await city.store.ingest([*good, bad], NOW_MS)
    after = (await rows(city.db, changelog), await rows(city.db, records), await city.store.meta())
    assert after == before
    res = await city.store.ingest(good, NOW_MS)
    assert res.seqs == [4, 5]


# -- cutting batches -------------------------------------------------------------------------------


async def test_cut_batch_makes_chained_bounded_batches(city: Side) -> None:
    await city.store.ingest(valid_records(CITY_A, 25, seed=9), NOW_MS)
    await cut_all(city, max_changes=10)
    assert await city.sync.cut_batch(KEY, 10, BIG, NOW_MS) is False
    signed = await local_batches(city)
    headers = [BatchHeader.from_bytes(s.header_bytes) for s in signed]
    assert [(h.first_seq, h.last_seq, h.count) for h in headers] == [
        (1, 10, 10),
        (11, 20, 10),
        (21, 25, 5),
    ]
    epoch = await city.epoch()
    prev = ZERO_HASH
    for s, h in zip(signed, headers, strict=True):
        assert (h.origin, h.epoch, h.kid) == (CITY_A, epoch, KEY.kid)
        assert h.prev == prev
        assert h.digest == sha256(s.body)
        verify(KEY.verify_key, PURPOSE_BATCH, s.header_bytes, s.signature)
        prev = header_hash(s.header_bytes)
    meta = await city.store.meta()
    assert (meta.batched_seq, meta.chain_head) == (25, prev)
    stored = await rows(city.db, batches)
    assert {(r.source, r.acked, r.quarantined) for r in stored} == {("local", False, False)}
    # New changes continue the same chain.
    await city.store.ingest(valid_records(CITY_A, 30, seed=9)[25:], NOW_MS)
    await cut_all(city, max_changes=10)
    last = BatchHeader.from_bytes((await local_batches(city))[-1].header_bytes)
    assert (last.first_seq, last.last_seq, last.prev) == (26, 30, prev)


async def test_full_batches_are_signed_in_the_ingest_transaction(city: Side) -> None:
    """A node with a parent signs the full batches of a backlog as its records are written (the
    node passes `cut_full_batches_txn` bound to its key); a partly filled batch waits for the
    upstream queue, and the chain is the one the queue would have made."""

    def cut(conn: Connection, now_ms: int) -> int:
        return cut_full_batches_txn(conn, KEY, 10, BIG, now_ms)

    city.store.cut = cut
    result = await city.store.ingest(valid_records(CITY_A, 25, seed=9), NOW_MS)
    assert (result.changed, result.batches_cut) == (25, 2)
    meta = await city.store.meta()
    assert (meta.last_seq, meta.batched_seq) == (25, 20)
    result = await city.store.ingest(valid_records(CITY_A, 29, seed=9)[25:], NOW_MS)
    assert result.batches_cut == 0  # 9 waiting: not a full batch
    await cut_all(city, max_changes=10)  # the queue cuts the rest when it sends
    signed = await local_batches(city)
    headers = [BatchHeader.from_bytes(s.header_bytes) for s in signed]
    assert [(h.first_seq, h.last_seq) for h in headers] == [(1, 10), (11, 20), (21, 29)]
    prev = ZERO_HASH
    for s, h in zip(signed, headers, strict=True):
        assert h.prev == prev
        verify(KEY.verify_key, PURPOSE_BATCH, s.header_bytes, s.signature)
        prev = header_hash(s.header_bytes)


async def test_cutting_at_ingest_is_bounded_and_rolls_back_with_the_ingest(city: Side) -> None:
    def cut(conn: Connection, now_ms: int) -> int:
        return cut_full_batches_txn(conn, KEY, 1, BIG, now_ms)

    city.store.cut = cut
    n = CUT_AT_INGEST_MAX + 5
    result = await city.store.ingest(valid_records(CITY_A, n, seed=3), NOW_MS)
    assert result.batches_cut == CUT_AT_INGEST_MAX  # the rest is left for later
    assert (await city.store.meta()).batched_seq == CUT_AT_INGEST_MAX
    before = await snapshot(city.db)

    def failing(conn: Connection, now_ms: int) -> int:
        cut_full_batches_txn(conn, KEY, 1, BIG, now_ms)
        raise RuntimeError("disk full (test)")

    city.store.cut = failing
    with pytest.raises(RuntimeError):
        await city.store.ingest(valid_records(CITY_A, n + 3, seed=4)[n:], NOW_MS)
    assert await snapshot(city.db) == before  # neither the records nor a batch
    assert (await city.store.meta()).last_seq == n


async def test_cut_batch_respects_the_byte_limit_with_multibyte_text(city: Side) -> None:
    # Long names in Chinese: three bytes per character on the wire.
    long_name = {"employer": 100, "person": 50}
    recs = []
    for rec in valid_records(CITY_A, 200, seed=10):
        if rec.record_type in long_name:
            name = ("杭州市西湖区恒达物流科技服务有限公司" * 6)[: long_name[rec.record_type]]
            recs.append(validate_record({"type": rec.record_type, **rec.payload, "name": name}))
    assert len(recs) >= 20
    await city.store.ingest(recs, NOW_MS)
    limit = 4096
    await cut_all(city, max_changes=1000, max_bytes=limit)
    signed = await local_batches(city)
    assert len(signed) > 1
    assert sum(BatchHeader.from_bytes(s.header_bytes).count for s in signed) == len(recs)
    assert max(s.size for s in signed) <= limit


async def test_next_transfer_is_bounded_and_oldest_first(city: Side) -> None:
    await city.store.ingest(valid_records(CITY_A, 30, seed=11), NOW_MS)
    await cut_all(city, max_changes=5)
    pending = await city.sync.next_transfer(4, BIG)
    assert [(p.first_seq, p.last_seq) for p in pending] == [(1, 5), (6, 10), (11, 15), (16, 20)]
    one_and_a_half = pending[0].signed.size + pending[1].signed.size // 2
    assert len(await city.sync.next_transfer(4, one_and_a_half)) == 1
    # A single batch larger than the byte budget is still sent alone, never starved.
    assert len(await city.sync.next_transfer(4, 1)) == 1


# -- acknowledgements and quarantine ---------------------------------------------------------------


async def test_apply_acks_acknowledges_and_requeues(city: Side) -> None:
    await city.store.ingest(valid_records(CITY_A, 30, seed=12), NOW_MS)
    await cut_all(city, max_changes=10)
    epoch = await city.epoch()
    assert await city.sync.apply_acks([Watermark(CITY_A, epoch, 20)]) == (2, 0)
    assert [p.first_seq for p in await city.sync.next_transfer(10, BIG)] == [21]
    # Acknowledging again changes nothing; another epoch's watermark touches nothing.
    assert await city.sync.apply_acks([Watermark(CITY_A, epoch, 20)]) == (0, 0)
    assert await city.sync.apply_acks([Watermark(CITY_A, "other", 0)]) == (0, 0)
    # The parent forgot batch 2 (restored from a backup): it is queued again.
    assert await city.sync.apply_acks([Watermark(CITY_A, epoch, 10)]) == (0, 1)
    assert [p.first_seq for p in await city.sync.next_transfer(10, BIG)] == [11, 21]
    assert await city.sync.apply_acks([Watermark(CITY_A, epoch, 30)]) == (2, 0)
    assert await city.sync.next_transfer(10, BIG) == []


async def test_quarantine_holds_back_later_batches_of_the_origin_only(city: Side) -> None:
    await city.store.ingest(valid_records(CITY_A, 30, seed=13), NOW_MS)
    await cut_all(city, max_changes=10)
    pending = await city.sync.next_transfer(10, BIG)
    await city.sync.quarantine(pending[1].id, Code.INVALID_RECORD.value, "seq 12: bad gender")
    stored = {r.id: r for r in await rows(city.db, batches)}
    poisoned = stored[pending[1].id]
    assert (poisoned.quarantined, poisoned.quarantine_code) == (True, "invalid_record")
    assert poisoned.quarantine_reason == "seq 12: bad gender"
    assert (await city.store.status()).quarantined == 1
    # The batch before the poisoned one can still be delivered; the poisoned one and those after
    # it wait for an operator (sending them would only make gaps at the parent).
    assert [p.first_seq for p in await city.sync.next_transfer(10, BIG)] == [1]


async def test_link_state_round_trip(city: Side) -> None:
    assert await city.sync.load_link(PROVINCE) == LinkState(PROVINCE, "live", 0, 0, 0, "", 0)
    state = LinkState(PROVINCE, "backing_off", 3, NOW_MS + 4000, NOW_MS - 1, "refused", NOW_MS)
    await city.sync.save_link(state)
    assert await city.sync.load_link(PROVINCE) == state
    state = dataclasses.replace(state, mode="live", failures=0, backoff_until_ms=0)
    await city.sync.save_link(state)
    assert await city.sync.load_link(PROVINCE) == state
    assert len(await rows(city.db, links)) == 1


# -- applying batches at the parent ----------------------------------------------------------------


async def city_batches(city: Side, n: int, per_batch: int, seed: int = 20) -> list[SignedBatch]:
    await city.store.ingest(valid_records(CITY_A, n, seed=seed), NOW_MS)
    await cut_all(city, max_changes=per_batch)
    return await local_batches(city)


async def test_apply_batch_is_idempotent(source: Side, province: Side) -> None:
    b1, b2 = await city_batches(source, 20, 10)
    res = await province.sync.apply_batch(verified(b1, KEY), NOW_MS, keep_for_relay=True)
    assert res.status is BatchStatus.APPLIED
    assert (res.first_seq, res.last_seq) == (1, 10)
    epoch = await source.epoch()
    (wm,) = await rows(province.db, watermarks)
    assert (wm.origin, wm.epoch, wm.seq, wm.last_hash) == (
        CITY_A,
        epoch,
        10,
        header_hash(b1.header_bytes),
    )
    (stored,) = await rows(province.db, batches)
    assert (stored.source, stored.acked) == ("relay", False)
    assert (bytes(stored.header), bytes(stored.signature), bytes(stored.body)) == (
        b1.header_bytes,
        b1.signature,
        b1.body,
    )
    held = await rows(province.db, records)
    assert len(held) == 10 and {r.owner for r in held} == {CITY_A}
    city_rows = {r.key: r for r in await rows(source.db, records)}
    for row in held:
        assert row.hash == city_rows[row.key].hash

    before = await snapshot(province.db)
    again = await province.sync.apply_batch(verified(b1, KEY), NOW_MS + 5000, keep_for_relay=True)
    assert again.status is BatchStatus.DUPLICATE
    assert await snapshot(province.db) == before

    res = await province.sync.apply_batch(verified(b2, KEY), NOW_MS, keep_for_relay=True)
    assert res.status is BatchStatus.APPLIED
    assert await province.sync.watermarks_for([CITY_A]) == [Watermark(CITY_A, epoch, 20)]
    assert (await row_counts(province.db))["records"] == 20


async def test_the_top_of_the_tree_keeps_no_relay_queue(source: Side, province: Side) -> None:
    (b1,) = await city_batches(source, 5, 10)
    await province.sync.apply_batch(verified(b1, KEY), NOW_MS, keep_for_relay=False)
    (stored,) = await rows(province.db, batches)
    assert stored.acked is True
    assert await province.sync.next_transfer(10, BIG) == []


async def test_a_gap_is_answered_with_the_needed_seq(source: Side, province: Side) -> None:
    b1, b2, b3 = await city_batches(source, 30, 10)
    before = await snapshot(province.db)
    res = await province.sync.apply_batch(verified(b2, KEY), NOW_MS, keep_for_relay=True)
    assert (res.status, res.need_seq, res.code) == (BatchStatus.GAP, 1, Code.BAD_RANGE.value)
    assert await snapshot(province.db) == before
    await province.sync.apply_batch(verified(b1, KEY), NOW_MS, keep_for_relay=True)
    res = await province.sync.apply_batch(verified(b3, KEY), NOW_MS, keep_for_relay=True)
    assert (res.status, res.need_seq) == (BatchStatus.GAP, 11)
    assert (await row_counts(province.db))["records"] == 10


async def test_overlap_and_broken_chain_are_rejected(source: Side, province: Side) -> None:
    b1, _ = await city_batches(source, 20, 10)
    await province.sync.apply_batch(verified(b1, KEY), NOW_MS, keep_for_relay=True)
    epoch = await source.epoch()
    recs = valid_records(CITY_A, 30, seed=20)
    before = await snapshot(province.db)

    overlap = make_batch(
        KEY, CITY_A, epoch, changes_for(recs[5:15], 6), prev=header_hash(b1.header_bytes)
    )
    res = await province.sync.apply_batch(verified(overlap, KEY), NOW_MS, keep_for_relay=True)
    assert (res.status, res.code) == (BatchStatus.REJECTED, Code.BAD_RANGE.value)

    broken = make_batch(KEY, CITY_A, epoch, changes_for(recs[10:20], 11), prev=b"\x09" * 32)
    res = await province.sync.apply_batch(verified(broken, KEY), NOW_MS, keep_for_relay=True)
    assert (res.status, res.code) == (BatchStatus.REJECTED, Code.CHAIN_BROKEN.value)
    assert await snapshot(province.db) == before


async def test_an_older_version_never_overwrites_a_newer_one(source: Side, province: Side) -> None:
    rec = valid_records(CITY_A, 1, seed=21)[0]
    v2 = ValidRecord(rec.record_type, rec.key, {**rec.payload, "name": "第二版名称"}, False)
    await source.store.ingest([rec], NOW_MS)
    await source.store.ingest([v2], NOW_MS)
    for signed in await city_batches(source, 0, 10):
        await province.sync.apply_batch(verified(signed, KEY), NOW_MS, keep_for_relay=True)
    newest = await record_row(province.db, CITY_A, rec.key)
    assert (newest.version, json.loads(newest.payload)["name"]) == (2, "第二版名称")

    # The same city re-installed (a new epoch, versions from 1 again) replaces the row whatever
    # the versions (ADR 0011: otherwise its new content would be dropped silently); a late batch
    # of a superseded epoch never replaces a row of a newer one.
    heads: dict[str, bytes] = {}
    for at, epoch, version, name in (
        (1, "epoch-2", 1, "旧名称"),
        (2, "epoch-3", 2, "另一个第二版"),
    ):
        change = changes_for([rec], version=version)[0]
        change = change._replace(payload={**rec.payload, "name": name})
        signed = make_batch(KEY, CITY_A, epoch, [change])
        heads[epoch] = header_hash(signed.header_bytes)
        res = await province.sync.apply_batch(
            verified(signed, KEY), NOW_MS + at * 1000, keep_for_relay=True
        )
        assert res.status is BatchStatus.APPLIED
        row = await record_row(province.db, CITY_A, rec.key)
        assert (row.version, json.loads(row.payload)["name"], row.epoch) == (version, name, epoch)
    late = changes_for([rec], first_seq=2, version=5)[0]
    late = late._replace(payload={**rec.payload, "name": "迟到"})
    signed = make_batch(KEY, CITY_A, "epoch-2", [late], prev=heads["epoch-2"])
    res = await province.sync.apply_batch(verified(signed, KEY), NOW_MS + 3000, keep_for_relay=True)
    assert res.status is BatchStatus.APPLIED
    row = await record_row(province.db, CITY_A, rec.key)
    assert (json.loads(row.payload)["name"], row.epoch) == ("另一个第二版", "epoch-3")
    assert {w.epoch for w in await province.sync.watermarks_for([CITY_A])} >= {"epoch-2"}


async def test_a_failure_inside_apply_leaves_nothing_written(source: Side, province: Side) -> None:
    b1, b2 = await city_batches(source, 20, 10)
    await province.sync.apply_batch(verified(b1, KEY), NOW_MS, keep_for_relay=True)
    vb2 = verified(b2, KEY)

    def squat(conn: Connection) -> None:
        """A row that collides with batch 2's (origin, epoch, first_seq), so its insert fails
        after its records have been upserted in the same transaction."""
        h = vb2.header
        conn.execute(
            batches.insert().values(
                origin=h.origin,
                epoch=h.epoch,
                first_seq=h.first_seq,
                last_seq=h.last_seq,
                header=b"x",
                signature=b"x",
                body=b"x",
                header_hash=b"\x00" * 32,
                size=3,
                created_ms=0,
                stored_ms=0,
                source="relay",
                acked=True,
                quarantined=False,
                quarantine_code="",
                quarantine_reason="",
            )
        )

    await province.db.write(squat)
    before = await snapshot(province.db)
    with pytest.raises(IntegrityError):
        await province.sync.apply_batch(vb2, NOW_MS, keep_for_relay=True)
    assert await snapshot(province.db) == before
    assert (await province.sync.watermarks_for([CITY_A]))[0].seq == 10

    def unsquat(conn: Connection) -> None:
        conn.execute(delete(batches).where(batches.c.header == b"x"))

    await province.db.write(unsquat)
    res = await province.sync.apply_batch(vb2, NOW_MS, keep_for_relay=True)
    assert res.status is BatchStatus.APPLIED
    assert (await row_counts(province.db))["records"] == 20


async def test_stored_batches_pages_in_id_order(city: Side) -> None:
    await city_batches(city, 25, 5)
    first = await city.sync.stored_batches(0, 2)
    rest = await city.sync.stored_batches(first[-1][0], 100)
    ids = [r[0] for r in first + rest]
    assert ids == sorted(ids) and len(ids) == 5
    assert {r[1] for r in first + rest} == {CITY_A}


async def test_link_errors_are_kept_with_the_state_and_trimmed(city: Side) -> None:
    state = LinkState(PROVINCE, "backing_off", 1, 0, 0, "", 0)
    for i in range(1, 106):
        await city.sync.save_link(state, (NOW_MS + i, f"error {i}"))
    kept = await city.sync.recent_link_errors(PROVINCE, 500)
    assert len(kept) == 100  # the last 100, oldest first
    assert kept[0] == (NOW_MS + 6, "error 6") and kept[-1] == (NOW_MS + 105, "error 105")
    assert await city.sync.recent_link_errors(PROVINCE, 2) == kept[-2:]
    assert await city.sync.recent_link_errors("999999", 5) == []


async def test_one_push_writes_what_its_batches_write_one_by_one(
    province: Side, database_for: Callable[[str], str]
) -> None:
    """`PushApply` follows each (origin, epoch)'s watermark and the epoch rule's standing within
    the push, and writes its bookkeeping at the end: the outcome equals applying the same
    batches one transaction each (two epochs of one origin interleaved, a duplicate, a gap, a
    broken chain)."""
    rec, other = valid_records(CITY_A, 2, seed=22)

    def change(r: ValidRecord, seq: int, version: int, name: str) -> Any:
        c = changes_for([r], first_seq=seq, version=version)[0]
        return c._replace(payload={**r.payload, "name": name})

    e1_1 = make_batch(KEY, CITY_A, "epoch-1", [change(rec, 1, 1, "甲")])
    e2_1 = make_batch(KEY, CITY_A, "epoch-2", [change(rec, 1, 5, "乙")])
    e1_2 = make_batch(
        KEY, CITY_A, "epoch-1", [change(rec, 2, 2, "丙")], prev=header_hash(e1_1.header_bytes)
    )
    e1_gap = make_batch(
        KEY, CITY_A, "epoch-1", [change(rec, 4, 4, "丁")], prev=header_hash(e1_2.header_bytes)
    )
    e2_2 = make_batch(
        KEY, CITY_A, "epoch-2", [change(other, 2, 1, "戊")], prev=header_hash(e2_1.header_bytes)
    )
    e1_broken = make_batch(KEY, CITY_A, "epoch-1", [change(rec, 3, 3, "己")], prev=b"\x07" * 32)
    push = [verified(s, KEY) for s in (e1_1, e2_1, e1_2, e1_1, e1_gap, e2_2, e1_broken)]

    one_by_one = await open_side(database_for("P-ONE-BY-ONE"), PROVINCE)
    try:
        each = [await one_by_one.sync.apply_batch(vb, NOW_MS, keep_for_relay=True) for vb in push]
        together, marks = await province.sync.apply_push(push, NOW_MS, True, [CITY_A])
        assert [r.status for r in together] == [
            BatchStatus.APPLIED,
            BatchStatus.APPLIED,
            BatchStatus.APPLIED,
            BatchStatus.DUPLICATE,
            BatchStatus.GAP,
            BatchStatus.APPLIED,
            BatchStatus.REJECTED,
        ]
        assert together == each
        assert set(marks) == {Watermark(CITY_A, "epoch-1", 2), Watermark(CITY_A, "epoch-2", 2)}
        for table in (records, batches, watermarks, apply_log):
            assert await rows(province.db, table) == await rows(one_by_one.db, table), table.name
        # The epoch rule within the push: epoch-2 arrived after epoch-1 was known, and a later
        # batch of epoch-1 is judged against it (seen in the same millisecond: not superseded).
        row = await record_row(province.db, CITY_A, rec.key)
        assert (json.loads(row.payload)["name"], row.epoch, row.version) == ("丙", "epoch-1", 2)
    finally:
        await asyncio.to_thread(one_by_one.db.close)
