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


def test_new_keys_go_straight_in_and_held_keys_are_merged(pg_db: Database) -> None:
    n = COPY_THRESHOLD * 2
    pg_db.write_sync(upsert_record_rows, [_row(i, 2, "v2", i + 1) for i in range(n)])
    # One call mixing keys already held (equal and newer versions), new keys (version 1: they
    # go by direct COPY), and a new key that repeats inside the call (it must reduce like
    # sequential apply, not break the COPY).
    mixed = [_row(i, 2 + i % 2, f"again-{i % 2}", n + i + 1) for i in range(n)]
    mixed += [_row(n + i, 1, f"new-{i}", 2 * n + i + 1) for i in range(n)]
    mixed += [_row(3 * n, 1, "dup-a", 4 * n), _row(3 * n, 2, "dup-b", 4 * n + 1)]
    pg_db.write_sync(upsert_record_rows, mixed)
    held = _held(pg_db)
    assert len(held) == 2 * n + 1
    for i in range(n):
        assert held[f"k{i:05d}"] == ((3, "again-1") if i % 2 == 1 else (2, "v2"))
        assert held[f"k{n + i:05d}"] == (1, f"new-{i}")
    assert held[f"k{3 * n:05d}"] == (2, "dup-b")


def test_a_held_key_at_version_one_sends_every_row_to_the_merge(pg_db: Database) -> None:
    # Version 1 of a key that is already held (a re-installed origin, a repair): the direct COPY
    # hits the primary key, its savepoint is rolled back and every row goes through the
    # version-guarded merge, in the same transaction — nothing is lost or doubled.
    n = COPY_THRESHOLD * 2
    pg_db.write_sync(upsert_record_rows, [_row(i, 2, "v2", i + 1) for i in range(n)])
    rows = [_row(i, 1, f"one-{i}", n + i + 1) for i in range(2 * n)]
    pg_db.write_sync(upsert_record_rows, rows)
    held = _held(pg_db)
    assert len(held) == 2 * n
    for i in range(n):
        assert held[f"k{i:05d}"] == (2, "v2")
        assert held[f"k{n + i:05d}"] == (1, f"one-{n + i}")
