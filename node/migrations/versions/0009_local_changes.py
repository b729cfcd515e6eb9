"""Change log of record types kept `local` (resource-library mode 3, issue 7).

Records of a type whose replication mode is `local` in the standards release stay at the node
that wrote them: their changes are logged here, with their own dense id, and never get a
sequence number of the upward change log (`changelog`), so batches, watermarks and the hash
chain towards the parent are exactly those of the replicated types. The partial index
`ix_records_kept` finds a node's kept records (seq 0) when a later release makes their type
replicate, so they can be sent up then.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "local_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("record_type", sa.String(64), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("standards", sa.String(64), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )

    op.create_index(
        "ix_records_kept",
        "records",
        ["owner"],
        sqlite_where=sa.text("seq = 0"),
        postgresql_where=sa.text("seq = 0"),
    )


def downgrade() -> None:
    op.drop_index("ix_records_kept", table_name="records")
    op.drop_table("local_changes")
