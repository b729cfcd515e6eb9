"""Security feed (issue 4, item 6): audit entries of the subtree, forwarded upward signed.

One row per (origin, seq): the entry as its origin signed it (chain fields, hash, signature, key
id), whether this node verified the signature (`verified`), when it arrived (`received_ms`) and
when the parent acknowledged it (`forwarded_ms`, 0 = still to forward). The node's own entries
are copied here too, so one per-row position covers everything to forward.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "security_feed",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("origin", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("time_ms", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("peer", sa.String(128), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("signature", sa.LargeBinary(64), nullable=False),
        sa.Column("kid", sa.String(16), nullable=False),
        sa.Column("verified", sa.Boolean, nullable=False),
        sa.Column("received_ms", sa.BigInteger, nullable=False),
        sa.Column("forwarded_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ux_security_feed_origin_seq", "security_feed", ["origin", "seq"], unique=True)
    op.create_index("ix_security_feed_pending", "security_feed", ["forwarded_ms", "id"])
    op.create_index("ix_security_feed_time", "security_feed", ["time_ms"])
