"""The PostgreSQL bulk apply path (COPY into a staging table, one version-guarded merge) gives
the same result as applying the rows one by one: newer versions win, older or equal ones never
overwrite, repeated keys within one call reduce to what sequential application would leave."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from node.db import Database
from node.pg_bulk import COPY_THRESHOLD
from node.schema import records
from node.store import upsert_record_rows
from tests.support.pg import SKIP_REASON, PgDatabases, pg_url

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_db() -> Iterator[Database]:
    url = pg_url()
    if url is None:
        pytest.skip(SKIP_REASON)
    dbs = PgDatabases(url)
    try:
        db = Database(dbs.new())
        db.migrate()
        yield db
        db.close()
    finally:
        dbs.close()


def _row(key: int, version: int, payload: str, seq: int) -> dict[str, Any]:
    return {
        "record_type": "person",
        "owner": "330100",
        "key": f"k{key:05d}",
        "version": version,
        "deleted": False,
        "payload": payload,
        "standards": "builtin-1",
        "hash": f"h{key}-{version}",
        "epoch": "e1",
        "seq": seq,
        "updated_ms": 1,
    }


def _held(db: Database) -> dict[str, tuple[int, str]]:
    def body(conn: Any) -> dict[str, tuple[int, str]]:
        rows = conn.execute(select(records.c.key, records.c.version, records.c.payload))
        return {r.key: (r.version, r.payload) for r in rows}

    return db.read_sync(body)


def test_bulk_apply_is_version_guarded(pg_db: Database) -> None:
    n = COPY_THRESHOLD * 3
    first = [_row(i, 2, "v2", i + 1) for i in range(n)]
    pg_db.write_sync(upsert_record_rows, first)
    assert len(_held(pg_db)) == n
    # Older (1), equal (2, different payload) and newer (3) versions, in one bulk call.
    second = [_row(i, 1 + i % 3, f"again-{i % 3}", n + i + 1) for i in range(n)]
    pg_db.write_sync(upsert_record_rows, second)
    held = _held(pg_db)
    for i in range(n):
        expected = (3, "again-2") if i % 3 == 2 else (2, "v2")
        assert held[f"k{i:05d}"] == expected


def test_repeated_keys_in_one_call_reduce_like_sequential_apply(pg_db: Database) -> None:
    rows = [_row(i % 10, 1 + (i // 10) % 4, f"p{i}", i + 1) for i in range(COPY_THRESHOLD * 2)]
    expected: dict[str, tuple[int, str]] = {}
    for r in rows:  # one by one, version-guarded
        cur = expected.get(r["key"])
        if cur is None or r["version"] > cur[0]:
            expected[r["key"]] = (r["version"], r["payload"])
    pg_db.write_sync(upsert_record_rows, rows)
    assert _held(pg_db) == expected
    # The staging table is empty again for the next transaction on this connection.
    pg_db.write_sync(upsert_record_rows, rows)
    assert _held(pg_db) == expected
