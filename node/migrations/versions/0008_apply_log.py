"""Apply log and an origin/seq index on records (issue 6: reliability).

`apply_log` is append-only: one row each time a received batch is applied here — `kind` 'push'
for the normal path, 'repair' when anti-entropy re-applies a batch at or below the watermark,
'restore' when a node rebuilds its own history from its parent. It makes a double apply
observable (the exactly-once checker counts 'push' rows per (origin, epoch, seq)).
`ix_records_origin_seq` lets anti-entropy digest one origin's records in seq order.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "apply_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("origin", sa.String(64), nullable=False),
        sa.Column("epoch", sa.String(64), nullable=False),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("header_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("applied_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_apply_log_origin", "apply_log", ["origin", "epoch", "first_seq"])
    op.create_index("ix_records_origin_seq", "records", ["owner", "epoch", "seq"])


def downgrade() -> None:
    op.drop_index("ix_records_origin_seq", "records")
    op.drop_index("ix_apply_log_origin", "apply_log")
    op.drop_table("apply_log")
