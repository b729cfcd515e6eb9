"""kill -9 of real node processes while records are written and pushed upward.

A network (1 ministry, 1 province, 2 cities) is laid out with `lsnet network init`, initialised
with `lsnet node init`, and every node runs as its own `lsnet node run` process. Writers post
generated records to the cities over HTTP in small chunks. A chunk answered 200 is *accepted* and
must end up at the province and the ministry; a chunk whose request got no answer (the city was
just killed) is *indeterminate* and is re-posted after the restart (identical records are
idempotent). At the end the copies must equal the cities' data exactly, and the ministry's batches
must cover every city's change log exactly once.

The seed (printed; set LSNET_CHAOS_SEED to replay the choices) picks the victims and the kill
points; the thread interleaving is up to the operating system.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from hierarchy_config.model import Level
from node.datagen import generate_records
from tests.process.conftest import FAST_RETRY, SMALL_TRANSFERS, MakeNet, UpperDatabases
from tests.process.consistency import assert_network_holds_exactly, natural_keys
from tests.support.procs import NodeProc, RequestFailed, chunked, poll

pytestmark = pytest.mark.process

RECORDS_PER_CITY = 1200
CHUNK = 30  # records per POST: 40 chunks per city
KILLS = 6
MAX_ATTEMPTS = 6  # posts of one chunk before the test gives up
WAIT_S = 60.0


def chaos_seed() -> int:
    seed = int(os.environ.get("LSNET_CHAOS_SEED") or secrets.randbits(32))
    print(f"chaos seed: {seed} (replay with LSNET_CHAOS_SEED={seed})")
    return seed


@dataclass
class WriterLog:
    city: str
    accepted: set[tuple[str, str]] = field(default_factory=set)
    indeterminate: int = 0  # requests that got no answer
    replayed_committed: int = 0  # re-posts that changed nothing: the lost attempt had committed


class Throttle:
    """Lets the writers post only up to a limit the chaos director sets, so each kill lands while
    writes are in progress, not after they have all finished."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.started = 0
        self.done = 0
        self.limit: float = 0
        self.finished_writers = 0
        self.failed = False

    def acquire(self) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: self.started < self.limit, timeout=WAIT_S)
            assert ok, "writer waited too long for the chaos director"
            self.started += 1

    def completed(self) -> None:
        with self.cond:
            self.done += 1
            self.cond.notify_all()

    def writer_exited(self, failed: bool) -> None:
        with self.cond:
            self.finished_writers += 1
            self.failed = self.failed or failed
            self.cond.notify_all()

    def wait_done(self, count: int, writers: int) -> int:
        """Wait until `count` chunks are answered (or the writers stopped); the number done."""
        with self.cond:
            ok = self.cond.wait_for(
                lambda: self.done >= count or self.failed or self.finished_writers == writers,
                timeout=WAIT_S,
            )
            assert ok, f"writers stuck at {self.done} chunks"
            return self.done

    def allow(self, limit: float) -> None:
        with self.cond:
            self.limit = limit
            self.cond.notify_all()


def write_city(
    city: NodeProc, chunks: Sequence[Sequence[dict[str, Any]]], gate: Throttle
) -> WriterLog:
    log = WriterLog(city.node_id)
    failed = True
    try:
        for chunk in chunks:
            gate.acquire()
            for attempt in range(MAX_ATTEMPTS):
                try:
                    answer = city.post_records(chunk)
                except RequestFailed:
                    log.indeterminate += 1
                    poll(city.healthy, WAIT_S, f"{city} did not come back after a failed post")
                    continue
                assert answer.status == 200, f"{city}: {answer}"
                if attempt > 0 and answer.body["changed"] == 0:
                    log.replayed_committed += 1
                log.accepted |= natural_keys(chunk)
                break
            else:
                raise AssertionError(f"{city}: a chunk failed {MAX_ATTEMPTS} times")
            gate.completed()
        failed = False
        return log
    finally:
        gate.writer_exited(failed)


def test_random_kill9_during_writes_loses_and_duplicates_nothing(
    upper_database_for: UpperDatabases, make_procnet: MakeNet
) -> None:
    """Cities on SQLite; the province and the ministry on SQLite or, as big centres run them,
    on PostgreSQL (when LSNET_TEST_DATABASE_URL is set)."""
    seed = chaos_seed()
    rng = random.Random(seed)
    net = make_procnet(
        tune={"sync": FAST_RETRY, "limits": {"max_batch_changes": 100}},
        database_for=upper_database_for,
    )
    net.start_all()
    cities = net.cities()
    data = {c.node_id: generate_records(c.node_id, RECORDS_PER_CITY, seed=7) for c in cities}
    # Every level dies at least once; the other victims are any node.
    victims = [
        rng.choice(cities),
        *net.by_level(Level.PROVINCE),
        net.ministry,
        *(rng.choice(list(net.nodes.values())) for _ in range(KILLS - 3)),
    ]
    rng.shuffle(victims)
    gate = Throttle()
    futures: list[Future[WriterLog]] = []
    with ThreadPoolExecutor(max_workers=len(cities)) as pool:
        for city in cities:
            chunks = list(chunked(data[city.node_id], CHUNK))
            futures.append(pool.submit(write_city, city, chunks, gate))
        try:
            for number, victim in enumerate(victims, start=1):
                with gate.cond:
                    kill_at = gate.done + rng.randint(1, 4)
                gate.allow(kill_at + rng.randint(2, 4))  # writes go on a little past the kill
                done = gate.wait_done(kill_at, writers=len(cities))
                if gate.failed:
                    break
                print(f"kill {number}: -9 {victim} after {done} chunks")
                victim.kill9()
                victim.start()
        finally:
            gate.allow(float("inf"))
        logs = [f.result(timeout=WAIT_S * 2) for f in futures]

    for log in logs:
        print(
            f"city {log.city}: {len(log.accepted)} accepted, {log.indeterminate} indeterminate "
            f"posts, {log.replayed_committed} re-posts found the chunk already committed"
        )
        assert len(log.accepted) == RECORDS_PER_CITY  # datagen gives each record its own key
    assert sum(n.kills for n in net.nodes.values()) == KILLS
    assert_network_holds_exactly(net, {log.city: len(log.accepted) for log in logs})


def test_province_killed_mid_push_repeatedly(make_procnet: MakeNet) -> None:
    """Each round: the cities take new records while the province is down, the province comes
    back, and is killed again as soon as it has applied part (not all) of a city's backlog."""
    rounds = 4
    per_round = 200
    net = make_procnet(tune={"sync": FAST_RETRY, "limits": SMALL_TRANSFERS})
    net.start_all()
    province = net.provinces()[0]
    cities = net.cities()
    city = cities[0]
    data = {c.node_id: generate_records(c.node_id, rounds * per_round, seed=11) for c in cities}
    province.kill9()
    mid_push_marks = []
    for r in range(rounds):
        for c in cities:
            for chunk in chunked(data[c.node_id][r * per_round : (r + 1) * per_round], 100):
                answer = c.post_records(chunk)
                assert answer.status == 200, answer
        doc = city.status()
        epoch, last = doc["epoch"], doc["local_last_seq"]
        province.start()
        before = province.watermark(city.node_id, epoch)
        assert before < last

        def mid_push(
            before: int = before, epoch: str = epoch, last: int = last, r: int = r
        ) -> int | None:
            mark = province.watermark(city.node_id, epoch)
            assert mark < last, f"round {r}: the whole backlog arrived before the kill"
            return mark if mark > before else None

        mark = poll(mid_push, WAIT_S, f"round {r}: the city never resumed pushing", 0.005)
        province.kill9()
        mid_push_marks.append((before, mark, last))
    print(f"province watermark of {city.node_id} at each kill (from, at, of): {mid_push_marks}")
    assert province.kills == rounds + 1
    province.start()
    expected = {c.node_id: len(natural_keys(data[c.node_id])) for c in cities}
    assert expected == {c.node_id: rounds * per_round for c in cities}
    assert_network_holds_exactly(net, expected)


def _apply_processes(pid: int) -> set[int]:
    """Live (not zombie) apply processes of node process `pid`, from /proc (multiprocessing's
    resource tracker is a child too, and is not one)."""
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            found.update(int(p) for p in fh.read().split())
    apply = set()
    for child in found:
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{child}/cmdline", "rb") as fh:
            if b"spawn_main" in fh.read() and _alive(child):
                apply.add(child)
    return apply


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_apply_process_dies_with_its_node(make_procnet: MakeNet) -> None:
    """A province writing through its apply process ([sync] apply_process) is killed mid-push:
    the apply process goes with it (its open transaction rolls back), the restarted province
    starts a new one, and every record is there exactly once."""
    rounds = 2
    per_round = 200
    net = make_procnet(
        cities_per_province=1,
        tune={"sync": {**FAST_RETRY, "apply_process": True}, "limits": SMALL_TRANSFERS},
    )
    net.start_all()
    province = net.provinces()[0]
    (city,) = net.cities()
    data = generate_records(city.node_id, rounds * per_round, seed=13)
    seen: set[int] = set()
    for r in range(rounds):
        assert province.proc is not None
        (child,) = _apply_processes(province.proc.pid)
        assert child not in seen
        seen.add(child)
        for chunk in chunked(data[r * per_round : (r + 1) * per_round], 100):
            assert city.post_records(chunk).status == 200
        epoch = city.status()["epoch"]
        poll(
            lambda epoch=epoch, r=r: province.watermark(city.node_id, epoch) > r * per_round,
            WAIT_S,
            f"round {r}: the province applied nothing",
            0.005,
        )
        province.kill9()
        poll(lambda child=child: not _alive(child), 10.0, "the apply process outlived its node")
        province.start()
    assert_network_holds_exactly(net, {city.node_id: len(natural_keys(data))})
