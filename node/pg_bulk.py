"""PostgreSQL fast path for applying many record rows.

Rows that are most likely new — version 1 of a key that appears once in the call (the common
case: a province applying a city's new records) — go by binary COPY straight into `records`,
under a savepoint. Everything else — later versions, keys that repeat inside the call — goes by
binary COPY into a per-connection staging table, then one `INSERT … SELECT … ON CONFLICT DO
UPDATE … WHERE excluded.version > records.version`. If the direct COPY meets a key that is
already held (a re-installed origin numbering versions from 1 again, a repair re-applying rows,
another writer), the savepoint is rolled back and every row takes the merge.

Why: a multi-row VALUES upsert through SQLAlchemy spends most of its time building parameters in
Python; COPY moves the rows in the driver's own format and the server does the rest. The staging
table and the merge cost about twice a direct COPY, so they are kept for the rows that need them.
No question is asked first: a lookup of the keys depends on the planner choosing the primary key,
which it does not do on a table not yet analysed.

Guarantees kept: the version guard (a row COPYed directly had no row to guard against, or the
COPY fails), the result of applying the rows one by one (`DISTINCT ON`: the highest version, and
among equal versions the first one in the call), and all-or-nothing (everything runs in the
caller's transaction).

The staging table is a temporary table (`ON COMMIT DELETE ROWS`), created once per connection,
emptied before each use, so it never leaks rows between transactions.

What it does not do: it does not open transactions (it runs in the caller's), and it is not
used on SQLite (`node.store.upsert_record_tuples` sends SQLite rows to `executemany`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

# Below this many rows a plain multi-row upsert is cheaper than the COPY round trips.
COPY_THRESHOLD = 64

COLUMNS = (
    "record_type",
    "owner",
    "key",
    "version",
    "deleted",
    "payload",
    "standards",
    "hash",
    "epoch",
    "seq",
    "updated_ms",
)
# Binary COPY types, in COLUMNS order (varchar and text share one binary form).
_TYPES = ("text", "text", "text", "int8", "bool", "text", "text", "text", "text", "int8", "int8")
_UPDATED = COLUMNS[3:]
_STAGE = "lsnet_stage_records"
_COLS = ", ".join(f'"{c}"' for c in COLUMNS)
_CREATE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (LIKE records INCLUDING DEFAULTS)"
    " ON COMMIT DELETE ROWS"
)
_COPY_STAGE = f"COPY {_STAGE} ({_COLS}) FROM STDIN (FORMAT BINARY)"
_COPY_RECORDS = f"COPY records ({_COLS}) FROM STDIN (FORMAT BINARY)"
_MERGE = (
    f"INSERT INTO records ({_COLS})"
    f' SELECT DISTINCT ON (record_type, owner, "key") {_COLS} FROM {_STAGE}'
    ' ORDER BY record_type, owner, "key", version DESC, seq ASC'
    ' ON CONFLICT (record_type, owner, "key") DO UPDATE SET '
    + ", ".join(f'"{c}" = excluded."{c}"' for c in _UPDATED)
    + " WHERE excluded.version > records.version"
)


def copy_upsert(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Upsert `rows` (tuples in COLUMNS order) in `conn`'s transaction: likely-new rows by direct
    COPY, the rest through the staging table and the version-guarded merge."""
    import psycopg

    raw: Any = conn.connection.driver_connection
    times = Counter((r[0], r[1], r[2]) for r in rows)
    direct = [r[3] == 1 and times[(r[0], r[1], r[2])] == 1 for r in rows]
    new = [r for r, d in zip(rows, direct, strict=True) if d]
    merge: Sequence[tuple[Any, ...]] = rows
    with raw.cursor() as cur:
        if new:
            try:
                with raw.transaction():  # a savepoint inside the caller's transaction
                    _copy(cur, _COPY_RECORDS, new)
                merge = [r for r, d in zip(rows, direct, strict=True) if not d]
            except psycopg.errors.UniqueViolation:
                merge = rows  # one of them was held after all: every row takes the merge
        if merge:
            cur.execute(_CREATE)
            cur.execute(f"DELETE FROM {_STAGE}")
            _copy(cur, _COPY_STAGE, merge)
            cur.execute(_MERGE)


def _copy(cur: Any, statement: str, rows: Sequence[tuple[Any, ...]]) -> None:
    with cur.copy(statement) as copy:
        copy.set_types(_TYPES)
        for r in rows:
            copy.write_row(r)
