"""PostgreSQL fast path for applying many record rows: COPY into a per-connection staging table,
then one `INSERT … SELECT … ON CONFLICT DO UPDATE … WHERE excluded.version > records.version`.

Why: a multi-row VALUES upsert through SQLAlchemy spends most of its time building parameters in
Python; COPY moves the rows in the driver's own format and the server does the rest in one
statement. The staging table is a temporary table (`ON COMMIT DELETE ROWS`), created once per
connection, emptied before each use, so it never leaks rows between transactions.

Rows that repeat a key inside one call are reduced first (`DISTINCT ON`: the highest version,
and among equal versions the first one in the batch) — exactly what applying them one by one
with the version guard would leave, and ON CONFLICT cannot touch one row twice in a statement.

What it does not do: it does not open transactions (it runs in the caller's), and it is not
used on SQLite (`node.store.upsert_record_rows` sends SQLite rows to `executemany`).
"""

from __future__ import annotations

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
_UPDATED = COLUMNS[3:]
_STAGE = "lsnet_stage_records"
_COLS = ", ".join(f'"{c}"' for c in COLUMNS)
_CREATE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (LIKE records INCLUDING DEFAULTS)"
    " ON COMMIT DELETE ROWS"
)
_COPY = f"COPY {_STAGE} ({_COLS}) FROM STDIN"
_MERGE = (
    f"INSERT INTO records ({_COLS})"
    f' SELECT DISTINCT ON (record_type, owner, "key") {_COLS} FROM {_STAGE}'
    ' ORDER BY record_type, owner, "key", version DESC, seq ASC'
    ' ON CONFLICT (record_type, owner, "key") DO UPDATE SET '
    + ", ".join(f'"{c}" = excluded."{c}"' for c in _UPDATED)
    + " WHERE excluded.version > records.version"
)


def copy_upsert(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Upsert `rows` (dicts keyed by COLUMNS) through the staging table, in `conn`'s transaction."""
    raw: Any = conn.connection.driver_connection
    with raw.cursor() as cur:
        cur.execute(_CREATE)
        cur.execute(f"DELETE FROM {_STAGE}")
        with cur.copy(_COPY) as copy:
            for r in rows:
                copy.write_row(tuple(r[c] for c in COLUMNS))
        cur.execute(_MERGE)
