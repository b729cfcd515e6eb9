"""Alembic migrations of the resource database; numbered, never edited once released."""
