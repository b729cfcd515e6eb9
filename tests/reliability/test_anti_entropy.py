"""Anti-entropy finds divergence created behind the system's back and repairs it without
operator action: the scheduled job of each child compares digests with its parent."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from sqlalchemy import Connection, delete, select, update

from node.datagen import generate_records
from node.schema import records
from sync.ae_store import differing_spans
from tests.support.final import final_check
from tests.support.history import History, write_through
from tests.support.network import TestNet, make_network, wait_until

AE: dict[str, object] = {"anti_entropy_interval_s": 0.3, "debounce_ms": 5, "retry_interval_s": 0.3}


async def _start(tmp_path: Path, **kwargs: Any) -> tuple[TestNet, History]:
    net = make_network(tmp_path, overrides=AE, **kwargs)
    await net.init_all()
    await net.start_all()
    history = History()
    for i, city in enumerate(net.city_ids()):
        await write_through(history, net.nodes[city], "w", generate_records(city, 600, seed=i))
    await net.wait_converged()
    return net, history


def _delete_one(origin: str) -> Any:
    def body(conn: Connection) -> str:
        key: str = conn.execute(
            select(records.c.key).where(records.c.owner == origin).order_by(records.c.seq).limit(1)
        ).scalar_one()
        conn.execute(delete(records).where(records.c.owner == origin, records.c.key == key))
        return key

    return body


def _change_one(origin: str) -> Any:
    def body(conn: Connection) -> None:
        key = conn.execute(
            select(records.c.key).where(records.c.owner == origin).order_by(records.c.seq.desc())
        ).first()
        assert key is not None
        conn.execute(
            update(records)
            .where(records.c.owner == origin, records.c.key == key.key)
            .values(hash="0" * 64, payload="{}")
        )

    return body


async def _same_as_origin(net: TestNet, holder: str, origin: str) -> bool:
    own = (await net.digests(origin))[origin]
    return (await net.digests(holder)).get(origin) == own


async def test_row_deleted_at_province_is_found_and_repaired(tmp_path: Path) -> None:
    net, history = await _start(tmp_path, cities_per_province=1)
    city, province = net.city_ids()[0], net.province_ids()[0]
    try:
        await net.nodes[province].db.write(_delete_one(city))
        assert not await _same_as_origin(net, province, city)
        # No operator action: the city's scheduled comparison finds and repairs it.
        await wait_until(lambda: _same_as_origin(net, province, city), 10, "not repaired")
        ae = net.nodes[city].anti_entropy
        assert ae is not None
        # The province commits the repair before its answer reaches the city, which then counts
        # the repair and, when its comparison run ends, the run's outcome.
        repaired = f'lsnet_anti_entropy_repaired_batches_total{{peer="{province}"}}'

        def counted() -> bool:
            metrics = generate_latest(net.nodes[city].registry).decode()
            return repaired in metrics and 'outcome="divergent"' in metrics

        await wait_until(counted, 10, "the city did not count the repair and its run")
        await wait_until(
            lambda: ae.last is not None and ae.last.divergent == 0 and ae.last.equal >= 1,
            10,
            "comparison did not come back equal",
        )
        status = await net.nodes[city].status_dict()
        assert status["anti_entropy"]["divergent"] == 0
        report = await final_check(net, history)
        report.assert_green()
        # The repair shows in the apply log as a repair, not as a second push.
        assert report.by_name("exactly-once").ok
    finally:
        await net.stop_all()


async def test_changed_row_at_ministry_is_repaired_from_the_province_relay(
    tmp_path: Path,
) -> None:
    net, history = await _start(tmp_path, cities_per_province=2)
    city, province = net.city_ids()[1], net.province_ids()[0]
    try:
        # Keep the cities from repairing the province first: this is the province's job.
        await net.nodes[net.ministry_id].db.write(_change_one(city))
        await net.nodes[net.ministry_id].db.write(_delete_one(net.city_ids()[0]))
        assert not await _same_as_origin(net, net.ministry_id, city)
        await wait_until(
            lambda: _same_as_origin(net, net.ministry_id, city), 10, "ministry not repaired"
        )
        await wait_until(
            lambda: _same_as_origin(net, net.ministry_id, net.city_ids()[0]),
            10,
            "ministry not repaired",
        )
        province_ae = net.nodes[province].anti_entropy
        assert province_ae is not None
        (await final_check(net, history)).assert_green()
    finally:
        await net.stop_all()


async def test_province_restored_from_old_backup_is_refilled_without_new_writes(
    tmp_path: Path,
) -> None:
    net = make_network(
        tmp_path, cities_per_province=1, overrides={**AE, "anti_entropy_interval_s": 3600.0}
    )
    await net.init_all()
    await net.start_all()
    history = History()
    province, city = net.province_ids()[0], net.city_ids()[0]
    db_file = Path(net.configs[province].node.database.removeprefix("sqlite:///"))
    try:
        recs = generate_records(city, 400, seed=3)
        await write_through(history, net.nodes[city], "w", recs[:200])
        await net.wait_converged()
        await net.stop(province)
        backup = tmp_path / "backup"
        backup.mkdir()
        for f in db_file.parent.glob(db_file.name + "*"):
            shutil.copy2(f, backup / f.name)
        await net.start(province)
        await write_through(history, net.nodes[city], "w", recs[200:])
        await net.wait_converged()
        await net.stop(province)
        for f in db_file.parent.glob(db_file.name + "*"):
            f.unlink()
        for f in backup.iterdir():
            shutil.copy2(f, db_file.parent / f.name)
        await net.start(province)
        assert not await _same_as_origin(net, province, city)
        # The city writes nothing more; only its comparison can notice (fired here by hand,
        # as the scheduler would).
        await net.nodes[city].jobs.run_now("anti-entropy")
        ae = net.nodes[city].anti_entropy
        assert ae is not None and ae.last is not None and ae.last.in_flight == 1  # look again
        await net.nodes[city].jobs.run_now("anti-entropy")
        assert ae is not None and ae.last is not None
        assert ae.last.parent_behind == 1 and ae.last.requeued_batches >= 1
        await wait_until(lambda: _same_as_origin(net, province, city), 15, "not refilled")
        (await final_check(net, history)).assert_green()
    finally:
        await net.stop_all()


def test_differing_spans_cover_changed_and_one_sided_buckets() -> None:
    a = {0: b"x" * 32, 1: b"y" * 32, 3: b"z" * 32}
    b = {0: b"x" * 32, 1: b"Y" * 32, 2: b"w" * 32}
    assert differing_spans(a, b) == [(256, 511), (512, 767), (768, 1023)]
    assert differing_spans(a, dict(a)) == []
