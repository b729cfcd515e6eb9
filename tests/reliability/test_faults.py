"""City → province → ministry through each network fault of the fault proxy, then heal, then all
checkers green (reliability.md C2, C4). Real HTTP on 127.0.0.1, real SQLite files, real
signatures; the proxies sit on every child→parent link."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, func, select

from node.datagen import generate_records
from node.schema import apply_log
from sync.wire import PURPOSE_PUSH, Push, Sealed
from tests.support.faultnet import proxied_network
from tests.support.faultproxy import Fault, FaultProxy, read_message
from tests.support.final import final_check
from tests.support.history import History, write_through
from tests.support.network import TestNet, wait_until

# Faults that delay or disturb delivery but let it through; faults that lose the answer after
# the parent committed (the data goes through, no acknowledgement comes back); and faults that
# block delivery itself until healed.
PASSING = [Fault.LATENCY, Fault.SLOW_DRIP, Fault.DUPLICATE]
ANSWER_LOST = [Fault.DROP_RESPONSE, Fault.RESET_RESPONSE]
BLOCKING = [
    *ANSWER_LOST,
    Fault.RESET_REQUEST,
    Fault.CORRUPT,
    Fault.BLACKHOLE,
    Fault.REFUSE,
]


async def _write_round(net: TestNet, history: History, round_no: int, n: int = 15) -> None:
    for city in net.city_ids():
        recs = generate_records(city, n * (round_no + 1), seed=7)[n * round_no :]
        await write_through(history, net.nodes[city], f"round{round_no}", recs)


async def test_each_fault_then_heal_all_checkers_green(tmp_path: Path) -> None:
    net, links = await proxied_network(tmp_path, cities_per_province=2, seed=11)
    await net.init_all()
    await net.start_all()
    history = History()
    try:
        for round_no, fault in enumerate(PASSING + BLOCKING):
            city_links = [links.proxies[c] for c in net.city_ids()]
            for proxy in links.proxies.values():
                await proxy.set(fault)
            hits = {p.name: p.injected[fault.value] for p in city_links}
            await _write_round(net, history, round_no)
            if fault is not Fault.REFUSE:  # a refused link never sees a request

                def exercised(
                    f: Fault = fault, h: dict[str, int] = hits, ps: list[FaultProxy] = city_links
                ) -> bool:
                    return all(p.injected[f.value] > h[p.name] for p in ps)

                await wait_until(
                    exercised,
                    10,
                    f"{fault} was not exercised",
                )
            if fault in ANSWER_LOST:
                # The parents may well have applied (and passed on) the round; what cannot have
                # happened is an acknowledgement: every city still holds unacknowledged batches.
                for city in net.city_ids():
                    backlog = (await net.nodes[city].store.status()).backlog_changes
                    assert backlog > 0, f"{fault}: {city} got an acknowledgement"
            elif fault in BLOCKING:
                assert not await net.converged(), f"{fault} let the data through"
            healed = await links.heal_in_random_order()
            assert fault is Fault.PASS or healed
            await net.wait_converged(timeout_s=20)
        report = await final_check(net, history)
        report.assert_green()
        assert report.by_name("set").stats["accepted"] == len(PASSING + BLOCKING) * 15 * 2
    finally:
        await net.stop_all()
        await links.stop()


def _push_applies(conn: Connection, origin: str) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(apply_log)
            .where(apply_log.c.origin == origin, apply_log.c.kind == "push")
        ).scalar_one()
    )


async def test_lost_answer_after_commit_is_resent_and_applied_once(tmp_path: Path) -> None:
    """The key exactly-once case: the province commits, the answer never reaches the city; the
    city resends the same signed batches, the province acknowledges them as duplicates. A
    captured push replayed later is refused as a replay and applies nothing."""
    net, links = await proxied_network(tmp_path, cities_per_province=1)
    await net.init_all()
    await net.start_all()
    city, province = net.city_ids()[0], net.province_ids()[0]
    proxy = links.proxies[city]
    history = History()
    try:
        proxy.once(Fault.DROP_RESPONSE, Fault.DROP_RESPONSE)
        await write_through(history, net.nodes[city], "w", generate_records(city, 40, seed=1))
        await net.wait_converged(timeout_s=20)
        assert proxy.injected[Fault.DROP_RESPONSE.value] == 2
        assert proxy.requests >= 3  # two answers lost, then the resend that was answered
        db = net.nodes[province].db
        assert await db.read(_push_applies, city) == 1
        (await final_check(net, history)).assert_green()

        # Replay the first captured push byte for byte: refused, nothing applied again.
        first_push = next(r for r in proxy.captured if b"/v1/sync/push" in r.split(b"\r\n")[0])
        body = first_push.split(b"\r\n\r\n", 1)[1]
        push = Push.from_bytes(Sealed.from_bytes(body).envelope, max_batches=1000)
        assert push.sender == city and PURPOSE_PUSH
        answer = await proxy.replay(proxy.captured.index(first_push))
        status = int(answer.split(b" ", 2)[1])
        assert status == 401 and b"replay" in answer
        assert await db.read(_push_applies, city) == 1
        (await final_check(net, history)).assert_green()
    finally:
        await net.stop_all()
        await links.stop()


async def test_swizzle_partition_heals_in_random_order(tmp_path: Path) -> None:
    """Clog every link one by one while cities write, then unclog in a seeded random order."""
    net, links = await proxied_network(tmp_path, cities_per_province=2, seed=5)
    await net.init_all()
    await net.start_all()
    history = History()
    try:
        names = list(links.proxies)
        links.rng.shuffle(names)
        for i, name in enumerate(names):
            await links.partition([name], Fault.BLACKHOLE if i % 2 else Fault.REFUSE)
            await _write_round(net, history, i, n=10)
        assert not await net.converged()
        order = await links.heal_in_random_order()
        assert sorted(order) == sorted(names)
        await net.wait_converged(timeout_s=20)
        (await final_check(net, history)).assert_green()
    finally:
        await net.stop_all()
        await links.stop()


def test_read_message_handles_chunked_bodies() -> None:
    import asyncio

    async def run() -> bytes | None:
        reader = asyncio.StreamReader()
        reader.feed_data(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        reader.feed_eof()
        return await read_message(reader)

    raw = asyncio.run(run())
    assert raw is not None and raw.endswith(b"abc\r\n0\r\n\r\n")
