"""Fewer and cheaper index entries per record (issue 8).

Every record a node applies is inserted into each index of `records`; on the province and
ministry that is most of what the database does for a push. Two changes:

1. `ix_records_owner (owner, record_type)` is dropped on both dialects. Every query it served is
   served as well by an index that stays: by owner alone through `ix_records_origin_seq (owner,
   epoch, seq)`, by record type and owner through the primary key `(record_type, owner, key)`.
2. PostgreSQL: the identifier columns in the indexes (`record_type`, `owner`, `key`, `epoch`) use
   the "C" collation: bytewise comparison. They hold codes, node ids and keys, never text to sort
   for people, and a database created with a language locale (en_US.UTF-8, zh_CN.UTF-8, even
   C.UTF-8 on PostgreSQL 15) otherwise compares them through the C library's locale rules at every
   step down every B-tree. The order of ASCII identifiers is the same either way. Changing the
   collation rebuilds the indexes of `records` (not the table): on a large database the upgrade
   takes as long as building those indexes.

SQLite compares text bytewise already; there only (1) applies.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# (column, length) of the identifier columns that take the "C" collation on PostgreSQL.
IDENTIFIERS = (("record_type", 64), ("owner", 64), ("key", 512), ("epoch", 64))


def _collate(collation: str) -> None:
    """PostgreSQL: give the identifier columns `collation` (rebuilds the indexes of records)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE records "
            + ", ".join(
                f'ALTER COLUMN "{name}" TYPE VARCHAR({length}) COLLATE "{collation}"'
                for name, length in IDENTIFIERS
            )
        )


def upgrade() -> None:
    op.drop_index("ix_records_owner", table_name="records")
    _collate("C")


def downgrade() -> None:
    _collate("default")
    op.create_index("ix_records_owner", "records", ["owner", "record_type"])
