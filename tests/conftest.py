"""Shared fixtures: database backends (SQLite always; PostgreSQL when LSNET_TEST_DATABASE_URL is
set, otherwise skipped with the reason shown); under pytest-xdist, each worker's own loopback
ports, and the real-process tests kept on one worker."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node.demo import PORT_RANGE_ENV, ephemeral_low
from tests.support.pg import SKIP_REASON, PgDatabases, pg_url


def worker_port_range(worker: str, workers: int, whole: tuple[int, int]) -> tuple[int, int]:
    """Worker `gwN`'s slice [low, high) of `whole`: the workers' slices do not overlap."""
    index = int(worker.removeprefix("gw"))
    low, high = whole
    size = (high - low) // workers
    return low + index * size, low + (index + 1) * size


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, confine the ports each worker's tests pick (free_port_range, `lsnet
    simulate`, and the `lsnet` processes they start, which inherit the environment) to a slice of
    their own: ports are checked free, then bound, so two workers searching the same ports could
    both pick one in between. Below the kernel's ephemeral range, as without xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        return
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    whole = (10000, min(ephemeral_low(), 60000))
    if os.environ.get(PORT_RANGE_ENV):  # a range given for the whole run: share it out
        low, high = os.environ[PORT_RANGE_ENV].split("-", 1)
        whole = (int(low), int(high))
    low, high = worker_port_range(worker, workers, whole)
    os.environ[PORT_RANGE_ENV] = f"{low}-{high}"


PROCESS_TESTS = "tests/process/"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With `--dist load` (the default with -n), schedule like it, except that the real-process
    tests (tests/process: node processes, kill -9, SIGTERM) are one unit of work: they run one
    after another on one worker, as they did without xdist, while the other workers run the
    in-process tests; being the largest unit, they start first. Two of them at once on a
    2-core machine would mostly wait for each other.

    (`--dist loadgroup` with xdist_group marks would say the same, but pytest-xdist 3.8 marks a
    group by rewriting `item._nodeid`, which pytest 9.2 no longer reads: the groups are ignored.)
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ProcessTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return PROCESS_TESTS if nodeid.startswith(PROCESS_TESTS) else nodeid

    return ProcessTestsTogether(config, log)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_for(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """A factory: node id -> a fresh, empty database URL on the selected backend."""
    if request.param == "sqlite":
        (tmp_path / "db").mkdir()
        yield lambda node_id: f"sqlite:///{tmp_path / 'db' / node_id}.db"
        return
    url = pg_url()
    if url is None:
        pytest.skip(SKIP_REASON)
    dbs = PgDatabases(url)
    try:
        yield lambda node_id: dbs.new()
    finally:
        dbs.close()
