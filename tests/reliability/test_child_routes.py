"""The new node-to-node routes (anti-entropy summary and repair, restore) refuse what the push
refuses: unknown senders, foreign signatures, origins outside the sender's subtree, replays,
forged batches — with a precise code, an audit entry, and nothing written; and, like the push,
they hold each child to its request rate (429 rate_limited with Retry-After)."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest
from nacl.signing import SigningKey
from sqlalchemy import Connection, func, select

from node.clock import SystemClock
from node.datagen import generate_records
from node.db import Database
from node.schema import apply_log
from security.keys import NodeKey, load_signing_key
from security.signing import sign
from sync.ae_wire import (
    PURPOSE_AE_REPAIR,
    PURPOSE_AE_SUMMARY,
    PURPOSE_RESTORE,
    REPAIR_PATH,
    RESTORE_PATH,
    SUMMARY_PATH,
    RangeSummaries,
    RangeSummary,
    RestoreRequest,
)
from sync.errors import PeerRejected
from sync.restore import restore_from_parent
from sync.transport import HttpTransport
from sync.wire import Push, Sealed, SignedBatch, parse_error_body
from tests.support.history import History, write_through
from tests.support.network import TestNet, make_network
from tests.support.peer import peer_transport, signing_session


def _applies(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(apply_log)).scalar_one())


async def test_summary_and_repair_refusals(tmp_path: Path) -> None:
    net = make_network(tmp_path, cities_per_province=2, overrides={"anti_entropy_interval_s": 3600})
    await net.init_all()
    await net.start_all()
    a, b = net.city_ids()
    province = net.province_ids()[0]
    node = net.nodes[province]
    base = net.configs[province].node.url
    key_a = load_signing_key(net.configs[a].node.key_file)
    stranger = NodeKey(SigningKey.generate())
    # Each caller signs its HTTP requests with the key it uses for the message inside.
    transport = peer_transport(net.configs[a], key_a)
    as_a = peer_transport(net.configs[a], stranger, as_node=a)
    unknown = peer_transport(net.configs[a], stranger, as_node="999999")
    try:
        await write_through(History(), net.nodes[b], "w", generate_records(b, 20))
        await net.wait_converged()
        epoch_b = (await net.nodes[b].store.meta()).epoch

        def summary(sender: str, key: NodeKey, origin: str, nonce: bytes | None = None) -> bytes:
            msg = RangeSummaries(
                sender,
                province,
                node.clock.time_ms(),
                nonce or os.urandom(16),
                (RangeSummary(origin, epoch_b, 20, 0, b"\x00" * 32),),
            )
            env = msg.to_bytes()
            return Sealed(env, sign(key, PURPOSE_AE_SUMMARY, env)).to_bytes()

        async def refused(
            body: bytes, path: str = SUMMARY_PATH, via: HttpTransport = transport
        ) -> PeerRejected:
            with pytest.raises(PeerRejected) as info:
                await via.post(province, base + path, body)
            return info.value

        # A asks about B's range: not its subtree.
        assert (await refused(summary(a, key_a, b))).code == "not_authorised"
        # Signed by someone else's key, or by an unknown node.
        assert (await refused(summary(a, stranger, a), via=as_a)).code == "bad_signature"
        assert (await refused(summary("999999", stranger, a), via=unknown)).code == "unknown_sender"
        # The same nonce twice: the second is a replay.
        nonce = os.urandom(16)
        await transport.post(province, base + SUMMARY_PATH, summary(a, key_a, a, nonce))
        assert (await refused(summary(a, key_a, a, nonce))).code == "replay"

        # A repair carrying B's batch re-signed by A's key is a forgery: refused, nothing applied.
        applies = await node.db.read(_applies)
        real = await net.nodes[b].sync_store.stored_batches(0, 1)
        forged = SignedBatch(
            real[0][2].header_bytes, sign(key_a, "batch", real[0][2].header_bytes), real[0][2].body
        )
        push = Push(a, province, node.clock.time_ms(), os.urandom(16), (forged,))
        env = push.to_bytes()
        exc = await refused(
            Sealed(env, sign(key_a, PURPOSE_AE_REPAIR, env)).to_bytes(), REPAIR_PATH
        )
        assert exc.code == "not_authorised" and exc.batch_index == 0
        assert await node.db.read(_applies) == applies
        assert node.security is not None
        codes = {e.code for e in await node.security.audit.entries(limit=50)}
        assert {"not_authorised", "bad_signature", "unknown_sender", "replay"} <= codes
    finally:
        for t in (transport, as_a, unknown):
            await t.close()
        await net.stop_all()


def _limited(net: TestNet, node_id: str, per_s: float, burst: int, **more: int) -> None:
    cfg = net.configs[node_id]
    limits = cfg.limits.model_copy(
        update={"peer_requests_per_s": per_s, "peer_burst": burst, **more}
    )
    net.configs[node_id] = cfg.model_copy(update={"limits": limits})


async def test_anti_entropy_and_restore_limit_each_childs_request_rate(tmp_path: Path) -> None:
    """Like the push: beyond `peer_burst` requests a child gets 429 rate_limited with
    Retry-After, before any work; its sibling's budget is its own; refusals are counted."""
    net = make_network(tmp_path, cities_per_province=2, overrides={"anti_entropy_interval_s": 3600})
    province = net.province_ids()[0]
    _limited(net, province, per_s=0.01, burst=3)
    await net.init_all()
    await net.start(province)
    a, b = net.city_ids()
    base = net.configs[province].node.url
    keys = {c: load_signing_key(net.configs[c].node.key_file) for c in (a, b)}
    clock = net.nodes[province].clock

    def summary(sender: str) -> bytes:
        msg = RangeSummaries(sender, province, clock.time_ms(), os.urandom(16), ())
        env = msg.to_bytes()
        return Sealed(env, sign(keys[sender], PURPOSE_AE_SUMMARY, env)).to_bytes()

    def repair(sender: str) -> bytes:
        env = Push(sender, province, clock.time_ms(), os.urandom(16), ()).to_bytes()
        return Sealed(env, sign(keys[sender], PURPOSE_AE_REPAIR, env)).to_bytes()

    def restore(sender: str) -> bytes:
        env = RestoreRequest(sender, province, clock.time_ms(), os.urandom(16), "", 0).to_bytes()
        return Sealed(env, sign(keys[sender], PURPOSE_RESTORE, env)).to_bytes()

    async def statuses(session: aiohttp.ClientSession, path: str, bodies: list[bytes]) -> list[int]:
        out = []
        for body in bodies:
            async with session.post(base + path, data=body) as r:
                out.append(r.status)
                if r.status == 429:
                    assert parse_error_body(await r.read())[0] == "rate_limited"
                    assert int(r.headers["Retry-After"]) >= 1
        return out

    try:
        async with (
            signing_session(a, keys[a], province) as sa,
            signing_session(b, keys[b], province) as sb,
        ):
            # Summary and repair share one budget (the anti-entropy routes).
            assert await statuses(sa, SUMMARY_PATH, [summary(a), summary(a)]) == [200, 200]
            assert await statuses(sa, REPAIR_PATH, [repair(a), repair(a)]) == [200, 429]
            assert await statuses(sa, SUMMARY_PATH, [summary(a)]) == [429]
            assert await statuses(sb, SUMMARY_PATH, [summary(b)]) == [200]  # B's own budget
            # Restore has its own budget.
            assert await statuses(sa, RESTORE_PATH, [restore(a) for _ in range(4)]) == [
                200,
                200,
                200,
                429,
            ]
        rejected = net.nodes[province].registry.get_sample_value(
            "lsnet_sync_rejected_total", {"reason": "rate_limited"}
        )
        assert rejected == 3
        events = net.nodes[province].security
        assert events is not None
        codes = {e.code for e in await events.audit.entries(limit=50)}
        assert "rate_limited" not in codes  # load, not an attack: not in the audit log
    finally:
        await net.stop_all()


async def test_restore_waits_when_the_parent_limits_it(tmp_path: Path) -> None:
    """A city restoring page by page faster than its province allows is answered 429, waits
    and asks for the same page again; the restore completes."""
    net = make_network(tmp_path, cities_per_province=1, overrides={"debounce_ms": 5})
    province, city = net.province_ids()[0], net.city_ids()[0]
    _limited(net, province, per_s=4.0, burst=1, max_batches_per_transfer=1)
    await net.init_all()
    await net.start_all()
    history = History()
    try:
        recs = generate_records(city, 30)
        for i in range(0, 30, 10):  # three batches, so three pages
            await write_through(history, net.nodes[city], "w", recs[i : i + 10])
            await net.wait_converged()
        cfg = net.configs[city]
        await net.stop(city)
        db_file = Path(cfg.node.database.removeprefix("sqlite:///"))
        for f in db_file.parent.glob(db_file.name + "*"):
            f.unlink()
        db = Database(cfg.node.database)
        db.migrate()
        key = load_signing_key(cfg.node.key_file)
        transport = peer_transport(cfg, key)
        try:
            result = await restore_from_parent(
                config=cfg, key=key, db=db, transport=transport, clock=SystemClock()
            )
        finally:
            await transport.close()
            db.close()
        assert result.batches >= 3 and result.last_seq == result.parent_held
        limited = net.nodes[province].registry.get_sample_value(
            "lsnet_sync_rejected_total", {"reason": "rate_limited"}
        )
        assert limited is not None and limited >= 1
    finally:
        await net.stop_all()
