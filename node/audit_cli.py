"""`lsnet audit …`: check and read the node's tamper-evident audit log of security events.

verify (prove the hash chain intact against the node's own key, or name the first broken seq
and why) and list (filter by kind, peer and time). Parsing and printing only: the work is done
by `security.audit`. These commands read; they never write to the log.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from hierarchy_config.loader import load_config
from hierarchy_config.model import NodeConfig
from node.cli import CliFailure, _node_passphrase, friendly, main
from node.db import Database
from security.audit import AuditEntry, AuditInvalid, AuditKind, AuditReader, ChainReport
from security.keys import key_id, load_signing_key, retired_verify_keys

T = TypeVar("T")


def _with_reader(config: NodeConfig, use: Callable[[AuditReader], Awaitable[T]]) -> T:
    async def run() -> T:
        db = Database(config.node.database)
        try:
            db.check_schema()
            return await use(AuditReader(db))
        finally:
            await asyncio.to_thread(db.close)

    return asyncio.run(run())


def _parse_time(value: str | None, option: str) -> int | None:
    """ISO 8601 date or date-time to Unix ms; without an offset the time is UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CliFailure(
            f"{option} {value!r} is not an ISO 8601 time "
            "(e.g. 2026-03-01 or 2026-03-01T08:00+08:00)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _as_json(e: AuditEntry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "time": _iso(e.time_ms),
        "time_ms": e.time_ms,
        "node": e.node,
        "kind": e.kind,
        "peer": e.peer,
        "code": e.code,
        "detail": e.detail_map(),
        "kid": e.kid,
        "hash": e.hash.hex(),
        "prev_hash": e.prev_hash.hex(),
    }


@main.group()
def audit() -> None:
    """The tamper-evident audit log of security events at this node."""


@audit.command("verify")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@friendly
def audit_verify(config_path: Path) -> None:
    """Prove the hash chain intact against this node's key (exit 0), or name the first broken
    seq and the reason (exit 1): changed, gap, reordered or bad_signature. Entries written
    before a key rotation are checked with the retired key kept beside the key file."""
    config = load_config(config_path)
    key_file = config.node.key_file
    current = load_signing_key(key_file, _node_passphrase()).verify_key
    keys = {key_id(current): current, **retired_verify_keys(key_file, _node_passphrase())}

    async def check(reader: AuditReader) -> ChainReport:
        return await reader.verify_with(keys)

    report = _with_reader(config, check)
    click.echo(report.summary())
    if not report.intact:
        sys.exit(1)


@audit.command("list")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option("--kind", type=click.Choice([k.value for k in AuditKind]), default=None)
@click.option("--peer", default=None, help="Node id or remote address.")
@click.option("--since", default=None, help="ISO 8601, inclusive; UTC unless an offset is given.")
@click.option("--until", default=None, help="ISO 8601, exclusive; UTC unless an offset is given.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@friendly
def audit_list(
    config_path: Path,
    kind: str | None,
    peer: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Audit entries, newest first. Listing does not verify: run 'lsnet audit verify' for that."""
    config = load_config(config_path)
    since_ms = _parse_time(since, "--since")
    until_ms = _parse_time(until, "--until")

    async def fetch(reader: AuditReader) -> list[AuditEntry]:
        return await reader.entries(
            kind=kind, peer=peer, since_ms=since_ms, until_ms=until_ms, limit=limit
        )

    try:
        rows = _with_reader(config, fetch)
    except AuditInvalid as exc:
        raise CliFailure(str(exc)) from None
    if as_json:
        click.echo(json.dumps([_as_json(e) for e in rows], ensure_ascii=False, indent=2))
        return
    for e in rows:
        click.echo(
            f"{e.seq:>8}  {_iso(e.time_ms)}  {e.kind:<19} "
            f"peer={e.peer or '-'} code={e.code or '-'} {e.detail}"
        )
    click.echo(f"{len(rows)} entries shown")
