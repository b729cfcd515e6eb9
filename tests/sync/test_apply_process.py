"""Received pushes written by the apply process (`[sync] apply_process`, ADR 0014), over real
HTTP on both backends: the same answers and the same rows as in-process apply, nothing of a
refused push written (its first batches were already written in the child and are rolled back),
and a killed apply process costs one retried push, never a record."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from node.datagen import generate_records
from node.db import sqlite_path
from sync.apply_worker import ApplyWorker, ApplyWorkerDown
from sync.scrub import scrub
from sync.verify import verify_batch
from sync.wire import BatchStatus, Code, parse_error_body
from tests.network_mgmt import test_held_records as held
from tests.network_mgmt.support import get_json
from tests.support.network import make_network, wait_until
from tests.sync.test_attacks import Scene, open_scene


@pytest.fixture
async def scene(tmp_path: Path, database_for: Callable[[str], str]) -> AsyncIterator[Scene]:
    async with open_scene(tmp_path, database_for, sync={"apply_process": True}) as opened:
        yield opened


def worker_of(scene: Scene) -> ApplyWorker:
    worker = scene.province.receiver.apply_worker
    assert worker is not None and worker.running, "the province should have its apply process"
    return worker


async def test_push_is_written_by_the_apply_process(scene: Scene) -> None:
    worker = worker_of(scene)
    status = await scene.province.status_dict()
    assert status["apply_process"] == {"running": True, "pid": worker.pid}
    batches = await scene.batches(scene.a, 30, per_batch=10)
    status, answer = await scene.post(scene.seal(batches))
    assert status == 200
    reply = scene.reply(answer)
    assert [r.status for r in reply.results] == [BatchStatus.APPLIED] * 3
    epoch = (await scene.cities[scene.a].store.meta()).epoch
    assert [(w.origin, w.epoch, w.seq) for w in reply.watermarks] == [(scene.a, epoch, 30)]
    assert await scene.counts() == {"records": 30, "batches": 3, "watermarks": 1}
    own = (await scene.cities[scene.a].store.origin_digests())[scene.a]
    assert (await scene.province.store.origin_digests())[scene.a] == own
    assert worker.running
    # The same batches again: duplicates, nothing written twice.
    status, answer = await scene.post(scene.seal(batches))
    assert status == 200
    assert [r.status for r in scene.reply(answer).results] == [BatchStatus.DUPLICATE] * 3
    assert await scene.counts() == {"records": 30, "batches": 3, "watermarks": 1}


async def test_a_bad_later_batch_rolls_back_the_earlier_ones(scene: Scene) -> None:
    worker_of(scene)
    first, second, third = await scene.batches(scene.a, 30, per_batch=10)
    tampered = dataclasses.replace(third, body=third.body.replace(b"33", b"34", 1))
    # Batches 0 and 1 are verified and handed to the apply process before batch 2 fails.
    await scene.refused(scene.seal([first, second, tampered]), 422, Code.BAD_DIGEST, batch=2)
    assert (await scene.counts())["records"] == 0
    # The apply process is still usable: the sound push goes through afterwards.
    status, answer = await scene.post(scene.seal([first, second, third]))
    assert status == 200
    assert [r.status for r in scene.reply(answer).results] == [BatchStatus.APPLIED] * 3
    assert (await scene.counts())["records"] == 30


async def test_gap_and_order_are_judged_in_the_apply_process(scene: Scene) -> None:
    worker_of(scene)
    b1, b2 = await scene.batches(scene.a, 20, per_batch=10)
    status, answer = await scene.post(scene.seal([b2]))
    assert status == 200
    (result,) = scene.reply(answer).results
    assert (result.status, result.need_seq) == (BatchStatus.GAP, 1)
    assert (await scene.counts())["records"] == 0
    status, answer = await scene.post(scene.seal([b1, b2]))
    assert [r.status for r in scene.reply(answer).results] == [BatchStatus.APPLIED] * 2


async def test_killed_apply_process_costs_a_retry_not_a_record(scene: Scene) -> None:
    worker = worker_of(scene)
    batches = await scene.batches(scene.a, 20, per_batch=10)
    registry = scene.province.registry
    assert registry.get_sample_value("lsnet_sync_apply_process") == 1.0
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    await wait_until(lambda: not worker.running, 10.0, "the apply process did not die")
    # Operators see it: the gauge drops once the node notices, and the end is counted.
    await wait_until(
        lambda: registry.get_sample_value("lsnet_sync_apply_process") == 0.0,
        10.0,
        "lsnet_sync_apply_process stayed 1",
    )
    assert registry.get_sample_value("lsnet_sync_apply_process_ended_total") == 1.0
    # Until a new apply process is up the province writes pushes itself: nothing was lost and
    # nothing is doubled.
    killed = worker.pid
    first, second = batches
    status, answer = await scene.post(scene.seal([first]))
    assert status == 200, parse_error_body(answer)
    assert [r.status for r in scene.reply(answer).results] == [BatchStatus.APPLIED]
    assert await scene.counts() == {"records": 10, "batches": 1, "watermarks": 1}
    # The node starts a new apply process by itself, and it writes the next push.
    await wait_until(
        lambda: worker.running and registry.get_sample_value("lsnet_sync_apply_process") == 1.0,
        30.0,
        "the apply process was not restarted",
    )
    assert worker.pid != killed
    status, answer = await scene.post(scene.seal([first, second]))
    assert status == 200, parse_error_body(answer)
    assert [r.status for r in scene.reply(answer).results] == [
        BatchStatus.DUPLICATE,
        BatchStatus.APPLIED,
    ]
    assert await scene.counts() == {"records": 20, "batches": 2, "watermarks": 1}


async def test_apply_process_dying_mid_push_fails_the_job_and_writes_nothing(
    scene: Scene,
) -> None:
    """The child dies after taking a batch but before the commit: the push's job fails with
    ApplyWorkerDown (the receiver answers 503, the sender retries) and nothing is written."""
    worker = worker_of(scene)
    (batch,) = await scene.batches(scene.a, 10, per_batch=10)
    cfg = scene.province.config
    verified = verify_batch(
        batch,
        sender=scene.a,
        receiver=cfg.node_id,
        keys=scene.province.keyring,
        route_of=cfg.route_of,
        limits=cfg.limits,
        rules_for=scene.province.validator_for_origin,
    )
    job = worker.begin(scene.now(), keep=False)
    job.feed(verified)
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    with pytest.raises(ApplyWorkerDown):
        await asyncio.wait_for(job.end([scene.a]), 30)
    assert not worker.running
    assert await scene.counts() == {"records": 0, "batches": 0, "watermarks": 0}


async def test_held_records_are_kept_by_the_apply_process(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    """A province whose rules refuse some records (hold policy): the apply process writes the
    rest of each batch and keeps the refused records in held_changes."""
    net = held._network(tmp_path, database_for, {})
    province_id, city_id = net.province_ids()[0], net.city_ids()[0]
    cfg = net.configs[province_id]
    net.configs[province_id] = cfg.model_copy(
        update={"sync": cfg.sync.model_copy(update={"apply_process": True})}
    )
    await net.init_all()
    await net.start_all()
    try:
        province, city = net.nodes[province_id], net.nodes[city_id]
        assert province.receiver.apply_worker is not None
        assert province.receiver.apply_worker.running
        await held._without_type31(province)
        objs = held._records(city_id, 60, seed=3, back_payments=4)
        await net.ingest(city_id, objs)
        await net.wait_converged(30)
        total = await held._record_count(city, city_id)
        assert await held._record_count(province, city_id) == total - held._bad(objs)
        op = await held._token(province, "alice")
        status, doc = await get_json(province, "/v1/admin/held", token=op)
        assert status == 200
        assert doc["counts"] == {"held": 4, "released": 0, "skipped": 0}
    finally:
        await net.stop_all()


async def test_tree_relays_through_apply_processes(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    """Province and ministry both write through their apply processes; the ministry still
    verifies every record back to its city (the province kept the signed bytes for relay)."""
    net = make_network(tmp_path, database_for=database_for, overrides={"apply_process": True})
    await net.init_all()
    await net.start_all()
    pids = []
    try:
        for node_id in [net.ministry_id, *net.province_ids()]:
            worker = net.nodes[node_id].receiver.apply_worker
            assert worker is not None and worker.running and worker.pid is not None
            pids.append(worker.pid)
        for i, city in enumerate(net.city_ids()):
            await net.ingest(city, generate_records(city, 400, seed=i))
        await net.wait_converged()
        ministry = await net.digests(net.ministry_id)
        for city in net.city_ids():
            assert ministry[city] == (await net.digests(city))[city]
        node = net.nodes[net.ministry_id]
        report = await scrub(node.sync_store, node.config.subtree_keys())
        assert report.ok, report.problems
        assert report.changes == 800
    finally:
        await net.stop_all()
    for pid in pids:  # stopping a node stops (and reaps) its apply process
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_an_answer_for_too_few_batches_is_a_retry_not_a_crash(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the apply process ever answer for fewer batches than were handed over, the push is
    answered 503 "send again" (never a 500 with a traceback), and the retry is judged by the
    watermark: nothing is lost or doubled."""
    from sync.apply_worker import Applied, ApplyJob

    worker_of(scene)
    real_end = ApplyJob.end

    def short_answer(job: ApplyJob, subtree: list[str]) -> asyncio.Future[Applied]:
        real = real_end(job, subtree)
        out: asyncio.Future[Applied] = asyncio.get_running_loop().create_future()

        def cut_short(done: asyncio.Future[Applied]) -> None:
            a = done.result()
            out.set_result(Applied(a.results[:-1], a.marks, a.seconds))

        real.add_done_callback(cut_short)
        return out

    batches = await scene.batches(scene.a, 20, per_batch=10)
    monkeypatch.setattr(ApplyJob, "end", short_answer)
    status, answer = await scene.post(scene.seal(batches))
    assert status == 503
    assert parse_error_body(answer)[0] == Code.INTERNAL.value
    monkeypatch.undo()
    status, answer = await scene.post(scene.seal(batches))
    assert status == 200
    assert [r.status for r in scene.reply(answer).results] == [BatchStatus.DUPLICATE] * 2
    assert await scene.counts() == {"records": 20, "batches": 2, "watermarks": 1}


async def test_operators_see_an_apply_process_that_is_down(scene: Scene) -> None:
    """The node's status carries its apply process's state (heartbeat `extra`), so the tree and
    the alerts — here the province's own, as its parent would get them — show it."""
    worker = worker_of(scene)
    province = scene.province

    async def own_entry() -> dict[str, object]:
        _, tree = await get_json(province, "/v1/network/tree")
        (entry,) = [n for n in tree["nodes"] if n["node_id"] == province.config.node_id]
        return dict(entry)

    async def alert_names() -> list[str]:
        _, alerts = await get_json(province, "/v1/network/alerts")
        return [a["alert"] for a in alerts["alerts"] if a["node"] == province.config.node_id]

    assert (await own_entry())["apply_process"] == 1
    assert "apply_process_down" not in await alert_names()
    province._apply_delay = 3600.0  # the next restart is then a minute away (the longest pause)
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    await wait_until(lambda: not worker.running, 10.0, "the apply process did not die")
    assert (await own_entry())["apply_process"] == 0
    assert "apply_process_down" in await alert_names()


def _records_in_the_file_alone(db: Path, tmp: Path) -> int:
    """Records of the database file without its WAL: what a checkpoint has copied back."""
    copy = tmp / "file-alone.db"
    shutil.copyfile(db, copy)
    conn = sqlite3.connect(copy)
    try:
        (count,) = conn.execute("SELECT count(*) FROM records").fetchone()
    except sqlite3.OperationalError:  # not even the table is in the file yet
        count = 0
    finally:
        conn.close()
        copy.unlink()
    return int(count)


async def _restart_with(worker: ApplyWorker, rows: int, idle_s: float) -> None:
    worker.checkpoint_rows, worker.checkpoint_idle_s = rows, idle_s
    await asyncio.to_thread(worker.start)  # a new child with these settings


@pytest.fixture
async def sqlite_scene(tmp_path: Path) -> AsyncIterator[Scene]:
    """The scene on SQLite files only: checkpoints are a SQLite matter."""
    (tmp_path / "db").mkdir()

    def database_for(node_id: str) -> str:
        return f"sqlite:///{tmp_path / 'db' / node_id}.db"

    async with open_scene(tmp_path, database_for, sync={"apply_process": True}) as opened:
        yield opened


async def test_the_wal_is_checkpointed_once_enough_rows_are_owed(
    sqlite_scene: Scene, tmp_path: Path
) -> None:
    """Not after every push: a push below the threshold stays in the WAL (no idle checkpoint
    here), the push that crosses it is copied back into the database file."""
    scene = sqlite_scene
    db = sqlite_path(scene.province.config.node.database)
    assert db is not None
    await _restart_with(worker_of(scene), rows=25, idle_s=3600.0)
    first, second, third = await scene.batches(scene.a, 30, per_batch=10)
    status, _ = await scene.post(scene.seal([first, second]))
    assert status == 200
    assert await scene.counts() == {"records": 20, "batches": 2, "watermarks": 1}
    assert _records_in_the_file_alone(db, tmp_path) == 0
    status, _ = await scene.post(scene.seal([third]))  # 30 rows owed: checkpoint after it
    assert status == 200
    await wait_until(
        lambda: _records_in_the_file_alone(db, tmp_path) == 30,
        10.0,
        "the WAL was not checkpointed once 25 rows were owed",
    )


async def test_an_idle_apply_process_checkpoints_the_wal(
    sqlite_scene: Scene, tmp_path: Path
) -> None:
    scene = sqlite_scene
    db = sqlite_path(scene.province.config.node.database)
    assert db is not None
    await _restart_with(worker_of(scene), rows=1_000_000, idle_s=0.0)
    batches = await scene.batches(scene.a, 20, per_batch=10)
    status, _ = await scene.post(scene.seal(batches))
    assert status == 200
    await wait_until(
        lambda: _records_in_the_file_alone(db, tmp_path) == 20,
        10.0,
        "the idle apply process did not checkpoint the WAL",
    )
