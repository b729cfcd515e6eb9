"""The Table objects in node/schema.py describe exactly what the migrations create."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from node.db import Database, head_revision
from node.schema import metadata
from tests.support.pg import SKIP_REASON, PgDatabases, pg_url


def test_migrated_schema_matches_table_definitions(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'n.db'}")
    try:
        assert db.migrate() == head_revision()
        db.check_schema()
        insp = inspect(db.reader)
        for table in metadata.sorted_tables:
            columns = {c["name"] for c in insp.get_columns(table.name)}
            assert columns == {c.name for c in table.columns}, table.name
            pk = set(insp.get_pk_constraint(table.name)["constrained_columns"])
            assert pk == {c.name for c in table.primary_key.columns}, table.name
        assert "relay_queue" in insp.get_view_names()
    finally:
        db.close()


def test_migrate_twice_is_harmless(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'n.db'}")
    try:
        db.migrate()
        db.migrate()
        db.check_schema()
    finally:
        db.close()


def test_sqlite_runs_in_wal_with_full_sync(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'n.db'}")
    try:
        db.migrate()
        with db.reader.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        db.close()


@pytest.mark.postgres
def test_postgresql_compresses_batch_bodies_with_lz4() -> None:
    url = pg_url()
    if url is None:
        pytest.skip(SKIP_REASON)
    dbs = PgDatabases(url)
    db = Database(dbs.new())
    try:
        db.migrate()
        with db.reader.connect() as conn:
            method = conn.exec_driver_sql(
                "SELECT attcompression FROM pg_attribute"
                " WHERE attrelid = 'batches'::regclass AND attname = 'body'"
            ).scalar()
        assert method == "l"  # lz4 (this server is built with it, as Debian's is)
    finally:
        db.close()
        dbs.close()
