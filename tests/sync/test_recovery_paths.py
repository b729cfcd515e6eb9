"""Sync triggers and recovery paths that need no operator: a local write is pushed without
waiting for the retry job; a parent restored from an old backup gets the missing batches again."""

from __future__ import annotations

import shutil
from pathlib import Path

from node.datagen import generate_records
from sync.scrub import scrub
from tests.support.network import make_network, wait_until


async def test_local_write_is_pushed_without_the_retry_job(tmp_path: Path) -> None:
    # The retry job runs only once an hour here, so only the debounced push can deliver.
    net = make_network(
        tmp_path, cities_per_province=1, overrides={"retry_interval_s": 3600.0, "debounce_ms": 20}
    )
    await net.init_all()
    await net.start_all()
    try:
        city = net.city_ids()[0]
        queue = net.nodes[city].upstream
        assert queue is not None
        before = queue.transfers
        await net.ingest(city, generate_records(city, 10, seed=5))
        await net.wait_converged(timeout_s=10)
        assert queue.transfers > before
    finally:
        await net.stop_all()


async def test_parent_restored_from_old_backup_is_refilled(tmp_path: Path) -> None:
    net = make_network(tmp_path, cities_per_province=1)
    await net.init_all()
    await net.start_all()
    province = net.province_ids()[0]
    city = net.city_ids()[0]
    db_file = Path(net.configs[province].node.database.removeprefix("sqlite:///"))
    try:
        records = generate_records(city, 400, seed=9)
        await net.ingest(city, records[:200])
        await net.wait_converged()
        # Back up the province (stopped, so the copy is consistent), then sync more.
        await net.stop(province)
        backup = tmp_path / "province-backup"
        backup.mkdir()
        for f in db_file.parent.glob(db_file.name + "*"):
            shutil.copy2(f, backup / f.name)
        await net.start(province)
        await net.ingest(city, records[200:])
        await net.wait_converged()
        # Disaster: the province comes back from the old backup.
        await net.stop(province)
        for f in db_file.parent.glob(db_file.name + "*"):
            f.unlink()
        for f in backup.iterdir():
            shutil.copy2(f, db_file.parent / f.name)
        await net.start(province)
        held = (await net.digests(province)).get(city)
        assert held is not None and held.count == 200  # really restored to the old state
        # A new change makes the city push; the province's gap answer makes it resend the rest.
        await net.ingest(city, generate_records(city, 401, seed=9)[400:])

        async def province_complete() -> bool:
            got = (await net.digests(province)).get(city)
            return got is not None and got.count == 401

        await wait_until(province_complete, 30, "province was not refilled")
        await net.wait_converged()
        own = (await net.digests(city))[city]
        assert (await net.digests(province))[city] == own
        assert (await net.digests(net.ministry_id))[city] == own
        ministry = net.nodes[net.ministry_id]
        report = await scrub(ministry.sync_store, ministry.config.subtree_keys())
        assert report.ok, report.problems
        assert report.by_origin[city] == (await net.nodes[city].store.meta()).last_seq
    finally:
        await net.stop_all()


async def test_reinstalled_parent_gets_everything_again(tmp_path: Path) -> None:
    """The province lost its database and was re-initialised empty: its gap answer (it has no
    watermark for the city at all) makes the city resend from seq 1."""
    net = make_network(tmp_path, cities_per_province=1)
    await net.init_all()
    await net.start_all()
    province = net.province_ids()[0]
    city = net.city_ids()[0]
    db_file = Path(net.configs[province].node.database.removeprefix("sqlite:///"))
    try:
        records = generate_records(city, 301, seed=4)
        await net.ingest(city, records[:300])
        await net.wait_converged()
        await net.stop(province)
        for f in db_file.parent.glob(db_file.name + "*"):
            f.unlink()
        fresh = net.open(province)
        await fresh.init_database()
        await fresh.stop()
        await net.start(province)
        await net.ingest(city, records[300:])

        async def province_complete() -> bool:
            got = (await net.digests(province)).get(city)
            return got is not None and got.count == 301

        await wait_until(province_complete, 30, "re-installed province was not refilled")
        await net.wait_converged()
        own = (await net.digests(city))[city]
        assert (await net.digests(net.ministry_id))[city] == own
    finally:
        await net.stop_all()
