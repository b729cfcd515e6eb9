"""Scoped, revocable API tokens for local business systems (issue 4, security.tokens).

Only the SHA-256 of each token is stored (`token_hash`, hex, unique). `revoked_ms` = 0 means
active; a revoked row is kept for the record. At most one active token per name (a partial
unique index), so a name can be reused after its token was revoked.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("last_used_ms", sa.BigInteger, nullable=False),
        sa.Column("revoked_ms", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
    )
    op.create_index("ux_api_tokens_hash", "api_tokens", ["token_hash"], unique=True)
    op.create_index(
        "ux_api_tokens_active_name",
        "api_tokens",
        ["name"],
        unique=True,
        sqlite_where=sa.text("revoked_ms = 0"),
        postgresql_where=sa.text("revoked_ms = 0"),
    )
