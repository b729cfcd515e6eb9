"""Poison records held aside and the link's error history (issue 5): `held_changes`,
`link_errors`.

A receiver that finds a record failing validation in an otherwise sound batch, for a record
type whose policy is `hold` (`[sync] on_invalid_record`), keeps the change here instead of
refusing the whole batch: the rest of the batch is applied and the origin's watermark advances,
so later batches are not blocked. An operator releases (re-validates and applies) or skips each
held change with a reason. One row per (origin, epoch, seq); `state` is held, released or
skipped.

`link_errors` keeps the last errors of each upward link (the sender trims it to 100 per peer),
so `lsnet links errors` and the dashboard still show them after a restart.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "held_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("origin", sa.String(64), nullable=False),
        sa.Column("epoch", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("record_type", sa.String(64), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("standards", sa.String(64), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("held_ms", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("decided_ms", sa.BigInteger, nullable=False),
        sa.Column("operator", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.UniqueConstraint("origin", "epoch", "seq", name="uq_held_changes_position"),
    )
    op.create_index("ix_held_changes_state", "held_changes", ["state", "origin"])
    op.create_table(
        "link_errors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("peer", sa.String(64), nullable=False),
        sa.Column("time_ms", sa.BigInteger, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_link_errors_peer", "link_errors", ["peer", "id"])


def downgrade() -> None:
    op.drop_index("ix_link_errors_peer", table_name="link_errors")
    op.drop_table("link_errors")
    op.drop_index("ix_held_changes_state", table_name="held_changes")
    op.drop_table("held_changes")
