"""The checkers (reliability.md C4) pass on a healthy network and catch each planted bug: a
dropped batch, a double apply, a double-applied delta, an accepted forgery, a changed copy, a
lost acknowledged write. Bugs are planted by tampering with a node's database or the history,
never by mocking our components."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from nacl.signing import SigningKey
from sqlalchemy import Connection, delete, func, select, update

from node.datagen import generate_records, generate_updates
from node.db import Database
from node.schema import apply_log, batches, records
from node.store import payload_json, read_meta_txn
from security.keys import NodeKey
from security.signing import sign
from sync.wire import PURPOSE_BATCH, BatchHeader, Change, SignedBatch, encode_body, sha256
from tests.support.checkers import CheckReport
from tests.support.final import final_check_offline
from tests.support.history import History, write_through
from tests.support.network import TestNet, make_network

T = TypeVar("T")


@dataclass
class Tamperable:
    """A converged, stopped network; each test judges fresh copies of its databases."""

    net: TestNet
    history: History
    urls: dict[str, str]

    def db(self, node_id: str) -> Database:
        return Database(self.urls[node_id])

    async def tamper(self, node_id: str, body: Callable[[Connection], T]) -> T:
        db = self.db(node_id)
        try:
            return await db.write(body)
        finally:
            db.close()

    async def check(self) -> CheckReport:
        return await final_check_offline(self.net.configs, self.history, self.urls)


@pytest.fixture(scope="module")
def converged(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestNet, History]:
    root = tmp_path_factory.mktemp("checkers")
    net = make_network(root, cities_per_province=2, overrides={"debounce_ms": 5})
    history = History()

    async def build() -> None:
        await net.init_all()
        await net.start_all()
        try:
            for i, city in enumerate(net.city_ids()):
                recs = generate_records(city, 120, seed=i)
                node = net.nodes[city]
                await write_through(history, node, "w0", recs[:60])
                await write_through(history, node, "w0", recs[60:])
                await write_through(history, node, "w0", generate_updates(recs, 10, seed=i))
            await net.wait_converged()
        finally:
            await net.stop_all()

    asyncio.run(build())
    return net, history


@pytest.fixture
def healthy(converged: tuple[TestNet, History], tmp_path: Path) -> Tamperable:
    net, history = converged
    urls = {}
    for node_id, cfg in net.configs.items():
        src = Path(cfg.node.database.removeprefix("sqlite:///"))
        dst = tmp_path / f"{node_id}.db"
        for f in src.parent.glob(src.name + "*"):
            shutil.copy2(f, tmp_path / f.name.replace(src.name, dst.name))
        urls[node_id] = f"sqlite:///{dst}"
    return Tamperable(net, history.copy(), urls)


def problems(report: CheckReport, name: str) -> str:
    return "\n".join(report.by_name(name).problems)


async def test_checkers_green_on_a_healthy_network(healthy: Tamperable) -> None:
    report = await healthy.check()
    report.assert_green()
    assert report.by_name("set").stats["accepted"] == 2 * 130
    assert report.by_name("convergence").stats["compared"] == 4
    assert report.by_name("scrub").stats["batches"] > 0


async def test_dropped_batch_is_lost_and_a_gap(healthy: Tamperable) -> None:
    net = healthy.net
    city = net.city_ids()[0]

    def drop(conn: Connection) -> int:
        first = conn.execute(
            select(func.min(batches.c.id)).where(batches.c.origin == city)
        ).scalar_one()
        return conn.execute(delete(batches).where(batches.c.id == first)).rowcount

    assert await healthy.tamper(net.ministry_id, drop) == 1
    report = await healthy.check()
    assert f"{net.ministry_id}: lost" in problems(report, "set")
    assert "gap: seqs 1.." in problems(report, "contiguity")
    assert report.by_name("convergence").ok  # the records are still there: only the batch went


async def test_double_apply_is_caught(healthy: Tamperable) -> None:
    net = healthy.net
    city = net.city_ids()[1]
    province = net.province_ids()[0]

    def replay_apply(conn: Connection) -> None:
        row = (
            conn.execute(
                select(apply_log)
                .where(apply_log.c.origin == city)
                .order_by(apply_log.c.id)
                .limit(1)
            )
            .mappings()
            .one()
        )
        values = {k: v for k, v in row.items() if k != "id"}
        conn.execute(apply_log.insert().values(**values))

    await healthy.tamper(province, replay_apply)
    report = await healthy.check()
    assert "applied more than once" in problems(report, "exactly-once")
    assert "went back" in problems(report, "contiguity")


async def test_double_applied_delta_is_caught(healthy: Tamperable) -> None:
    net = healthy.net
    city = net.city_ids()[0]

    def bump(conn: Connection) -> None:
        key = conn.execute(
            select(records.c.key).where(records.c.owner == city).limit(1)
        ).scalar_one()
        conn.execute(
            update(records)
            .where(records.c.owner == city, records.c.key == key)
            .values(version=records.c.version + 1)
        )

    await healthy.tamper(net.ministry_id, bump)
    report = await healthy.check()
    assert "replaying" in problems(report, "exactly-once")
    assert not report.by_name("convergence").ok


async def test_accepted_forgery_is_caught(healthy: Tamperable) -> None:
    net = healthy.net
    city = net.city_ids()[0]
    db = healthy.db(city)
    try:
        meta = await db.read(read_meta_txn)
    finally:
        db.close()
    forger = NodeKey(SigningKey.generate())
    fake = generate_records(city, 1, seed=999)[0]
    from node.records import validate_record

    rec = validate_record(fake)
    change = Change(meta.last_seq + 1, rec.record_type, rec.key, 1, False, rec.payload, "builtin-1")
    body = encode_body([change])
    header = BatchHeader(
        origin=city,
        epoch=meta.epoch,
        first_seq=change.seq,
        last_seq=change.seq,
        count=1,
        standards="builtin-1",
        created_ms=0,
        digest=sha256(body),
        prev=meta.chain_head,
        kid=forger.kid,
    )
    hb = header.to_bytes()
    signed = SignedBatch(hb, sign(forger, PURPOSE_BATCH, hb), body)

    def accept_forgery(conn: Connection) -> None:
        from sync.store import _store_batch
        from sync.wire import header_hash

        _store_batch(conn, header, signed, header_hash(hb), source="relay", acked=True, now_ms=0)
        conn.execute(
            records.insert().values(
                record_type=rec.record_type,
                owner=city,
                key=rec.key,
                version=1,
                deleted=False,
                payload=payload_json(rec.payload),
                standards="builtin-1",
                hash="0" * 64,
                epoch=meta.epoch,
                seq=change.seq,
                updated_ms=0,
            )
        )

    await healthy.tamper(net.ministry_id, accept_forgery)
    report = await healthy.check()
    assert "unexpected" in problems(report, "set")
    assert "is not a key of node" in problems(report, "scrub")
    assert not report.by_name("convergence").ok


async def test_changed_copy_breaks_convergence(healthy: Tamperable) -> None:
    net = healthy.net
    city = net.city_ids()[1]
    province = net.province_ids()[0]

    def change_payload(conn: Connection) -> None:
        row = conn.execute(select(records).where(records.c.owner == city).limit(1)).mappings().one()
        payload = json.loads(row["payload"])
        conn.execute(
            update(records)
            .where(records.c.owner == city, records.c.key == row["key"])
            .values(hash="f" * 64, payload=payload_json({**payload, "name": "x"}))
        )

    await healthy.tamper(province, change_payload)
    report = await healthy.check()
    assert f"{province}: copy of {city} differs" in problems(report, "convergence")


async def test_acknowledged_write_missing_everywhere_is_lost(
    healthy: Tamperable,
) -> None:
    net, history = healthy.net, healthy.history
    city = net.city_ids()[0]
    # Tamper with the history: it says the city acknowledged a record no node ever saw.
    before = history.attempted()
    op = history.invoke("ghost", city, generate_records(city, 3, seed=4242)[-1:])
    assert not set(op.records) & before
    history.ok(op, [10_000])
    report = await healthy.check()
    lost = problems(report, "set")
    assert f"{city}: lost 1 accepted records of {city}" in lost
    assert f"{net.ministry_id}: lost 1" in lost
