"""`lsnet status --tree` and `lsnet alerts`: the network views, asked from the running node
(`/v1/network/tree`, `/v1/network/alerts`, public read-only), because the tree lives there.
Also the small HTTP helper `call_node` that `lsnet links` uses for operator actions.

Parsing and printing only: the work is done by `network_mgmt`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import click
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from hierarchy_config.loader import load_config
from hierarchy_config.model import NodeConfig
from node.cli import CliFailure, friendly, main
from node.tls import client_context

TOKEN_ENV = "LSNET_OPERATOR_TOKEN"
HEALTH_STYLE = {"up": "green", "down": "bold red", "unknown": "yellow"}
CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    required=True,
    help="The node's node.toml.",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


# -- talking to the running node -------------------------------------------------------------------


def call_node(
    config: NodeConfig,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
) -> Any:
    """One request to this node's own HTTP API; its JSON answer, or a CliFailure explaining."""

    async def run() -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        timeout = aiohttp.ClientTimeout(total=15)
        ssl_ctx = client_context(config)
        connector = aiohttp.TCPConnector(ssl=ssl_ctx) if ssl_ctx is not None else None
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=connector) as s,
            s.request(method, config.node.url + path, json=body, headers=headers) as r,
        ):
            try:
                return r.status, await r.json(content_type=None)
            except (json.JSONDecodeError, UnicodeDecodeError):
                return r.status, {"error": {"code": "bad_answer", "message": f"HTTP {r.status}"}}

    try:
        status, doc = asyncio.run(run())
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise CliFailure(
            f"node {config.node_id} at {config.node.url} does not answer ({type(exc).__name__}); "
            "is it running? ('lsnet node run --config ...')"
        ) from None
    if status >= 400:
        err = doc.get("error", {}) if isinstance(doc, dict) else {}
        raise CliFailure(
            f"node {config.node_id} refused: {err.get('code', status)}: {err.get('message', '')}"
        )
    return doc


def when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(ms: int | None, now_ms: int) -> str:
    if ms is None:
        return "never"
    seconds = max(0, now_ms - ms) / 1000
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


# -- status --tree ---------------------------------------------------------------------------------


def render_tree(doc: dict[str, Any], console: Console) -> None:
    nodes = {n["node_id"]: n for n in doc["nodes"]}
    kids: dict[str | None, list[str]] = {}
    for n in doc["nodes"]:
        parent = n["parent"] if n["parent"] in nodes else None
        if n["node_id"] == doc["root"]:
            parent = None
        kids.setdefault(parent, []).append(n["node_id"])
    now = int(doc["generated_ms"])

    def label(n: dict[str, Any]) -> str:
        style = HEALTH_STYLE.get(n["health"], "white")
        lag = "-" if n["lag_s"] is None else f"{n['lag_s']:.1f}s"
        backlog = "-" if n["backlog"] is None else str(n["backlog"])
        parts = [
            f"[{style}]{n['health'].upper():7}[/]",
            f"[bold]{n['node_id']}[/] {n['name']} ({n['level']})",
            f"lag {lag}",
            f"backlog {backlog}",
            f"release {n['release'] or '-'}",
            f"seen {_ago(n['last_seen_ms'], now)}",
        ]
        if n.get("link_mode") and n["link_mode"] != "live":
            parts.append(f"link {n['link_mode']}")
        if n.get("quarantined"):
            parts.append(f"[red]quarantined {n['quarantined']}[/]")
        return "  ".join(parts)

    root = nodes[doc["root"]]
    tree = Tree(label(root))

    def add(branch: Tree, node_id: str) -> None:
        for child in sorted(kids.get(node_id, [])):
            add(branch.add(label(nodes[child])), child)

    add(tree, root["node_id"])
    console.print(tree)
    counts = {h: sum(1 for n in doc["nodes"] if n["health"] == h) for h in HEALTH_STYLE}
    console.print(
        f"{len(nodes)} nodes: {counts['up']} up, {counts['down']} down, "
        f"{counts['unknown']} unknown (heartbeat every {doc['heartbeat_interval_s']}s)"
    )


def show_tree(config: NodeConfig, as_json: bool) -> None:
    doc = call_node(config, "GET", "/v1/network/tree")
    if as_json:
        click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        render_tree(doc, Console())


# -- alerts ----------------------------------------------------------------------------------------


@main.command()
@CONFIG_OPTION
@JSON_OPTION
@friendly
def alerts(config_path: Path, as_json: bool) -> None:
    """Current alert conditions of this node's subtree: nodes down or unknown, lag above
    [network] lag_alert_s, backlogs waiting on a failing or paused link, standards releases
    behind, clock skew, security events and quarantined (poison) batches. Asks the running
    node. Exit code 1 when a critical alert is present (for scripts and monitoring)."""
    config = load_config(config_path)
    doc = call_node(config, "GET", "/v1/network/alerts")
    if as_json:
        click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
    elif not doc["alerts"]:
        click.echo(f"no alerts in the subtree of {doc['root']}")
    else:
        table = Table("severity", "node", "alert", "message", title=f"alerts at {doc['root']}")
        for a in doc["alerts"]:
            style = "bold red" if a["severity"] == "critical" else "yellow"
            table.add_row(f"[{style}]{a['severity']}[/]", a["node"], a["alert"], a["message"])
        Console().print(table)
    if any(a["severity"] == "critical" for a in doc["alerts"]):
        sys.exit(1)
