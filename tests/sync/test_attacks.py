"""A running province under attack: hand-made clients post raw bytes over real HTTP to
/v1/sync/push. Every refusal is a 4xx with a stable code in the msgpack error body, writes
nothing, and counts in `lsnet_sync_rejected_total{reason=...}`; accepted-but-wrong batches get a
per-batch verdict (duplicate, gap, chain broken) and are applied at most once."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.app import Node
from security.http_signatures import Signer, sign_request
from security.keys import NodeKey
from security.signing import sign
from sync.wire import (
    CONTENT_TYPE,
    PURPOSE_PUSH,
    BatchHeader,
    BatchStatus,
    Code,
    Push,
    PushReply,
    Sealed,
    SignedBatch,
    packb,
    parse_error_body,
    unpackb,
)
from tests.support.network import TestNet, make_network
from tests.sync.helpers import changes_for, make_batch, open_reply, row_counts, valid_records

MAX_BODY = 64 * 1024
MAX_BATCHES = 4


@dataclass
class Scene:
    net: TestNet
    province: Node
    cities: dict[str, Node]
    session: aiohttp.ClientSession
    a: str
    b: str

    @property
    def url(self) -> str:
        return self.net.configs[self.province.config.node_id].node.url + "/v1/sync/push"

    async def post(
        self, body: Any, *, signed_body: bytes | None = None, **kw: Any
    ) -> tuple[int, bytes]:
        """Post as city `a` over HTTP (RFC 9421 signature with its key, as its node would);
        the envelope inside may claim anything. A streamed body is signed over `signed_body`."""
        headers = {"Content-Type": CONTENT_TYPE}
        content = body if isinstance(body, bytes) else signed_body
        assert content is not None
        headers.update(
            sign_request(
                Signer(self.a, self.cities[self.a].key),
                self.province.config.node_id,
                "POST",
                self.url,
                content,
                self.now() / 1000,
            )
        )
        async with self.session.post(self.url, data=body, headers=headers, **kw) as resp:
            return resp.status, await resp.read()

    def rejected(self, reason: str) -> float:
        value = self.province.registry.get_sample_value(
            "lsnet_sync_rejected_total", {"reason": reason}
        )
        return value or 0.0

    def received(self, origin: str, status: str) -> float:
        value = self.province.registry.get_sample_value(
            "lsnet_sync_batches_received_total", {"origin": origin, "status": status}
        )
        return value or 0.0

    async def counts(self) -> dict[str, int]:
        return await row_counts(self.province.db)

    def now(self) -> int:
        return self.province.clock.time_ms()

    async def batches(self, city: str, n: int, per_batch: int = 1000) -> list[SignedBatch]:
        """Real signed batches cut by the city's own node (which is not started)."""
        node = self.cities[city]
        recs = valid_records(city, n, seed=len(city) + n)
        await node.ingest(recs)
        while await node.sync_store.cut_batch(node.key, per_batch, 4 * 1024 * 1024, self.now()):
            pass
        return [p.signed for p in await node.sync_store.next_transfer(1000, 10**9)]

    def seal(
        self,
        batches: list[SignedBatch],
        *,
        sender: str | None = None,
        key: NodeKey | None = None,
        destination: str | None = None,
        sent_ms: int | None = None,
        v: int | None = None,
    ) -> bytes:
        sender = sender or self.a
        push = Push(
            sender=sender,
            destination=destination or self.province.config.node_id,
            sent_ms=self.now() if sent_ms is None else sent_ms,
            nonce=os.urandom(16),
            batches=tuple(batches),
            **({"v": v} if v is not None else {}),
        )
        envelope = push.to_bytes()
        signer = key or self.cities[sender].key
        return Sealed(envelope, sign(signer, PURPOSE_PUSH, envelope)).to_bytes()

    def reply(self, body: bytes) -> PushReply:
        return open_reply(body, self.province.key)

    async def refused(
        self, body: Any, status: int, code: Code, *, batch: int | None = None, **kw: Any
    ) -> str:
        """Post, expect a refusal with `code`, nothing written, and the counter moved by one."""
        before = await self.counts()
        counted = self.rejected(code.value)
        got_status, answer = await self.post(body, **kw)
        got_code, message = parse_error_body(answer)
        assert (got_status, got_code) == (status, code.value), message
        assert unpackb(answer, what="error")["error"].get("batch") == batch
        assert await self.counts() == before
        assert self.rejected(code.value) == counted + 1
        return message


@pytest.fixture
async def scene(tmp_path: Path, database_for: Callable[[str], str]) -> AsyncIterator[Scene]:
    async with open_scene(tmp_path, database_for) as opened:
        yield opened


@contextlib.asynccontextmanager
async def open_scene(
    tmp_path: Path, database_for: Callable[[str], str], *, sync: dict[str, object] | None = None
) -> AsyncIterator[Scene]:
    """A started province on the backend under test, with `sync` settings changed on it only."""
    # The province under attack runs on the backend under test; the cities only make batches and
    # the ministry is never started, so they stay on SQLite.
    (tmp_path / "side").mkdir()
    province_id = "330000"

    def backend(node_id: str) -> str:
        if node_id == province_id:
            return database_for(node_id)
        return f"sqlite:///{tmp_path / 'side' / node_id}.db"

    net = make_network(tmp_path, provinces=1, cities_per_province=2, database_for=backend)
    assert net.province_ids() == [province_id]
    cfg = net.configs[province_id]
    limits = cfg.limits.model_copy(
        update={"max_body_bytes": MAX_BODY, "max_batches_per_transfer": MAX_BATCHES}
    )
    update: dict[str, object] = {"limits": limits}
    if sync:
        update["sync"] = cfg.sync.model_copy(update=sync)
    net.configs[province_id] = cfg.model_copy(update=update)
    a, b = net.city_ids()
    cities = {cid: net.open(cid) for cid in (a, b)}
    first = net.open(province_id)
    await first.init_database()
    await first.stop()
    for node in cities.values():
        await node.init_database()
    province = await net.start(province_id)
    session = aiohttp.ClientSession()
    try:
        yield Scene(net, province, cities, session, a, b)
    finally:
        await session.close()
        for node in cities.values():
            await node.stop()
        await net.stop_all()


# -- refused before any signature work -------------------------------------------------------------


async def test_malformed_msgpack(scene: Scene) -> None:
    for body in (b"\xc1\xc1", b"", b"not msgpack at all", packb([1, 2, 3]), packb({"e": b"x"})):
        await scene.refused(body, 400, Code.MALFORMED)


async def test_truncated_msgpack(scene: Scene) -> None:
    sealed = scene.seal(await scene.batches(scene.a, 5))
    for cut in (len(sealed) // 2, len(sealed) - 1):
        await scene.refused(sealed[:cut], 400, Code.MALFORMED)


async def test_wrong_types(scene: Scene) -> None:
    good = Sealed.from_bytes(scene.seal([]))
    await scene.refused(packb({"e": "envelope", "s": good.signature}), 400, Code.MALFORMED)
    await scene.refused(packb({"e": good.envelope, "s": 64}), 400, Code.MALFORMED)
    # A correctly signed envelope whose fields have the wrong types.
    env = unpackb(good.envelope, what="test")
    for field, value in (("sent", "now"), ("sender", 330100), ("batches", {"0": b"x"})):
        bad_env = packb({**env, field: value})
        key = scene.cities[scene.a].key
        body = Sealed(bad_env, sign(key, PURPOSE_PUSH, bad_env)).to_bytes()
        await scene.refused(body, 400, Code.MALFORMED)


async def test_unknown_protocol_version(scene: Scene) -> None:
    body = scene.seal(await scene.batches(scene.a, 3), v=2)
    message = await scene.refused(body, 400, Code.UNSUPPORTED_VERSION)
    assert "version 2" in message


async def test_oversized_body_by_content_length(scene: Scene) -> None:
    body = scene.seal([SignedBatch(b"h", b"s" * 64, b"x" * (MAX_BODY + 1))])
    assert len(body) > MAX_BODY
    message = await scene.refused(body, 413, Code.TOO_LARGE)
    assert str(MAX_BODY) in message


async def test_oversized_body_without_content_length(scene: Scene) -> None:
    async def stream() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"\x00" * (MAX_BODY // 2)

    whole = b"\x00" * (MAX_BODY // 2) * 4
    await scene.refused(stream(), 413, Code.TOO_LARGE, signed_body=whole)


async def test_too_many_batches(scene: Scene) -> None:
    (batch,) = await scene.batches(scene.a, 2)
    body = scene.seal([batch] * (MAX_BATCHES + 1))
    message = await scene.refused(body, 413, Code.TOO_LARGE)
    assert f"{MAX_BATCHES + 1} batches" in message


# -- refused for who sent it, to whom and when -----------------------------------------------------


async def test_unknown_sender(scene: Scene) -> None:
    stranger = NodeKey.generate()
    body = scene.seal([], sender="330300", key=stranger)
    await scene.refused(body, 401, Code.UNKNOWN_SENDER)


async def test_envelope_signed_by_the_wrong_key(scene: Scene) -> None:
    batches = await scene.batches(scene.a, 3)
    body = scene.seal(batches, key=NodeKey.generate())
    await scene.refused(body, 401, Code.BAD_SIGNATURE)
    # Another enrolled child's key is just as wrong.
    body = scene.seal(batches, key=scene.cities[scene.b].key)
    await scene.refused(body, 401, Code.BAD_SIGNATURE)


async def test_wrong_destination(scene: Scene) -> None:
    batches = await scene.batches(scene.a, 3)
    body = scene.seal(batches, destination=scene.net.ministry_id)
    message = await scene.refused(body, 421, Code.WRONG_DESTINATION)
    assert scene.net.ministry_id in message


async def test_stale_send_time(scene: Scene) -> None:
    batches = await scene.batches(scene.a, 3)
    skew_ms = int(scene.province.config.sync.max_clock_skew_s * 1000)
    for sent in (scene.now() - skew_ms - 60_000, scene.now() + skew_ms + 60_000):
        message = await scene.refused(scene.seal(batches, sent_ms=sent), 401, Code.STALE)
        assert "clock" in message


# -- refused for one batch of the push -------------------------------------------------------------


async def test_city_pushing_the_other_citys_batch_is_not_authorised(scene: Scene) -> None:
    own = await scene.batches(scene.a, 3)
    other = await scene.batches(scene.b, 3)
    body = scene.seal([*own, *other])
    message = await scene.refused(body, 422, Code.NOT_AUTHORISED, batch=len(own))
    assert scene.b in message
    assert (await scene.counts())["records"] == 0


async def test_forged_batch_is_a_bad_signature(scene: Scene) -> None:
    city = scene.cities[scene.a]
    epoch = (await city.store.meta()).epoch
    attacker = NodeKey.generate()
    # Header names city A and its key id, but the signature is the attacker's.
    forged = make_batch(
        city.key, scene.a, epoch, changes_for(valid_records(scene.a, 4)), signer=attacker
    )
    assert BatchHeader.from_bytes(forged.header_bytes).kid == city.key.kid
    await scene.refused(scene.seal([forged]), 422, Code.BAD_SIGNATURE, batch=0)
    # A genuine batch with a tampered body behind a valid envelope.
    (genuine,) = await scene.batches(scene.a, 4)
    tampered = dataclasses.replace(genuine, body=genuine.body.replace(b"33", b"34", 1))
    await scene.refused(scene.seal([genuine, tampered]), 422, Code.BAD_DIGEST, batch=1)
    assert (await scene.counts())["records"] == 0


# -- accepted transfers that are not what they seem ------------------------------------------------


async def test_replayed_push_is_applied_once(scene: Scene) -> None:
    batches = await scene.batches(scene.a, 30, per_batch=10)
    body = scene.seal(batches)
    status, answer = await scene.post(body)
    assert status == 200
    first = scene.reply(answer)
    assert [r.status for r in first.results] == [BatchStatus.APPLIED] * 3
    after_first = await scene.counts()
    assert after_first == {"records": 30, "batches": 3, "watermarks": 1}

    # The very same request again (same nonce) is a replay: refused, nothing written.
    status, answer = await scene.post(body)
    assert status == 401
    assert parse_error_body(answer)[0] == "replay"
    assert await scene.counts() == after_first

    # The same batches in a new push (what a sender does after a lost answer): duplicates.
    status, answer = await scene.post(scene.seal(batches))
    assert status == 200
    second = scene.reply(answer)
    assert [r.status for r in second.results] == [BatchStatus.DUPLICATE] * 3
    assert await scene.counts() == after_first
    assert scene.received(scene.a, "duplicate") == 3
    assert scene.received(scene.a, "applied") == 3
    epoch = (await scene.cities[scene.a].store.meta()).epoch
    assert [(w.origin, w.epoch, w.seq) for w in second.watermarks] == [(scene.a, epoch, 30)]
    own = (await scene.cities[scene.a].store.origin_digests())[scene.a]
    held = (await scene.province.store.origin_digests())[scene.a]
    assert held == own


async def test_gap_is_answered_and_nothing_applied(scene: Scene) -> None:
    b1, b2 = await scene.batches(scene.a, 20, per_batch=10)
    before = await scene.counts()
    status, answer = await scene.post(scene.seal([b2]))
    assert status == 200
    (result,) = scene.reply(answer).results
    assert (result.status, result.need_seq, result.first_seq) == (BatchStatus.GAP, 1, 11)
    assert await scene.counts() == before
    # Sent in order, both apply.
    status, answer = await scene.post(scene.seal([b1, b2]))
    assert [r.status for r in scene.reply(answer).results] == [BatchStatus.APPLIED] * 2
    assert (await scene.counts())["records"] == 20


async def test_broken_hash_chain_is_rejected(scene: Scene) -> None:
    city = scene.cities[scene.a]
    (b1,) = await scene.batches(scene.a, 10)
    status, _ = await scene.post(scene.seal([b1]))
    assert status == 200
    before = await scene.counts()
    counted = scene.rejected(Code.CHAIN_BROKEN.value)
    # Batch 2, validly signed by the city's own key, but chained to a header that never was.
    epoch = (await city.store.meta()).epoch
    more = valid_records(scene.a, 20, seed=99)[10:]
    b2 = make_batch(city.key, scene.a, epoch, changes_for(more, 11), prev=b"\x05" * 32)
    status, answer = await scene.post(scene.seal([b2]))
    assert status == 200
    (result,) = scene.reply(answer).results
    assert (result.status, result.code) == (BatchStatus.REJECTED, Code.CHAIN_BROKEN.value)
    assert await scene.counts() == before
    assert scene.rejected(Code.CHAIN_BROKEN.value) == counted + 1
    marks = await scene.province.sync_store.watermarks_for([scene.a])
    assert [w.seq for w in marks] == [10]
