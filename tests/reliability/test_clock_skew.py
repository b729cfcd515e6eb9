"""A node whose clock ran ahead persisted a backoff deadline in its future; once its clock is
corrected it must not wait out the size of the error (found by the real-process skew scenario)."""

from __future__ import annotations

from pathlib import Path

from node.datagen import generate_records
from sync.store import LinkState
from tests.support.history import History, write_through
from tests.support.network import make_network

FAST: dict[str, object] = {"debounce_ms": 5, "backoff_initial_s": 0.05, "backoff_max_s": 0.4}


async def test_backoff_deadline_from_a_clock_that_ran_ahead_is_capped(tmp_path: Path) -> None:
    net = make_network(tmp_path, cities_per_province=1, overrides=FAST)
    await net.init_all()
    city, province = net.city_ids()[0], net.province_ids()[0]
    # As left behind by a run with the clock 15 minutes ahead: back off until "now + 900 s".
    node = net.open(city)
    now = node.clock.time_ms()
    await node.sync_store.save_link(
        LinkState(province, "backing_off", 3, now + 900_000, 0, "HTTP 401 stale", now)
    )
    await node.stop()
    await net.start_all()
    try:
        await write_through(History(), net.nodes[city], "w", generate_records(city, 10))
        await net.wait_converged(timeout_s=10)  # not 900 s
    finally:
        await net.stop_all()
