"""The UpstreamQueue over real HTTP: outages and catch-up, bounded backoff, quarantine of batches
the parent refuses for their content, bounded transfers of a backlog, and relay to the ministry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select, update

from hierarchy_config.model import NodeConfig
from node.app import Node
from node.datagen import generate_records
from node.schema import batches
from security.keys import NodeKey
from sync.scrub import scrub
from sync.sender import Mode
from sync.wire import BatchHeader, Code, Push, Sealed, SignedBatch
from tests.support.network import TestNet, make_network, wait_until
from tests.sync.helpers import valid_records

BACKOFF_MAX_S = 0.2
FAST: dict[str, object] = {
    "debounce_ms": 0,
    "backoff_initial_s": 0.05,
    "backoff_max_s": BACKOFF_MAX_S,
}


def _batches_txn(conn: Connection) -> list[Any]:
    return list(conn.execute(select(batches).order_by(batches.c.id)))


async def batch_rows(node: Node) -> list[Any]:
    return await node.db.read(_batches_txn)


async def applied(parent: Node, origin: str) -> int:
    marks = await parent.sync_store.watermarks_for([origin])
    return max((w.seq for w in marks), default=0)


def sample(node: Node, name: str, **labels: str) -> float:
    return node.registry.get_sample_value(name, labels) or 0.0


def with_limits(cfg: NodeConfig, **limits: int) -> NodeConfig:
    return cfg.model_copy(update={"limits": cfg.limits.model_copy(update=limits)})


def with_child_key(cfg: NodeConfig, child_id: str, public: str) -> NodeConfig:
    """`cfg` with another public key enrolled for `child_id`, wherever it sits below."""

    def swap(children: tuple[Any, ...]) -> tuple[Any, ...]:
        out = []
        for child in children:
            changes: dict[str, Any] = {"children": swap(child.children)}
            if child.id == child_id:
                changes["public_key"] = public
            out.append(child.model_copy(update=changes))
        return tuple(out)

    return cfg.model_copy(update={"children": swap(cfg.children)})


async def init(net: TestNet, *node_ids: str) -> None:
    for node_id in node_ids:
        node = net.open(node_id)
        await node.init_database()
        await node.stop()


def only(tmp_path: Path, database_for: Callable[[str], str], *levels: str) -> Callable[[str], str]:
    """Databases on the backend under test for the nodes at `levels`, SQLite for the others
    (creating PostgreSQL databases is the slow part of these tests)."""
    folder = tmp_path / "sqlite"
    folder.mkdir(exist_ok=True)
    ministry, province = "100000", "330000"

    def level(node_id: str) -> str:
        return "ministry" if node_id == ministry else "province" if node_id == province else "city"

    def pick(node_id: str) -> str:
        if level(node_id) in levels:
            return database_for(node_id)
        return f"sqlite:///{folder / node_id}.db"

    return pick


def small_net(
    tmp_path: Path,
    database_for: Callable[[str], str],
    levels: tuple[str, ...] = ("province", "city"),
    **kw: Any,
) -> TestNet:
    """Ministry, one province, one city; those at `levels` on the backend under test."""
    net = make_network(
        tmp_path,
        provinces=1,
        cities_per_province=1,
        database_for=only(tmp_path, database_for, *levels),
        **kw,
    )
    assert (net.ministry_id, net.province_ids()) == ("100000", ["330000"])
    return net


# -- outages ---------------------------------------------------------------------------------------


async def test_parent_down_then_catch_up_without_operator(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    net = small_net(tmp_path, database_for, overrides=FAST)
    (province_id,), (city_id,) = net.province_ids(), net.city_ids()
    await init(net, province_id, city_id)
    city = await net.start(city_id)
    queue = city.upstream
    assert queue is not None
    try:
        # The parent is down: local writes still work.
        result = await city.ingest(valid_records(city_id, 40, seed=1))
        assert result.changed == 40

        async def persisted_failures() -> int:
            return (await city.sync_store.load_link(province_id)).failures

        await wait_until(
            lambda: _at_least(persisted_failures(), 4), 10, "the city did not keep retrying"
        )
        link = await city.sync_store.load_link(province_id)
        assert link.mode == Mode.BACKING_OFF.value
        assert link.last_error and link.last_error_ms > 0
        # The delay is capped: uncapped, the 4th failure would wait 0.05 * 2**3 = 0.4 s.
        assert 0 < link.backoff_until_ms - link.last_error_ms <= BACKOFF_MAX_S * 1000
        assert sample(city, "lsnet_sync_transfer_failures_total", peer=province_id) >= 4
        assert sample(city, "lsnet_sync_link_mode", peer=province_id, mode="backing_off") == 1

        result = await city.ingest(valid_records(city_id, 60, seed=1)[40:])
        assert result.last_seq == 60
        status = await city.status_dict()
        assert status["parent"]["link_mode"] == "backing_off"
        assert status["parent"]["failures"] >= 4
        assert status["backlog"] == 60

        province = await net.start(province_id)
        await wait_until(
            lambda: _equals(applied(province, city_id), 60), 10, "the city did not catch up"
        )

        async def persisted_reset() -> bool:
            link = await city.sync_store.load_link(province_id)
            return (link.mode, link.failures, link.backoff_until_ms) == ("live", 0, 0)

        await wait_until(persisted_reset, 10, "the link state was not reset")
        assert (queue.mode, queue.state.failures) == (Mode.LIVE, 0)
        assert (await city.sync_store.load_link(province_id)).last_success_ms > 0
        held = (await province.store.origin_digests())[city_id]
        assert held == (await city.store.origin_digests())[city_id]
        await wait_until(lambda: _backlog_is_zero(city), 10, "backlog not acknowledged")
    finally:
        await net.stop_all()


async def _at_least(value: Any, n: int) -> bool:
    return bool(await value >= n)


async def _equals(value: Any, n: int) -> bool:
    return bool(await value == n)


async def _backlog_is_zero(node: Node) -> bool:
    status = await node.status_dict()
    return bool(status["backlog"] == 0 and status["backlog_batches"] == 0)


async def test_stop_does_not_wait_out_a_backoff(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    slow: dict[str, object] = {"debounce_ms": 0, "backoff_initial_s": 60.0, "backoff_max_s": 60.0}
    net = small_net(tmp_path, database_for, ("city",), overrides=slow)
    (city_id,) = net.city_ids()
    await init(net, city_id)
    city = await net.start(city_id)
    queue = city.upstream
    assert queue is not None
    try:
        await city.ingest(valid_records(city_id, 3))
        await wait_until(lambda: queue.mode is Mode.BACKING_OFF, 10, "no backoff")
        assert queue.state.backoff_until_ms - city.clock.time_ms() > 20_000
        # Nothing is in flight: stopping must not sit out the 30-60 s delay, nor the grace
        # period meant for a transfer in flight (an hour here): a deadline, not a timing.
        await asyncio.wait_for(queue.stop(grace_s=3600.0), timeout=15.0)
        assert queue._task is not None and queue._task.done()
    finally:
        await net.stop(city_id)


async def test_envelope_refused_by_the_parent_backs_off_and_quarantines_nothing(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    net = small_net(tmp_path, database_for, ("city",), overrides=FAST)
    (province_id,), (city_id,) = net.province_ids(), net.city_ids()
    # The province has enrolled another key for the city: the city's envelopes do not verify.
    net.configs[province_id] = with_child_key(
        net.configs[province_id], city_id, NodeKey.generate().public
    )
    await init(net, province_id, city_id)
    province = await net.start(province_id)
    city = await net.start(city_id)
    queue = city.upstream
    assert queue is not None
    try:
        await city.ingest(valid_records(city_id, 5))
        await wait_until(lambda: queue.state.failures >= 2, 10, "the city did not back off")
        assert queue.mode is Mode.BACKING_OFF
        assert Code.BAD_SIGNATURE.value in queue.state.last_error
        assert (await city.status_dict())["quarantined_batches"] == 0
        assert sample(province, "lsnet_sync_rejected_total", reason="bad_signature") >= 2
        assert city_id not in await province.store.origin_digests()
    finally:
        await net.stop_all()


# -- poison batches --------------------------------------------------------------------------------


async def test_batch_refused_for_its_content_is_quarantined_and_does_not_spin(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    net = small_net(tmp_path, database_for, ("province",), overrides=FAST)
    ministry_id = net.ministry_id
    (province_id,), (city_id,) = net.province_ids(), net.city_ids()
    # The ministry holds another key for the city than the city signs with: the province's
    # envelope is fine, but the relayed city batch fails its origin signature at the ministry.
    net.configs[ministry_id] = with_child_key(
        net.configs[ministry_id], city_id, NodeKey.generate().public
    )
    await net.init_all()
    await net.start_all()
    ministry, province, city = (net.nodes[i] for i in (ministry_id, province_id, city_id))
    queue = province.upstream
    assert queue is not None
    try:
        await city.ingest(valid_records(city_id, 10))
        await wait_until(
            lambda: _equals(_quarantined(province), 1), 10, "the batch was not quarantined"
        )
        rows = [r for r in await batch_rows(province) if r.quarantined]
        assert len(rows) == 1
        (row,) = rows
        assert (row.origin, row.source, row.acked) == (city_id, "relay", False)
        assert row.quarantine_code == Code.BAD_SIGNATURE.value
        assert city_id in row.quarantine_reason and "key" in row.quarantine_reason
        quarantined = sample(
            province, "lsnet_sync_batches_quarantined_total", origin=city_id, reason="bad_signature"
        )
        assert quarantined == 1
        # The city's own link is unaffected: the province applied and acknowledged its batch.
        await wait_until(lambda: _backlog_is_zero(city), 10, "the city was not acknowledged")

        await wait_until(lambda: not queue.in_flight and queue.mode is Mode.LIVE, 10, "busy")
        status = await province.status_dict()
        assert status["quarantined_batches"] == 1
        assert status["parent"]["failures"] == 0
        # No spinning: the ministry saw the batch once, and nothing is left to send.
        assert sample(ministry, "lsnet_sync_rejected_total", reason="bad_signature") == 1
        assert city_id not in await ministry.store.origin_digests()
        await queue.stop()
        transfers = queue.transfers
        assert await queue.transfer_once() is False
        assert queue.transfers == transfers
        assert sample(ministry, "lsnet_sync_rejected_total", reason="bad_signature") == 1
    finally:
        await net.stop_all()


async def _quarantined(node: Node) -> int:
    return int((await node.store.status()).quarantined)


async def test_batches_before_a_poisoned_one_are_still_delivered(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    net = small_net(tmp_path, database_for, ("city",), overrides=FAST)
    (province_id,), (city_id,) = net.province_ids(), net.city_ids()
    # The province accepts batches of at most 8 KiB; the city makes a small one and a big one.
    net.configs[province_id] = with_limits(net.configs[province_id], max_batch_bytes=8 * 1024)
    await init(net, province_id, city_id)
    province = await net.start(province_id)
    city = net.open(city_id)
    queue = city.upstream
    assert queue is not None
    try:
        recs = valid_records(city_id, 60, seed=3)
        big = 4 * 1024 * 1024
        await city.ingest(recs[:2])
        assert await city.sync_store.cut_batch(city.key, 1000, big, city.clock.time_ms())
        await city.ingest(recs[2:])
        assert await city.sync_store.cut_batch(city.key, 1000, big, city.clock.time_ms())
        small_batch, big_batch = await batch_rows(city)
        assert small_batch.size < 8 * 1024 < big_batch.size

        # One push carries both; the province refuses it for the big batch (index 1).
        assert await queue.transfer_once() is True
        rows = await batch_rows(city)
        assert [(r.quarantined, r.quarantine_code) for r in rows] == [
            (False, ""),
            (True, Code.TOO_LARGE.value),
        ]
        assert await applied(province, city_id) == 0
        # The small batch before it is still delivered; then nothing is left to send.
        assert await queue.transfer_once() is True
        assert await applied(province, city_id) == 2
        assert await queue.transfer_once() is False
        assert (await city.status_dict())["quarantined_batches"] == 1
    finally:
        await city.stop()
        await net.stop_all()


async def limited_net(
    tmp_path: Path,
    database_for: Callable[[str], str],
    per_batch: int,
    per_transfer: int,
    in_flight: int = 1,
) -> tuple[TestNet, str, str]:
    """`small_net` with small batches and transfers on the province and the city, both
    initialised; returns the network, the province's id and the city's. `in_flight`: the
    city's `[sync] pushes_in_flight` (1, the strict one-transfer rule, unless a test says)."""
    net = small_net(tmp_path, database_for, overrides=FAST)
    (province_id,), (city_id,) = net.province_ids(), net.city_ids()
    for node_id in (province_id, city_id):
        net.configs[node_id] = with_limits(
            net.configs[node_id], max_batch_changes=per_batch, max_batches_per_transfer=per_transfer
        )
    cfg = net.configs[city_id]
    net.configs[city_id] = cfg.model_copy(
        update={"sync": cfg.sync.model_copy(update={"pushes_in_flight": in_flight})}
    )
    await init(net, province_id, city_id)
    return net, province_id, city_id


# -- a backlog -------------------------------------------------------------------------------------


class CountingTransport:
    """The queue's own transport, counting the pushes in flight at once."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.in_flight = 0
        self.most_in_flight = 0

    async def post(self, peer: str, url: str, body: bytes) -> bytes:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            answer: bytes = await self.inner.post(peer, url, body)
            return answer
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        await self.inner.close()


async def test_the_next_transfer_is_prepared_while_one_is_in_flight(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    per_batch, per_transfer = 10, 2
    net, province_id, city_id = await limited_net(tmp_path, database_for, per_batch, per_transfer)
    province = await net.start(province_id)
    city = net.open(city_id)  # not started: the test drives its queue by hand
    # About the queue cutting as it sends (records written without full batches signed at
    # ingest, as `lsnet import` writes them).
    city.store.cut = None
    queue = city.upstream
    assert queue is not None
    transport = CountingTransport(queue.transport)
    queue.transport = transport
    try:
        n = 100
        await city.ingest(valid_records(city_id, n, seed=5))
        assert await queue.transfer_once() is True
        rows = await batch_rows(city)
        # One transfer was sent and acknowledged; the next one's batches were cut and signed
        # meanwhile, and wait unsent.
        assert [r.acked for r in rows] == [True] * per_transfer + [False] * per_transfer
        assert await applied(province, city_id) == per_batch * per_transfer
        while await queue.transfer_once():
            assert queue.transfers <= n // (per_batch * per_transfer), "does not converge"
        assert transport.most_in_flight == 1  # preparing is not sending
        assert queue.transfers == n // (per_batch * per_transfer)
        assert await applied(province, city_id) == n
        assert all(r.acked for r in await batch_rows(city))
        assert len(await batch_rows(city)) == n // per_batch
    finally:
        await city.stop()
        await net.stop_all()


async def test_backlog_is_sent_in_bounded_transfers(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    per_batch, per_transfer = 10, 2
    net, province_id, city_id = await limited_net(tmp_path, database_for, per_batch, per_transfer)
    province = await net.start(province_id)
    city = net.open(city_id)  # not started: the test drives its queue by hand
    # About the queue cutting as it sends (records written without full batches signed at
    # ingest, as `lsnet import` writes them).
    city.store.cut = None
    queue = city.upstream
    assert queue is not None
    try:
        n = 100  # ten batches: more than one transfer can carry
        await city.ingest(valid_records(city_id, n, seed=4))
        modes = []
        while await queue.transfer_once():
            modes.append(queue.mode)
            unacked = [r for r in await batch_rows(city) if not r.acked]
            assert len(unacked) <= per_transfer  # batches are cut as they can be sent
            assert len(modes) <= 10, "the queue does not converge"
        assert queue.transfers == n // (per_batch * per_transfer) == len(modes)
        assert modes[0] is Mode.CATCHING_UP
        assert queue.mode is Mode.LIVE
        assert await applied(province, city_id) == n
        # The province refuses any push with more than two batches: none came.
        assert sample(province, "lsnet_sync_rejected_total", reason="too_large") == 0
        received = sample(
            province, "lsnet_sync_batches_received_total", origin=city_id, status="applied"
        )
        assert received == n // per_batch
        assert sample(city, "lsnet_sync_push_seconds_count", peer=province_id) == queue.transfers
        assert sample(city, "lsnet_sync_batches_sent_total", peer=province_id) == n // per_batch
        assert sample(city, "lsnet_sync_batches_acked_total", peer=province_id) == n // per_batch
        assert all(r.acked for r in await batch_rows(city))
    finally:
        await city.stop()
        await net.stop_all()


# -- relay -----------------------------------------------------------------------------------------


async def test_province_relays_city_batches_unchanged_and_the_ministry_verifies_them(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    net = make_network(
        tmp_path,
        provinces=1,
        cities_per_province=2,
        database_for=only(tmp_path, database_for, "province", "ministry"),
        overrides=FAST,
    )
    await net.init_all()
    await net.start_all()
    ministry = net.nodes[net.ministry_id]
    province = net.nodes[net.province_ids()[0]]
    try:
        for i, city_id in enumerate(net.city_ids()):
            await net.ingest(city_id, generate_records(city_id, 50 + 10 * i, seed=i))
        await net.wait_converged(20)

        relayed = [r for r in await batch_rows(province) if r.source == "relay"]
        for city_id in net.city_ids():
            own = [_signed(r) for r in await batch_rows(net.nodes[city_id])]
            assert own and all(r.source == "local" for r in await batch_rows(net.nodes[city_id]))
            assert [_signed(r) for r in relayed if r.origin == city_id] == own
            at_ministry = [_signed(r) for r in await batch_rows(ministry) if r.origin == city_id]
            assert at_ministry == own  # byte for byte, as the city signed them
        await wait_until(lambda: _all_acked(province), 10, "relay queue not acknowledged")

        keys = ministry.config.subtree_keys()
        report = await scrub(ministry.sync_store, keys)
        assert report.ok, report.problems
        assert report.by_origin == {c: 50 + 10 * i for i, c in enumerate(net.city_ids())}
        # Against another key for one city, every batch of that city fails the scrub.
        victim = net.city_ids()[0]
        wrong = {**keys, victim: NodeKey.generate().verify_key}
        report = await scrub(ministry.sync_store, wrong)
        assert report.problems and all(victim in p for p in report.problems)
        # A relayed batch altered in the ministry's database is caught too.
        await ministry.db.write(_tamper_first_batch_of, victim)
        report = await scrub(ministry.sync_store, keys)
        assert len(report.problems) == 1 and "digest" in report.problems[0]
    finally:
        await net.stop_all()


def _signed(row: Any) -> SignedBatch:
    return SignedBatch(bytes(row.header), bytes(row.signature), bytes(row.body))


async def _all_acked(node: Node) -> bool:
    return all(r.acked for r in await batch_rows(node))


def _tamper_first_batch_of(conn: Connection, origin: str) -> None:
    first = conn.execute(
        select(batches.c.id, batches.c.body)
        .where(batches.c.origin == origin)
        .order_by(batches.c.id)
        .limit(1)
    ).one()
    body = bytes(first.body).replace(b"33", b"34", 1)
    conn.execute(update(batches).where(batches.c.id == first.id).values(body=body))


class BodyTransport:
    """The queue's own transport, keeping the bytes of every push and of those answered."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.bodies: list[bytes] = []
        self.answered: list[bytes] = []

    async def post(self, peer: str, url: str, body: bytes) -> bytes:
        self.bodies.append(body)
        answer: bytes = await self.inner.post(peer, url, body)
        self.answered.append(body)
        return answer

    async def close(self) -> None:
        await self.inner.close()


def _first_seqs(body: bytes) -> list[int]:
    push = Push.from_bytes(Sealed.from_bytes(body).envelope, max_batches=1000)
    return [BatchHeader.from_bytes(b.header_bytes).first_seq for b in push.batches]


async def test_attempts_after_a_failure_carry_one_batch_until_one_is_answered(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    per_batch, per_transfer = 10, 4
    net, province_id, city_id = await limited_net(tmp_path, database_for, per_batch, per_transfer)
    city = net.open(city_id)  # the province is down
    queue = city.upstream
    assert queue is not None
    transport = BodyTransport(queue.transport)
    queue.transport = transport
    await city.start()
    net.nodes[city_id] = city
    try:
        n = 200  # 20 batches: five full transfers
        await city.ingest(valid_records(city_id, n, seed=6))
        await wait_until(lambda: len(transport.bodies) >= 3, 20, "three failed attempts")
        # The first attempt did not know the parent was down; the later ones carried one batch.
        sizes = [len(_first_seqs(body)) for body in transport.bodies]
        assert sizes[0] == per_transfer
        assert set(sizes[1:]) == {1}
        assert queue.state.failures >= 2
        assert transport.answered == []
        province = await net.start(province_id)

        async def caught_up() -> bool:
            # Acknowledged at the city, not only applied at the province: the last answer is
            # on its way back when the province's watermark already shows everything.
            rows = await batch_rows(city)
            return await applied(province, city_id) >= n and all(r.acked for r in rows)

        await wait_until(caught_up, 30, "the backlog applied and acknowledged")
        # (More single-batch attempts may fail while the province starts.) The first answered
        # one carries one batch, then full transfers again, each batch once.
        after = [len(_first_seqs(body)) for body in transport.answered]
        assert after[0] == 1
        assert after[1] == per_transfer
        assert sum(after) == n // per_batch
        assert queue.state.failures == 0
    finally:
        await net.stop_all()


async def test_a_push_sealed_ahead_is_sent_only_while_it_is_still_the_next_one(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    per_batch, per_transfer = 10, 2
    net, province_id, city_id = await limited_net(tmp_path, database_for, per_batch, per_transfer)
    province = await net.start(province_id)
    # Signatures over the bytes only: otherwise the push sealed during the first one is made
    # again once the first answer says digest signatures are accepted (ADR 0016).
    province.receiver.gate.accepts_digest = False
    city = net.open(city_id)  # not started: the test drives its queue by hand
    # About the queue cutting as it sends (records written without full batches signed at
    # ingest, as `lsnet import` writes them).
    city.store.cut = None
    queue = city.upstream
    assert queue is not None
    transport = BodyTransport(queue.transport)
    queue.transport = transport
    try:
        await city.ingest(valid_records(city_id, 100, seed=7))
        assert await queue.transfer_once() is True
        ahead = queue._ready
        assert ahead is not None  # the second transfer was read and sealed meanwhile
        assert _first_seqs(ahead.sealed[1]) == [21, 31]
        assert await queue.transfer_once() is True
        assert transport.bodies[1] is ahead.sealed[1]  # sent as sealed, not made again
        ahead = queue._ready
        assert ahead is not None and _first_seqs(ahead.sealed[1]) == [41, 51]

        # Something changed behind the queue's back (here: the first of those batches was
        # acknowledged): the sealed push is no longer the next one and is not sent.
        def ack_first(conn: Connection) -> None:
            conn.execute(
                update(batches).where(batches.c.id == ahead.pending[0].id).values(acked=True)
            )

        await city.db.write(ack_first)
        assert await queue.transfer_once() is True
        assert transport.bodies[2] is not ahead.sealed[1]
        assert _first_seqs(transport.bodies[2]) == [51]  # the only other batch cut so far
        # 41-50 never came: the province answers with a gap and its watermark, and the city
        # takes back the acknowledgement planted above and sends the rest.
        assert await applied(province, city_id) == 40
        while await queue.transfer_once():
            assert len(transport.bodies) <= 10, "does not converge"
        assert await applied(province, city_id) == 100
    finally:
        await city.stop()
        await net.stop_all()
