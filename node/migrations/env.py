"""Alembic environment: runs migrations on the connection that `node.db.migrate` hands over."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via node.db.migrate
    raise RuntimeError("run migrations through 'lsnet node init', not the alembic command")
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
