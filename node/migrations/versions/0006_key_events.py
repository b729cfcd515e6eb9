"""Key lifecycle (issue 4, item 4): key rotations and revocations known to this node.

One row per signed document: a rotation announcement (a node's new key, signed by its old key
and by the new one) or a revocation (a key that must no longer be trusted, signed by the node
that issued it). `id` orders them, so a child can ask for "everything after id N";
`forwarded_ms` is 0 until the parent acknowledged the row (upward distribution).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("kid", sa.String(16), nullable=False),
        sa.Column("doc", sa.LargeBinary, nullable=False),
        sa.Column("received_from", sa.String(64), nullable=False),
        sa.Column("received_ms", sa.BigInteger, nullable=False),
        sa.Column("forwarded_ms", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ux_key_events_kind_node_kid", "key_events", ["kind", "node_id", "kid"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ux_key_events_kind_node_kid", table_name="key_events")
    op.drop_table("key_events")
