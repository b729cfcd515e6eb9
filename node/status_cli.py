"""`lsnet status`: read a node's state straight from its database (the node may be stopped),
probe the parent, and render it for an operator or as JSON. Changes nothing."""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC, datetime
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from hierarchy_config.model import NodeConfig
from node.app import status_document
from node.clock import SystemClock
from node.db import Database
from node.store import NodeStore
from node.tls import client_context
from sync.store import SyncStore
from sync.transport import client_session


async def probe(
    url: str, timeout_s: float = 3.0, ssl_context: ssl.SSLContext | None = None
) -> tuple[bool, str]:
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        session = client_session(timeout, ssl_context)
        async with session as s, s.get(url + "/healthz") as resp:
            return resp.status == 200, f"HTTP {resp.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return False, type(exc).__name__ + (f": {exc}" if str(exc) else "")


async def collect_status(config: NodeConfig) -> dict[str, Any]:
    db = Database(config.node.database)
    try:
        db.check_schema()
        view = await NodeStore(db).status()
        link = await SyncStore(db).load_link(config.parent.id) if config.parent else None
    finally:
        await asyncio.to_thread(db.close)
    doc = status_document(config, view, link, SystemClock().time_ms())
    if config.parent is not None:
        reachable, detail = await probe(config.parent.url, ssl_context=client_context(config))
        doc["parent"]["reachable"] = reachable
        doc["parent"]["probe"] = detail
    return doc


def _when(ms: int | None) -> str:
    if not ms:
        return "never"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_status(doc: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]{doc['node']}[/] {doc['name']} ({doc['level']})  epoch {doc['epoch']}")
    table = Table("origin", "records", "watermark (seq applied)", title="records by origin")
    for origin in sorted(set(doc["records_by_origin"]) | set(doc["watermarks"])):
        marks = ", ".join(
            f"{seq} @{epoch[:8]}" for epoch, seq in doc["watermarks"].get(origin, {}).items()
        )
        table.add_row(origin, str(doc["records_by_origin"].get(origin, 0)), marks or "-")
    console.print(table)
    parent = doc.get("parent")
    if parent is None:
        console.print("root of the tree (no parent)")
        return
    reach = parent.get("reachable")
    state = "[green]reachable[/]" if reach else f"[red]unreachable[/] ({parent.get('probe')})"
    console.print(f"parent {parent['id']} {parent['url']}: {state}; link {parent['link_mode']}")
    console.print(
        f"backlog {doc['backlog']} changes in {doc['backlog_batches']} batches; "
        f"lag {doc['lag_seconds'] or 0:.1f}s; quarantined {doc['quarantined_batches']}; "
        f"last successful push {_when(parent['last_success_ms'])}"
    )
    if parent.get("last_error"):
        console.print(f"last error: {parent['last_error']}", markup=False)
