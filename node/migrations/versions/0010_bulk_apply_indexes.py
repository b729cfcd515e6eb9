"""Indexes for national scale (issue 8): quarantined batches looked up without a table scan.

`ix_batches_quarantined` is a partial index over the (rare) quarantined batches. It serves the
status view's quarantine count and the "is an earlier batch of this origin quarantined?" test
that `sync.store.next_transfer_txn` runs for every pending batch — both scanned the whole
`batches` table, which at a ministry holds every batch of every city.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_batches_quarantined",
        "batches",
        ["origin", "epoch", "first_seq"],
        postgresql_where=sa.text("quarantined"),
        sqlite_where=sa.text("quarantined"),
    )


def downgrade() -> None:
    op.drop_index("ix_batches_quarantined", table_name="batches")
