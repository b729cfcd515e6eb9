"""More than one push on the way to the parent (`[sync] pushes_in_flight`, ADR 0015), over real
HTTP on both backends: the next push leaves before the previous one is answered, answers are acted
on in the order the pushes left, a failed push abandons the ones sent after it without losing or
doubling a record, and the parent hands pushes to its apply process one at a time, in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from node.app import Node
from sync.errors import PeerUnavailable
from sync.sender import UpstreamQueue
from sync.wire import BatchStatus, Push, Watermark
from tests.sync.helpers import valid_records
from tests.sync.test_attacks import Scene, open_scene
from tests.sync.test_sender import _first_seqs, applied, batch_rows, limited_net, sample

GATE_S = 10.0  # how long a gate waits for what must happen before it gives up (then: fail)
PER_BATCH, PER_TRANSFER, RECORDS = 10, 2, 100


class GatedTransport:
    """The queue's own transport, with a hook around each post (numbered from 1) and the bytes of
    every push kept."""

    def __init__(self, city: Node, parent: str) -> None:
        self.city, self.parent = city, parent
        self.inner: Any = None  # the queue's own transport (set by `window`)
        self.bodies: list[bytes] = []
        self.posted: dict[int, asyncio.Event] = {}
        self.answered: dict[int, asyncio.Event] = {}
        self.in_flight = 0
        self.most_in_flight = 0

    def event(self, table: dict[int, asyncio.Event], n: int) -> asyncio.Event:
        return table.setdefault(n, asyncio.Event())

    async def hold(self, n: int, answer: bytes) -> bytes:
        """What post `n` does with its answer before returning it (override in a test)."""
        return answer

    def leaving(self, n: int) -> None:
        """Called as post `n` leaves (override in a test)."""

    async def post(self, peer: str, url: str, body: bytes) -> bytes:
        self.bodies.append(body)
        n = len(self.bodies)
        self.leaving(n)
        self.event(self.posted, n).set()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            answer: bytes = await self.inner.post(peer, url, body)
            self.event(self.answered, n).set()
            return await self.hold(n, answer)
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        await self.inner.close()


async def drain(queue: Any, most: int = 20) -> None:
    while await queue.transfer_once():
        assert queue.transfers <= most, "the queue does not converge"


def sent_seqs(bodies: Sequence[bytes]) -> list[int]:
    return [seq for body in bodies for seq in _first_seqs(body)]


@dataclass
class Window:
    """A running province and a city (not started: the test drives its queue by hand) with two
    pushes in flight (unless `window` is told otherwise), small batches and transfers, and the
    test's transport on the queue."""

    province: Node
    city: Node
    province_id: str
    city_id: str
    queue: UpstreamQueue
    transport: GatedTransport


@asynccontextmanager
async def window(
    tmp_path: Path,
    database_for: Callable[[str], str],
    transport_for: Callable[[Node, str], GatedTransport],
    in_flight: int = 2,
) -> AsyncIterator[Window]:
    """`transport_for(city, province_id)` wraps the queue's own transport."""
    net, province_id, city_id = await limited_net(
        tmp_path, database_for, PER_BATCH, PER_TRANSFER, in_flight=in_flight
    )
    province = await net.start(province_id)
    city = net.open(city_id)
    queue = city.upstream
    assert queue is not None
    transport = transport_for(city, province_id)
    transport.inner = queue.transport
    queue.transport = transport
    try:
        yield Window(province, city, province_id, city_id, queue, transport)
    finally:
        await city.stop()
        await net.stop_all()


async def test_the_next_push_leaves_before_the_previous_one_is_answered(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    gauge = "lsnet_sync_pushes_in_flight"
    seen: list[float] = []

    class FirstWaitsForSecond(GatedTransport):
        async def hold(self, n: int, answer: bytes) -> bytes:
            if n == 1:  # push 2 must leave while push 1's answer is still held here
                await asyncio.wait_for(self.event(self.posted, 2).wait(), GATE_S)
            return answer

        def leaving(self, n: int) -> None:
            if n == 2:  # push 1 is not answered yet: operators see both on the way
                seen.append(sample(self.city, gauge, peer=self.parent))

    async with window(tmp_path, database_for, FirstWaitsForSecond) as w:
        await w.city.ingest(valid_records(w.city_id, RECORDS, seed=11))
        await drain(w.queue)
        assert w.transport.most_in_flight == 2
        assert seen == [2.0]
        assert sample(w.city, gauge, peer=w.province_id) == 0.0
        assert w.queue.transfers == RECORDS // (PER_BATCH * PER_TRANSFER)
        assert await applied(w.province, w.city_id) == RECORDS
        assert all(r.acked for r in await batch_rows(w.city))
        # Every batch went once and was applied once.
        seqs = sent_seqs(w.transport.bodies)
        assert sorted(seqs) == list(range(1, RECORDS + 1, PER_BATCH)) == seqs
        assert received(w, "applied") == RECORDS // PER_BATCH
        assert received(w, "duplicate") == 0


def received(w: Window, status: str) -> float:
    name = "lsnet_sync_batches_received_total"
    return sample(w.province, name, origin=w.city_id, status=status)


async def test_answers_are_acted_on_in_the_order_the_pushes_left(
    tmp_path: Path, database_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class SecondAnswerFirst(GatedTransport):
        async def hold(self, n: int, answer: bytes) -> bytes:
            if n == 1:  # the first answer reaches the queue after the second one
                await asyncio.wait_for(self.event(self.answered, 2).wait(), GATE_S)
            return answer

    async with window(tmp_path, database_for, SecondAnswerFirst) as w:
        acks: list[int] = []
        real_apply_acks = w.queue.store.apply_acks

        async def recording(marks: Sequence[Watermark]) -> tuple[int, int]:
            acks.append(max(m.seq for m in marks if m.origin == w.city_id))
            acked, requeued = await real_apply_acks(marks)
            assert requeued == 0, "an acknowledgement went backwards"
            return acked, requeued

        monkeypatch.setattr(w.queue.store, "apply_acks", recording)
        await w.city.ingest(valid_records(w.city_id, RECORDS, seed=12))
        await drain(w.queue)
        step = PER_BATCH * PER_TRANSFER
        assert acks == list(range(step, RECORDS + 1, step))
        assert await applied(w.province, w.city_id) == RECORDS
        assert all(r.acked for r in await batch_rows(w.city))
        assert sent_seqs(w.transport.bodies) == list(range(1, RECORDS + 1, PER_BATCH))


async def test_a_failed_push_abandons_the_ones_sent_after_it(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    class FirstFails(GatedTransport):
        async def post(self, peer: str, url: str, body: bytes) -> bytes:
            if not self.bodies:  # push 1 is lost once push 2 is on its way
                self.bodies.append(body)
                await asyncio.wait_for(self.event(self.posted, 2).wait(), GATE_S)
                raise PeerUnavailable(peer, "connection reset (test)")
            return await super().post(peer, url, body)

    async with window(tmp_path, database_for, FirstFails) as w:
        await w.city.ingest(valid_records(w.city_id, RECORDS, seed=13))
        with pytest.raises(PeerUnavailable):
            await w.queue.transfer_once()
        assert not w.queue._ahead, "the push sent after the failed one was not abandoned"
        assert not any(r.acked for r in await batch_rows(w.city))
        # Push 2 may or may not have reached the province: without push 1 it is a gap there,
        # and nothing of it is applied.
        assert await applied(w.province, w.city_id) == 0
        await drain(w.queue)
        assert await applied(w.province, w.city_id) == RECORDS
        assert all(r.acked for r in await batch_rows(w.city))
        assert received(w, "applied") == RECORDS // PER_BATCH


async def test_the_parent_hands_pushes_to_its_apply_process_one_at_a_time(
    tmp_path: Path, database_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Push 1 is held between its verification and its commit until push 2 has arrived; push 2
    waits for push 1 to be handed over whole. (Interleaved, the apply process would see two jobs
    at once and push 1 would fail.)"""
    async with open_scene(tmp_path, database_for, sync={"apply_process": True}) as scene:
        await _two_pushes_through_the_apply_process(scene, monkeypatch)


async def _two_pushes_through_the_apply_process(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = scene.province.receiver
    worker = receiver.apply_worker
    assert worker is not None and worker.running
    arrived: list[asyncio.Event] = [asyncio.Event(), asyncio.Event()]
    real_is_repair = receiver._is_repair
    real_verify_all = receiver._verify_all

    def noting(push: Push) -> bool:
        arrived[len([e for e in arrived if e.is_set()])].set()
        return real_is_repair(push)

    async def holding_the_first(push: Push, feed: Any = None) -> Any:
        out = await real_verify_all(push, feed)
        if not arrived[1].is_set():  # push 1: keep its job open until push 2 is here
            await asyncio.wait_for(arrived[1].wait(), GATE_S)
        return out

    monkeypatch.setattr(receiver, "_is_repair", noting)
    monkeypatch.setattr(receiver, "_verify_all", holding_the_first)
    b1, b2, b3, b4 = await scene.batches(scene.a, 40, per_batch=10)
    first = asyncio.ensure_future(scene.post(scene.seal([b1, b2])))
    await asyncio.wait_for(arrived[0].wait(), GATE_S)
    second = asyncio.ensure_future(scene.post(scene.seal([b3, b4])))
    (s1, a1), (s2, a2) = await asyncio.wait_for(asyncio.gather(first, second), 3 * GATE_S)
    assert (s1, s2) == (200, 200)
    assert [r.status for r in scene.reply(a1).results] == [BatchStatus.APPLIED] * 2
    assert [r.status for r in scene.reply(a2).results] == [BatchStatus.APPLIED] * 2
    assert await scene.counts() == {"records": 40, "batches": 4, "watermarks": 1}
    assert worker.running


@pytest.mark.parametrize("in_flight", [2, 4])
async def test_pushes_that_overtake_one_another_still_converge(
    tmp_path: Path, database_for: Callable[[str], str], in_flight: int
) -> None:
    """Push 2 reaches the province after the pushes behind it (its connection was slower):
    those are gaps there. Every batch still arrives, each applied once, in a bounded number of
    transfers."""

    class SecondArrivesLast(GatedTransport):
        async def post(self, peer: str, url: str, body: bytes) -> bytes:
            if len(self.bodies) == 1:  # this is push 2: let the ones behind it go first
                self.bodies.append(body)
                n = len(self.bodies)
                self.event(self.posted, n).set()
                await asyncio.wait_for(self.event(self.answered, 3).wait(), GATE_S)
                answer: bytes = await self.inner.post(peer, url, body)
                self.event(self.answered, n).set()
                return answer
            return await super().post(peer, url, body)

    async with window(tmp_path, database_for, SecondArrivesLast, in_flight) as w:
        await w.city.ingest(valid_records(w.city_id, RECORDS, seed=14))
        await drain(w.queue, most=3 * RECORDS // (PER_BATCH * PER_TRANSFER))
        assert await applied(w.province, w.city_id) == RECORDS
        assert all(r.acked for r in await batch_rows(w.city))
        assert received(w, "applied") == RECORDS // PER_BATCH
        assert received(w, "gap") > 0  # push 3 did overtake push 2
        # After the gap the queue went back to the oldest batch the province had not confirmed,
        # instead of going on after the pushes already sent (which were gaps too).
        seqs = sent_seqs(w.transport.bodies)
        assert seqs[: 2 * PER_TRANSFER] == [1, 11, 21, 31]
        assert seqs[-1] == RECORDS - PER_BATCH + 1 and len(seqs) < 2 * RECORDS // PER_BATCH
