"""Fixtures for real-process tests: a factory of process networks that kills every node it
started when the test ends, whatever happened."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hierarchy_config.model import Level
from tests.support.pg import SKIP_REASON, PgDatabases, pg_url
from tests.support.procs import ProcNetwork

# Sync settings that keep recovery after a restart quick (the defaults back off up to 120 s).
FAST_RETRY: dict[str, Any] = {
    "retry_interval_s": 0.5,
    "backoff_initial_s": 0.2,
    "backoff_max_s": 1.0,
    "request_timeout_s": 10.0,
}
# Small batches, one per transfer: a backlog takes many round trips, so a kill or a SIGTERM can
# land while one is in flight.
SMALL_TRANSFERS: dict[str, Any] = {"max_batch_changes": 20, "max_batches_per_transfer": 1}

# End-to-end probes every second (the default is 30 s): every process test runs with probes
# taking change-log seqs between the records, as production nodes do.
PROBES: dict[str, Any] = {"e2e_probe_interval_s": 1.0}

MakeNet = Callable[..., ProcNetwork]
UpperDatabases = Callable[[str, Level], str | None] | None


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def upper_database_for(request: pytest.FixtureRequest) -> Iterator[UpperDatabases]:
    """None (every node on SQLite), or a factory giving provinces and the ministry a fresh
    PostgreSQL database while cities stay on SQLite."""
    if request.param == "sqlite":
        yield None
        return
    url = pg_url()
    if url is None:
        pytest.skip(SKIP_REASON)
    dbs = PgDatabases(url)
    try:
        yield lambda node_id, level: None if level is Level.CITY else dbs.new()
    finally:
        dbs.close()


@pytest.fixture
def make_procnet(tmp_path: Path) -> Iterator[MakeNet]:
    made: list[ProcNetwork] = []

    def make(**kwargs: Any) -> ProcNetwork:
        tune = {"network": PROBES, **(kwargs.pop("tune", None) or {})}
        net = ProcNetwork.create(tmp_path / f"n{len(made)}", tune=tune, **kwargs)
        made.append(net)
        return net

    try:
        yield make
    finally:
        for net in made:
            net.close()
