"""Hand-made record rows with known statistics, written straight into a node database."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node.datagen import id_check_char
from node.db import Database
from node.store import payload_json, record_hash, upsert_record_rows

__all__ = ["Rows", "person_id"]


def person_id(n: int, county: str = "330106") -> str:
    """A valid GB 11643 number, distinct for each n."""
    body = f"{county}1980{1 + n % 12:02d}{1 + n % 28:02d}{n % 1000:03d}"
    return body + id_check_char(body)


class Rows:
    """Collects records (any owner) and writes them in one transaction."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        record_type: str,
        owner: str,
        key: str,
        payload: Mapping[str, str],
        *,
        deleted: bool = False,
    ) -> None:
        self.rows.append(
            {
                "record_type": record_type,
                "owner": owner,
                "key": key,
                "version": 1,
                "deleted": deleted,
                "payload": payload_json(payload),
                "standards": "test",
                "hash": record_hash(record_type, owner, key, 1, deleted, payload),
                "epoch": "e",
                "seq": len(self.rows) + 1,
                "updated_ms": 0,
            }
        )

    def write(self, db: Database) -> None:
        db.write_sync(upsert_record_rows, self.rows)
