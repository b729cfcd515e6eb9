"""Node-to-node authentication (RFC 9421) and the key lifecycle, attacked over real HTTP.

Every refusal: the precise code, exactly one audit event of the right kind, one increment of
`lsnet_sync_rejected_total{reason}`, and no change to the records, batches and watermarks."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner

from node.app import Node
from node.cli import main
from node.clock import SystemClock
from node.key_sync import ANNOUNCE_PATH, record_rotation_txn
from security.audit import AuditKind
from security.http_signatures import Signer, sign_request
from security.key_docs import make_rotation
from security.keys import NodeKey
from security.signing import sign
from sync.errors import PeerUnavailable
from sync.wire import CONTENT_TYPE, PURPOSE_PUSH, Push, Sealed, packb
from tests.support.network import TestNet, make_network, wait_until
from tests.sync.helpers import row_counts, valid_records


@dataclass
class Net:
    net: TestNet
    ministry: Node
    province: Node
    city: Node
    other: Node

    @property
    def push_url(self) -> str:
        return self.province.config.node.url + "/v1/sync/push"

    def empty_push(self, sender: Node | None = None) -> bytes:
        sender = sender or self.city
        push = Push(
            sender=sender.config.node_id,
            destination=self.province.config.node_id,
            sent_ms=SystemClock().time_ms(),
            nonce=os.urandom(16),
            batches=(),
        )
        envelope = push.to_bytes()
        return Sealed(envelope, sign(sender.key, PURPOSE_PUSH, envelope)).to_bytes()

    def signed(
        self,
        body: bytes,
        *,
        sender: str | None = None,
        key: NodeKey | None = None,
        destination: str | None = None,
        method: str = "POST",
        url: str | None = None,
        now_s: float | None = None,
    ) -> dict[str, str]:
        headers = sign_request(
            Signer(sender or self.city.config.node_id, key or self.city.key),
            destination or self.province.config.node_id,
            method,
            url or self.push_url,
            body,
            SystemClock().time_ms() / 1000 if now_s is None else now_s,
        )
        return {"Content-Type": CONTENT_TYPE, **headers}

    def rejected(self, node: Node, reason: str) -> float:
        value = node.registry.get_sample_value("lsnet_sync_rejected_total", {"reason": reason})
        return value or 0.0

    async def refused(
        self, status: int, code: str, headers: dict[str, str], body: bytes, url: str | None = None
    ) -> None:
        """Post; expect the refusal, one audit event, one metric increment, no state change."""
        target = self.province
        assert target.security is not None
        before = await row_counts(target.db)
        audited = len(await target.security.audit.entries(kind=AuditKind.REQUEST_REJECTED))
        counted = self.rejected(target, code)
        async with (
            aiohttp.ClientSession() as s,
            s.post(url or self.push_url, data=body, headers=headers) as r,
        ):
            got = await r.read()
            assert r.status == status, got
        assert code.encode() in got
        assert self.rejected(target, code) == counted + 1
        entries = await target.security.audit.entries(kind=AuditKind.REQUEST_REJECTED)
        assert len(entries) == audited + 1 and entries[0].code == code
        assert await row_counts(target.db) == before


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    test_net = make_network(tmp_path, provinces=1, cities_per_province=2)
    await test_net.init_all()
    await test_net.start_all()
    a, b = test_net.city_ids()
    try:
        yield Net(
            test_net,
            test_net.nodes[test_net.ministry_id],
            test_net.nodes[test_net.province_ids()[0]],
            test_net.nodes[a],
            test_net.nodes[b],
        )
    finally:
        await test_net.stop_all()


async def test_signed_push_is_accepted(net: Net) -> None:
    body = net.empty_push()
    async with (
        aiohttp.ClientSession() as s,
        s.post(net.push_url, data=body, headers=net.signed(body)) as r,
    ):
        assert r.status == 200
        # The answer is signed by the province for this request.
        assert "Signature" in r.headers and "LSNet-Request-Nonce" in r.headers


async def test_unsigned_request_is_refused(net: Net) -> None:
    await net.refused(401, "unauthenticated", {"Content-Type": CONTENT_TYPE}, net.empty_push())


async def test_unknown_node_is_refused(net: Net) -> None:
    body = net.empty_push()
    headers = net.signed(body, sender="339900", key=NodeKey.generate())
    await net.refused(401, "unknown_sender", headers, body)


async def test_forged_signature_of_a_known_node_is_refused(net: Net) -> None:
    body = net.empty_push()
    await net.refused(401, "bad_signature", net.signed(body, key=NodeKey.generate()), body)


async def test_swapped_path_is_refused(net: Net) -> None:
    body = net.empty_push()
    report_url = net.province.config.node.url + "/v1/standards/report"
    await net.refused(401, "bad_signature", net.signed(body, url=report_url), body)


async def test_swapped_method_is_refused(net: Net) -> None:
    body = net.empty_push()
    await net.refused(401, "bad_signature", net.signed(body, method="PUT"), body)


async def test_swapped_destination_is_refused(net: Net) -> None:
    body = net.empty_push()
    headers = net.signed(body, destination=net.ministry.config.node_id)
    await net.refused(421, "wrong_destination", headers, body)


async def test_altered_body_is_refused(net: Net) -> None:
    body = net.empty_push()
    headers = net.signed(body)
    await net.refused(401, "bad_digest", headers, body[:-1] + bytes([body[-1] ^ 1]))


async def test_stale_and_future_signatures_are_refused(net: Net) -> None:
    skew = net.province.config.sync.max_clock_skew_s
    now = SystemClock().time_ms() / 1000
    for when in (now - skew - 60, now + skew + 60):
        body = net.empty_push()
        await net.refused(401, "stale", net.signed(body, now_s=when), body)


async def test_replayed_request_is_refused(net: Net) -> None:
    body = net.empty_push()
    headers = net.signed(body)
    async with aiohttp.ClientSession() as s, s.post(net.push_url, data=body, headers=headers) as r:
        assert r.status == 200
    await net.refused(401, "replay", headers, body)


async def test_parent_may_not_call_a_child_route(net: Net) -> None:
    # The ministry is the province's parent: it may not push batches into it.
    body = net.empty_push(net.city)
    headers = net.signed(body, sender=net.ministry.config.node_id, key=net.ministry.key)
    await net.refused(403, "not_authorised", headers, body)


async def test_city_cannot_push_in_the_name_of_its_sibling(net: Net) -> None:
    # HTTP signed by the city itself, envelope claiming the other city: refused.
    body = net.empty_push(net.other)
    headers = net.signed(body)
    await net.refused(403, "not_authorised", headers, body)


async def test_oversized_body_is_refused_before_any_crypto(net: Net) -> None:
    body = b"\x00" * (net.province.config.limits.max_body_bytes + 1)
    await net.refused(413, "too_large", {"Content-Type": CONTENT_TYPE}, body)


async def test_tampered_answer_is_not_trusted(net: Net) -> None:
    """A machine in the middle that alters the parent's answer: the city refuses the answer."""

    async def relay(request: web.Request) -> web.Response:
        body = await request.read()
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                net.province.config.node.url + request.path, data=body, headers=request.headers
            ) as r,
        ):
            data = bytearray(await r.read())
            headers = {
                k: v
                for k, v in r.headers.items()
                if k.lower().startswith(("lsnet", "sig", "content-digest"))
            }
        data[-1] ^= 1
        return web.Response(body=bytes(data), status=r.status, headers=headers)

    app = web.Application()
    app.router.add_post("/{tail:.*}", relay)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        assert net.city.peer_auth is not None
        url = f"http://127.0.0.1:{port}"
        net.city.peer_auth.peers_by_url[url] = net.province.config.node_id
        with pytest.raises(PeerUnavailable, match="not authentic"):
            await net.city.transport.post(
                net.province.config.node_id, url + "/v1/sync/push", net.empty_push()
            )
    finally:
        await runner.cleanup()


# -- key lifecycle -------------------------------------------------------------------------------


async def _announce(net: Net, node: Node, doc: bytes) -> int:
    """Announce a rotation to the province as `node` (signed with its current key)."""
    url = net.province.config.node.url + ANNOUNCE_PATH
    headers = net.signed(doc, sender=node.config.node_id, key=node.key, url=url)
    async with aiohttp.ClientSession() as s, s.post(url, data=doc, headers=headers) as r:
        return r.status


async def test_rotation_reaches_the_ministry_and_old_batches_stay_verifiable(
    net: Net, tmp_path: Path
) -> None:
    city_id = net.city.config.node_id
    await net.city.ingest(valid_records(city_id, 20, seed=1))
    await net.net.wait_converged()
    old_kid = net.city.key.kid
    config_path = net.net.layout.by_id(city_id).config_path
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["keys", "rotate", "--config", str(config_path)]
    )
    assert result.exit_code == 0, result.output
    assert "announced to" in result.output
    # Every ancestor trusts the new key now; the old one is kept with its window.
    for holder in (net.province, net.ministry):
        entries = {e.kid: e for e in holder.keyring.entries(city_id)}
        assert len(entries) == 2 and entries[old_kid].valid_until_ms is not None
        assert holder.security is not None
        rotated = await holder.security.audit.entries(kind=AuditKind.KEY_ROTATED)
        assert [e.code for e in rotated] == ["announced"]
    # Restart the city with its new key; new batches are signed with it and accepted.
    await net.net.stop(city_id)
    city = await net.net.start(city_id)
    assert city.key.kid != old_kid
    await city.ingest(valid_records(city_id, 20, seed=2))
    await net.net.wait_converged()
    # The ministry re-verifies every stored batch of the city: old ones with the old key.
    from sync.scrub import scrub

    report = await scrub(net.ministry.sync_store, net.ministry.keyring)
    assert report.ok, report.problems
    assert report.by_origin[city_id] == 40
    # At the city, its audit log (entries by both keys) and its own batches still verify.
    for command in (["audit", "verify"], ["verify"]):
        result = await asyncio.to_thread(
            CliRunner().invoke, main, [*command, "--config", str(config_path)]
        )
        assert result.exit_code == 0, result.output


async def test_rotation_signed_by_a_stranger_is_refused(net: Net) -> None:
    forger, new = NodeKey.generate(), NodeKey.generate()
    doc = make_rotation(net.city.config.node_id, forger, new, SystemClock().time_ms(), 1000).doc
    assert await _announce(net, net.city, doc) == 401
    assert len(net.province.keyring.entries(net.city.config.node_id)) == 1


async def test_city_cannot_rotate_its_siblings_key(net: Net) -> None:
    doc = make_rotation(
        net.other.config.node_id, net.other.key, NodeKey.generate(), SystemClock().time_ms(), 1
    ).doc
    assert await _announce(net, net.city, doc) == 403


async def test_expired_and_not_yet_valid_keys_are_refused(net: Net) -> None:
    # The cities' own nodes are stopped: only the test's requests reach the province.
    await net.net.stop(net.city.config.node_id)
    await net.net.stop(net.other.config.node_id)
    now = SystemClock().time_ms()
    new = NodeKey.generate()
    # Rotated an hour ago with a one-second overlap: the old key has expired.
    doc = make_rotation(net.city.config.node_id, net.city.key, new, now - 3_600_000, 1000).doc
    assert await _announce(net, net.city, doc) == 200
    body = net.empty_push()
    await net.refused(401, "key_expired", net.signed(body), body)
    # The other city announces a key valid only from tomorrow and signs with it today.
    later = NodeKey.generate()
    doc = make_rotation(net.other.config.node_id, net.other.key, later, now + 86_400_000, 0).doc
    assert await _announce(net, net.other, doc) == 200
    body = net.empty_push(net.other)
    headers = net.signed(body, sender=net.other.config.node_id, key=later)
    await net.refused(401, "key_not_yet_valid", headers, body)


async def test_revocation_spreads_down_and_up(net: Net) -> None:
    city_id = net.city.config.node_id
    kid = net.city.key.kid
    assert net.ministry.key_sync is not None and net.province.key_sync is not None
    # The cities' own nodes are stopped: only the test's requests reach the province.
    await net.net.stop(city_id)
    await net.net.stop(net.other.config.node_id)
    await net.ministry.key_sync.revoke(city_id, kid, "stolen laptop", "ops")
    # Downward: the province fetches the ministry's revocations with its key-sync job.
    await net.province.jobs.run_now("key-sync")
    entry = net.province.keyring.entry(city_id, kid)
    assert entry is not None and entry.revoked_ms is not None
    body = net.empty_push()
    await net.refused(401, "key_revoked", net.signed(body), body)
    # Upward: the province revokes its other city; the ministry learns it from the province.
    other_id, other_kid = net.other.config.node_id, net.other.key.kid
    await net.province.key_sync.revoke(other_id, other_kid, "decommissioned", "ops")
    await net.province.jobs.run_now("key-sync")
    entry = net.ministry.keyring.entry(other_id, other_kid)
    assert entry is not None and entry.revoked_ms is not None
    assert net.ministry.security is not None
    revoked = await net.ministry.security.audit.entries(kind=AuditKind.KEY_REVOKED)
    assert sorted(e.detail_map()["node"] for e in revoked) == sorted([city_id, other_id])


async def test_child_cannot_revoke_keys_outside_its_subtree(net: Net) -> None:
    from node.key_sync import REVOCATIONS_PATH
    from security.key_docs import make_revocation

    rev = make_revocation(
        net.city.config.node_id,
        net.city.key,
        net.other.config.node_id,
        net.other.key.kid,
        SystemClock().time_ms(),
        "mischief",
    )
    body = packb({"docs": [rev.doc]})
    url = net.province.config.node.url + REVOCATIONS_PATH
    await net.refused(403, "not_authorised", net.signed(body, url=url), body, url=url)
    entry = net.province.keyring.entry(net.other.config.node_id, net.other.key.kid)
    assert entry is not None and entry.revoked_ms is None


async def test_parent_rotation_is_learned_by_children_from_its_answers(net: Net) -> None:
    """The province rotates: the ministry learns it upward; the city from the first answer."""
    province_id = net.province.config.node_id
    old, new = net.province.key, NodeKey.generate()
    now = SystemClock().time_ms()
    rotation = make_rotation(province_id, old, new, now, 3_600_000)
    # Announce upward as `lsnet keys rotate` does (through the province's own transport).
    parent = net.province.config.parent
    assert parent is not None
    await net.province.transport.post(parent.id, parent.url + ANNOUNCE_PATH, rotation.doc)
    assert net.ministry.keyring.entry(province_id, new.kid) is not None
    await net.province.db.write(record_rotation_txn, rotation, province_id, now, now)
    # Restart the province with the new key.
    await net.net.stop(province_id)
    from security.keys import write_key_file

    write_key_file(net.net.configs[province_id].node.key_file, new, overwrite=True)
    province = await net.net.start(province_id)
    assert province.key.kid == new.kid
    city_id = net.city.config.node_id
    await net.city.ingest(valid_records(city_id, 5, seed=3))
    await wait_until(
        lambda: net.city.keyring.entry(province_id, new.kid) is not None,
        20,
        "the city did not learn the province's new key",
    )
    await net.net.wait_converged()


# -- hostile input -------------------------------------------------------------------------------


async def test_deeply_nested_body_is_refused_as_malformed(net: Net) -> None:
    body = b"\x91" * 100_000 + b"\xc0"  # an array in an array in ... 100,000 deep
    await net.refused(400, "malformed", net.signed(body), body)


async def test_garbage_bytes_are_refused_as_malformed(net: Net) -> None:
    body = os.urandom(4096)
    await net.refused(400, "malformed", net.signed(body), body)


async def test_slow_client_is_cut_off(tmp_path: Path) -> None:
    """Slowloris: a signed request whose body trickles in is answered 408 and audited."""
    test_net = make_network(tmp_path, provinces=1, cities_per_province=1)
    province_id = test_net.province_ids()[0]
    cfg = test_net.configs[province_id]
    test_net.configs[province_id] = cfg.model_copy(
        update={"limits": cfg.limits.model_copy(update={"body_read_timeout_s": 0.5})}
    )
    await test_net.init_all()
    province = await test_net.start(province_id)
    try:
        city_id = test_net.city_ids()[0]
        from security.keys import load_signing_key

        key = load_signing_key(test_net.configs[city_id].node.key_file)
        body = b"\x00" * 100
        url = province.config.node.url + "/v1/sync/push"
        headers = sign_request(
            Signer(city_id, key), province_id, "POST", url, body, SystemClock().time_ms() / 1000
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", province.config.node.port)
        lines = ["POST /v1/sync/push HTTP/1.1", "Host: 127.0.0.1", "Content-Length: 100"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body[:10])
        await writer.drain()
        # Wait (bounded) for the server to give up on the rest of the body.
        answer = await asyncio.wait_for(reader.read(4096), timeout=10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"slow_client" in answer
        assert province.security is not None
        refused = await province.security.audit.entries(kind=AuditKind.REQUEST_REJECTED)
        assert [e.code for e in refused] == ["slow_client"]
    finally:
        await test_net.stop_all()


async def test_province_altering_a_city_batch_is_caught_at_the_ministry(net: Net) -> None:
    """End to end: a province (authentic, with its own key) relays a city's batch whose body it
    changed; the ministry verifies the city's signature, refuses the batch, applies nothing."""
    from tests.sync.helpers import changes_for, make_batch, seal_push

    city_id, province_id = net.city.config.node_id, net.province.config.node_id
    meta = await net.city.store.meta()
    real = make_batch(net.city.key, city_id, meta.epoch, changes_for(valid_records(city_id, 3)))
    altered = type(real)(real.header_bytes, real.signature, real.body[:-1] + b"\x00")
    ministry = net.ministry
    assert ministry.security is not None
    before = await row_counts(ministry.db)
    counted = net.rejected(ministry, "bad_digest")
    body = seal_push(
        net.province.key,
        sender=province_id,
        destination=ministry.config.node_id,
        batches_=[altered],
        sent_ms=SystemClock().time_ms(),
    )
    url = ministry.config.node.url + "/v1/sync/push"
    headers = net.signed(
        body,
        sender=province_id,
        key=net.province.key,
        destination=ministry.config.node_id,
        url=url,
    )
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        answer = await r.read()
        assert r.status == 422, answer
    assert b"bad_digest" in answer
    assert net.rejected(ministry, "bad_digest") == counted + 1
    rejected = await ministry.security.audit.entries(kind=AuditKind.BATCH_REJECTED)
    assert [e.code for e in rejected] == ["bad_digest"]
    assert await row_counts(ministry.db) == before
