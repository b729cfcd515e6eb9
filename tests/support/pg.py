"""Throw-away PostgreSQL databases for tests, on the server named by LSNET_TEST_DATABASE_URL."""

from __future__ import annotations

import os
import secrets

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ENV = "LSNET_TEST_DATABASE_URL"
SKIP_REASON = (
    f"PostgreSQL tests need {ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
)


def pg_url() -> str | None:
    return os.environ.get(ENV) or None


class PgDatabases:
    """Creates databases named lsnet_t_<random> and drops them all on close()."""

    def __init__(self, admin_url: str) -> None:
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.base = make_url(admin_url)
        self.created: list[str] = []

    def new(self) -> str:
        name = f"lsnet_t_{secrets.token_hex(6)}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return self.base.set(database=name).render_as_string(hide_password=False)

    def close(self) -> None:
        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()
