"""Restore from parent (`lsnet node recover --from-parent`) and a re-installed node with a new
epoch (DESIGN §2, §4 "Recovery")."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import Connection, func, select, update

from node.cli import main
from node.datagen import generate_records
from node.db import Database
from node.schema import apply_log, batches, records
from security.keys import NodeKey, load_signing_key
from security.signing import sign
from sync.ae_wire import PURPOSE_RESTORE, RESTORE_PATH, RestoreRequest
from sync.errors import PeerRejected
from sync.restore import RestoreError, restore_from_parent
from sync.wire import Sealed
from tests.support.final import final_check
from tests.support.history import History, write_through
from tests.support.network import TestNet, make_network
from tests.support.peer import peer_transport

FAST: dict[str, object] = {
    "debounce_ms": 5,
    "retry_interval_s": 0.3,
    "anti_entropy_interval_s": 1.0,
}


def _wipe(net: TestNet, node_id: str) -> Path:
    db_file = Path(net.configs[node_id].node.database.removeprefix("sqlite:///"))
    for f in db_file.parent.glob(db_file.name + "*"):
        f.unlink()
    return db_file


def _count_records(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(records)).scalar_one())


def _count_pushes(conn: Connection, origin: str) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(apply_log)
            .where(apply_log.c.origin == origin, apply_log.c.kind == "push")
        ).scalar_one()
    )


async def _written_in_batches(net: TestNet, history: History, city: str, n: int) -> None:
    recs = generate_records(city, n, seed=21)
    step = n // 4
    for i in range(0, n, step):
        await write_through(history, net.nodes[city], "w", recs[i : i + step])
        await net.wait_converged()


async def test_city_that_lost_its_database_is_rebuilt_from_its_province(tmp_path: Path) -> None:
    net = make_network(tmp_path, cities_per_province=2, overrides=FAST)
    await net.init_all()
    await net.start_all()
    history = History()
    city, province = net.city_ids()[0], net.province_ids()[0]
    try:
        await _written_in_batches(net, history, city, 400)
        await write_through(
            history, net.nodes[net.city_ids()[1]], "w", generate_records(net.city_ids()[1], 50)
        )
        await net.wait_converged()
        before_meta = await net.nodes[city].store.meta()
        before_digest = (await net.digests(city))[city]
        pushes_before = await net.nodes[province].db.read(_count_pushes, city)
        assert pushes_before >= 4

        await net.stop(city)
        _wipe(net, city)
        config_path = net.layout.by_id(city).config_path
        # The real command, in a thread (it runs its own event loop) while the province serves.
        result = await asyncio.to_thread(
            CliRunner().invoke,
            main,
            ["node", "recover", "--from-parent", "--config", str(config_path)],
        )
        assert result.exit_code == 0, result.output
        assert f"restored {before_meta.last_seq} changes" in result.output
        assert before_meta.epoch in result.output

        node = await net.start(city)
        after_meta = await node.store.meta()
        assert (after_meta.epoch, after_meta.last_seq, after_meta.chain_head) == (
            before_meta.epoch,
            before_meta.last_seq,
            before_meta.chain_head,
        )
        assert (await net.digests(city))[city] == before_digest
        # Nothing is re-sent: the restored batches are acknowledged.
        assert (await node.store.status()).backlog_batches == 0
        # Normal operation resumes at the next seq; the province accepts the new batch.
        more = generate_records(city, 430, seed=21)[400:]
        await write_through(history, node, "w2", more)
        await net.wait_converged()
        assert (await node.store.meta()).last_seq == before_meta.last_seq + 30
        assert await net.nodes[province].db.read(_count_pushes, city) == pushes_before + 1
        (await final_check(net, history)).assert_green()
    finally:
        await net.stop_all()


async def test_restore_refuses_a_batch_altered_at_the_parent(tmp_path: Path) -> None:
    net = make_network(tmp_path, cities_per_province=1, overrides=FAST)
    await net.init_all()
    await net.start_all()
    history = History()
    city, province = net.city_ids()[0], net.province_ids()[0]
    try:
        await _written_in_batches(net, history, city, 200)

        def alter(conn: Connection) -> None:
            first = conn.execute(
                select(func.max(batches.c.id)).where(batches.c.origin == city)
            ).scalar_one()
            body = conn.execute(select(batches.c.body).where(batches.c.id == first)).scalar_one()
            conn.execute(
                update(batches).where(batches.c.id == first).values(body=bytes(body[:-1]) + b"\x00")
            )

        await net.nodes[province].db.write(alter)
        cfg = net.configs[city]
        await net.stop(city)
        _wipe(net, city)
        db = Database(cfg.node.database)
        db.migrate()
        key = load_signing_key(cfg.node.key_file)
        transport = peer_transport(cfg, key)
        try:
            try:
                await restore_from_parent(
                    config=cfg, key=key, db=db, transport=transport, clock=net.nodes[province].clock
                )
                raise AssertionError("an altered batch was accepted")
            except RestoreError as exc:
                assert "altered" in str(exc)
            # A page is verified whole before it is written: nothing of it was written.
            held = await db.read(_count_records)
            assert held == 0
        finally:
            await transport.close()
            db.close()
    finally:
        await net.stop_all()


async def test_restore_serves_only_the_asking_child_and_checks_its_signature(
    tmp_path: Path,
) -> None:
    net = make_network(tmp_path, cities_per_province=2, overrides=FAST)
    await net.init_all()
    await net.start_all()
    history = History()
    a, b = net.city_ids()
    province = net.province_ids()[0]
    url = net.configs[a].parent.url + RESTORE_PATH  # type: ignore[union-attr]
    key_b = load_signing_key(net.configs[b].node.key_file)
    transport = peer_transport(net.configs[b], key_b)
    impostor = peer_transport(net.configs[b], key_b, as_node=a)  # B signing in A's name
    try:
        await write_through(history, net.nodes[a], "w", generate_records(a, 30))
        await write_through(history, net.nodes[b], "w", generate_records(b, 30))
        await net.wait_converged()
        clock = net.nodes[province].clock

        def request(sender: str, key: NodeKey) -> bytes:
            req = RestoreRequest(sender, province, clock.time_ms(), os.urandom(16), "", 0)
            env = req.to_bytes()
            return Sealed(env, sign(key, PURPOSE_RESTORE, env)).to_bytes()

        # B claims to be A: refused, nothing served, audited.
        try:
            await impostor.post(province, url, request(a, key_b))
            raise AssertionError("a request signed by another child's key was served")
        except PeerRejected as exc:
            assert exc.code == "bad_signature"
        events = await net.nodes[province].security.audit.entries()  # type: ignore[union-attr]
        assert any(e.code == "bad_signature" for e in events)
        # B asking for itself gets only B's batches (its epoch, its origin).
        answer = await transport.post(province, url, request(b, key_b))
        from sync.ae_wire import RestorePage
        from sync.wire import BatchHeader

        page = RestorePage.from_bytes(Sealed.from_bytes(answer).envelope, max_batches=1000)
        origins = {BatchHeader.from_bytes(s.header_bytes).origin for s in page.batches}
        assert origins == {b}
    finally:
        await transport.close()
        await impostor.close()
        await net.stop_all()


async def test_reinstalled_city_with_a_new_epoch_replaces_its_old_records(tmp_path: Path) -> None:
    """A city re-installed from scratch (new epoch, versions from 1 again) writes the same
    natural keys with new content: the province and the ministry take the new content; the old
    epoch's sequence numbers are not trusted for the new one."""
    net = make_network(tmp_path, cities_per_province=1, overrides=FAST)
    await net.init_all()
    await net.start_all()
    history = History()
    city, province = net.city_ids()[0], net.province_ids()[0]
    try:
        recs = generate_records(city, 60, seed=2)
        await write_through(history, net.nodes[city], "w", recs)
        await net.wait_converged()
        old_epoch = (await net.nodes[city].store.meta()).epoch
        await net.stop(city)
        _wipe(net, city)
        fresh = net.open(city)
        assert await fresh.init_database()
        await fresh.stop()
        node = await net.start(city)
        new_epoch = (await node.store.meta()).epoch
        assert new_epoch != old_epoch
        # Same natural keys, new content (an update of each), written as version 1 again.
        from node.datagen import generate_updates

        changed = generate_updates(recs, 20, seed=3)
        await write_through(history, node, "w", changed)
        await net.wait_converged()
        own = await node.db.read(
            lambda c: {(r.record_type, r.key): r.hash for r in c.execute(select(records))}
        )
        for holder in (province, net.ministry_id):
            marks = await net.nodes[holder].sync_store.watermarks_for([city])
            assert {(w.epoch, w.seq) for w in marks} == {(old_epoch, 60), (new_epoch, 20)}
            held = await net.nodes[holder].db.read(
                lambda c: {
                    (r.record_type, r.key): (r.hash, r.epoch)
                    for r in c.execute(select(records).where(records.c.owner == city))
                }
            )
            for ident, digest in own.items():
                assert held[ident] == (digest, new_epoch), f"{holder} kept the old epoch's {ident}"
            assert len(held) == 60  # records the new epoch did not rewrite stay as they were
    finally:
        await net.stop_all()


async def test_recover_refuses_clearly_without_a_traceback(tmp_path: Path) -> None:
    net = make_network(tmp_path, cities_per_province=1, overrides=FAST)
    await net.init_all()
    city = net.city_ids()[0]
    config_path = str(net.layout.by_id(city).config_path)
    args = ["node", "recover", "--from-parent", "--config", config_path]
    # Nobody runs: the parent cannot be reached.
    result = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert result.exit_code == 2 and "parent not reachable" in result.output, result.output
    # The database still holds data: refused before anything is fetched.
    node = net.open(city)
    await write_through(History(), node, "w", generate_records(city, 3))
    await node.stop()
    result = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert result.exit_code == 2 and "still holds data" in result.output, result.output
    assert "Traceback" not in result.output
    # The ministry has no parent.
    ministry_path = str(net.layout.by_id(net.ministry_id).config_path)
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["node", "recover", "--from-parent", "--config", ministry_path]
    )
    assert result.exit_code == 2 and "no parent" in result.output, result.output
