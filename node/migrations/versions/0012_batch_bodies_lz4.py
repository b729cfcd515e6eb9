"""PostgreSQL: signed batch bodies are compressed with lz4 instead of pglz (issue 8).

A batch body (about 250 KB of msgpack for 1,000 changes) is stored out of line (TOAST) and
compressed. PostgreSQL's default, pglz, costs ~3.7 ms per body to write on the benchmark machine;
lz4 ~1.2 ms, for 56 instead of 46 KiB on disk. Every batch is written once where it is made and
once at every node it passes, so this is CPU on the path of every record.

Only bodies written from now on are compressed with lz4 (existing ones stay readable as they
are). On a PostgreSQL built without lz4, and on SQLite (which does not compress), this migration
changes nothing.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _lz4_available() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    choices = bind.execute(
        sa.text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
    ).scalar()
    return choices is not None and "lz4" in choices


def upgrade() -> None:
    if _lz4_available():
        op.execute("ALTER TABLE batches ALTER COLUMN body SET COMPRESSION lz4")


def downgrade() -> None:
    if _lz4_available():
        op.execute("ALTER TABLE batches ALTER COLUMN body SET COMPRESSION pglz")
