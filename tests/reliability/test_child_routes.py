"""The new node-to-node routes (anti-entropy summary and repair) refuse what the push refuses:
unknown senders, foreign signatures, origins outside the sender's subtree, replays, forged
batches — with a precise code, an audit entry, and nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from sqlalchemy import Connection, func, select

from node.datagen import generate_records
from node.schema import apply_log
from security.keys import NodeKey, load_signing_key
from security.signing import sign
from sync.ae_wire import (
    PURPOSE_AE_REPAIR,
    PURPOSE_AE_SUMMARY,
    REPAIR_PATH,
    SUMMARY_PATH,
    RangeSummaries,
    RangeSummary,
)
from sync.errors import PeerRejected
from sync.transport import HttpTransport
from sync.wire import Push, Sealed, SignedBatch
from tests.support.history import History, write_through
from tests.support.network import make_network
from tests.support.peer import peer_transport


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
