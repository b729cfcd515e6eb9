"""Initial resource database: node meta/epoch, records, change log, batches, watermarks, links,
and the relay_queue view.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_meta",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("epoch", sa.String(64), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("batched_seq", sa.BigInteger, nullable=False),
        sa.Column("chain_head", sa.LargeBinary(32), nullable=False),
    )
    op.create_table(
        "records",
        sa.Column("record_type", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("standards", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("epoch", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_records_owner", "records", ["owner", "record_type"])
    op.create_table(
        "changelog",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("record_type", sa.String(64), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("standards", sa.String(64), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("origin", sa.String(64), nullable=False),
        sa.Column("epoch", sa.String(64), nullable=False),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("header", sa.LargeBinary, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("header_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("stored_ms", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("acked", sa.Boolean, nullable=False),
        sa.Column("quarantined", sa.Boolean, nullable=False),
        sa.Column("quarantine_code", sa.String(64), nullable=False),
        sa.Column("quarantine_reason", sa.Text, nullable=False),
    )
    op.create_index(
        "ux_batches_origin_range", "batches", ["origin", "epoch", "first_seq"], unique=True
    )
    op.create_index("ix_batches_pending", "batches", ["acked", "id"])
    op.create_table(
        "watermarks",
        sa.Column("origin", sa.String(64), primary_key=True),
        sa.Column("epoch", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("last_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("first_seen_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "links",
        sa.Column("peer", sa.String(64), primary_key=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("backoff_until_ms", sa.BigInteger, nullable=False),
        sa.Column("last_success_ms", sa.BigInteger, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("last_error_ms", sa.BigInteger, nullable=False),
    )
    # The relay queue: batches received from children that the parent has not acknowledged yet.
    op.execute(
        "CREATE VIEW relay_queue AS SELECT id, origin, epoch, first_seq, last_seq, size, "
        "stored_ms FROM batches WHERE source = 'relay' AND acked = false AND quarantined = false"
    )
