"""Network management (issue 5): the latest status of every node of the subtree, operator link
controls and the decisions taken on quarantined batches.

- `node_status`: one row per node of this node's subtree (upsert on every heartbeat): the status
  as its carrier reported it (JSON), the direct child it came through and when it arrived.
- `link_controls`: an operator's pause of the link to a peer (persisted across restarts).
- `quarantine_actions`: every replay or skip of a quarantined batch, with reason and operator.
- `e2e_probes`: per origin, the newest end-to-end probe applied here (its send time on the
  origin's clock and its arrival on ours).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_status",
        sa.Column("node_id", sa.String(64), primary_key=True),
        sa.Column("via", sa.String(64), nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("received_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "link_controls",
        sa.Column("peer", sa.String(64), primary_key=True),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("changed_by", sa.String(128), nullable=False),
        sa.Column("changed_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "quarantine_actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.Integer, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("operator", sa.String(128), nullable=False),
        sa.Column("time_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_quarantine_actions_batch", "quarantine_actions", ["batch_id"])
    op.create_table(
        "e2e_probes",
        sa.Column("origin", sa.String(64), primary_key=True),
        sa.Column("sent_ms", sa.BigInteger, nullable=False),
        sa.Column("arrived_ms", sa.BigInteger, nullable=False),
    )
