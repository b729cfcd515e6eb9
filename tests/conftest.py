"""Shared fixtures: database backends (SQLite always; PostgreSQL when LSNET_TEST_DATABASE_URL is
set, otherwise skipped with the reason shown)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.pg import SKIP_REASON, PgDatabases, pg_url


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
