"""`lsnet tokens …`: scoped, revocable API tokens for the business systems that feed a node.

create (prints the new token once: only its hash is stored), list (never tokens or hashes) and
revoke (by name or id). Creating and revoking append an `operator_action` entry to the node's
audit log in the same transaction. Parsing and printing only: the work is done by
`security.tokens`. The node may be running: it sees a change at the next request.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import click

from hierarchy_config.loader import load_config
from hierarchy_config.model import NodeConfig
from node.cli import CliFailure, friendly, main
from node.clock import SystemClock
from node.db import Database
from security.audit import AuditError, AuditLog
from security.keys import load_signing_key
from security.tokens import Scope as TokenScope
from security.tokens import (
    TokenError,
    TokenInfo,
    create_token,
    list_tokens,
    revoke_token,
)

T = TypeVar("T")


def _with_db(config: NodeConfig, use: Callable[[Database], Awaitable[T]]) -> T:
    async def run() -> T:
        db = Database(config.node.database)
        try:
            db.check_schema()
            return await use(db)
        finally:
            await asyncio.to_thread(db.close)

    try:
        return asyncio.run(run())
    except (TokenError, AuditError) as exc:
        raise CliFailure(str(exc)) from None


def _audit_log(config: NodeConfig, db: Database) -> AuditLog:
    key = load_signing_key(config.node.key_file)
    return AuditLog(db, key, config.node_id, SystemClock())


def _iso(ms: int) -> str:
    if ms == 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _default_operator() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""


@main.group()
def tokens() -> None:
    """API tokens of the business systems that push records to this node."""


@tokens.command("create")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option("--name", required=True, help="Which system holds it, e.g. pension-system.")
@click.option(
    "--scope",
    type=click.Choice([s.value for s in TokenScope]),
    default=TokenScope.INGEST.value,
    show_default=True,
)
@click.option("--by", "created_by", default=None, help="Operator name (default: OS user).")
@friendly
def tokens_create(config_path: Path, name: str, scope: str, created_by: str | None) -> None:
    """Create a token and print it once: only its hash is stored, it cannot be shown again.

    The token alone goes to stdout (so it can be piped into a secret store); the notice goes to
    stderr."""
    config = load_config(config_path)
    operator = _default_operator() if created_by is None else created_by

    async def create(db: Database) -> tuple[str, TokenInfo]:
        return await create_token(
            db,
            name=name,
            scope=scope,
            created_by=operator,
            now_ms=SystemClock().time_ms(),
            audit=_audit_log(config, db),
        )

    token, info = _with_db(config, create)
    click.echo(token)
    click.echo(
        f"created token {info.id} '{info.name}' (scope {info.scope}) at node {config.node_id}. "
        "Store it now: it cannot be shown again. "
        "Send it as 'Authorization: Bearer <token>'.",
        err=True,
    )


@tokens.command("list")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@friendly
def tokens_list(config_path: Path, as_json: bool) -> None:
    """Every token, active and revoked, oldest first. Tokens and their hashes are never shown."""
    config = load_config(config_path)
    rows = _with_db(config, list_tokens)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows], ensure_ascii=False, indent=2))
        return
    for r in rows:
        state = "active" if r.active else f"revoked {_iso(r.revoked_ms)}"
        click.echo(
            f"{r.id:>5}  {r.name:<24} {r.scope:<8} {state:<33} created {_iso(r.created_ms)} "
            f"by {r.created_by or '-'}  last used {_iso(r.last_used_ms)}"
        )
    active = sum(1 for r in rows if r.active)
    click.echo(f"{len(rows)} tokens, {active} active")


@tokens.command("revoke")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.argument("name_or_id")
@friendly
def tokens_revoke(config_path: Path, name_or_id: str) -> None:
    """Revoke the active token with this NAME, or the token with this ID; effective at once."""
    config = load_config(config_path)

    async def revoke(db: Database) -> TokenInfo:
        return await revoke_token(
            db, name_or_id, now_ms=SystemClock().time_ms(), audit=_audit_log(config, db)
        )

    info = _with_db(config, revoke)
    click.echo(f"revoked token {info.id} '{info.name}' (scope {info.scope})")
