"""`lsnet links …`, `lsnet alerts` and `lsnet status --tree`: the network views and operator
actions for the centres that run the network.

Views: `lsnet links` reads the node's own database (works while the node is stopped, e.g. after
a crash); `lsnet status --tree` and `lsnet alerts` ask the running node (`/v1/network/tree`,
`/v1/network/alerts`, public read-only), because the tree lives in the running node.
Actions (retry, pause, resume, resend, errors, quarantine …) call the running node's admin API
with an operator token read from the environment variable LSNET_OPERATOR_TOKEN or from
`--token-file` (never from the command line, where other users could read it in `ps`): the
running node then acts at once on its live link, and the action is audited with the token's name.

Parsing and printing only: the work is done by `network_mgmt`.
"""

from __future__ import annotations

import asyncio
import json
import os
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
from node.clock import SystemClock
from node.db import Database
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


def _token(token_file: Path | None) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CliFailure(f"{token_file}: cannot read the token file: {exc.strerror}") from None
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise CliFailure(
            f"an operator token is needed: set {TOKEN_ENV} or use --token-file "
            "(create one with 'lsnet tokens create --scope operator')"
        )
    return token


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


def _when(ms: int | None) -> str:
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


# -- links -----------------------------------------------------------------------------------------


async def _local_links(config: NodeConfig) -> dict[str, Any]:
    from network_mgmt.link_admin import LinkAdmin
    from sync.store import SyncStore

    db = Database(config.node.database)
    try:
        db.check_schema()
        admin = LinkAdmin(db)
        links = []
        if config.parent is not None:
            state = await SyncStore(db).load_link(config.parent.id)
            control = await admin.control(config.parent.id)
            links.append(
                {
                    "peer": state.peer,
                    "url": config.parent.url,
                    "mode": "paused" if control.paused else state.mode,
                    "failures": state.failures,
                    "next_retry_ms": state.backoff_until_ms or None,
                    "last_success_ms": state.last_success_ms or None,
                    "last_error": state.last_error or None,
                    "last_error_ms": state.last_error_ms or None,
                    "paused": control.paused,
                    "paused_by": control.changed_by or None,
                    "pause_reason": control.reason or None,
                }
            )
        held, skipped = await admin.quarantine_counts()
    finally:
        await asyncio.to_thread(db.close)
    return {"node": config.node_id, "links": links, "quarantined": held, "skipped": skipped}


@main.group(invoke_without_command=True)
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path), default=None, help="node.toml"
)
@JSON_OPTION
@click.pass_context
@friendly
def links(ctx: click.Context, config_path: Path | None, as_json: bool) -> None:
    """The upward link of a node: live, catching up, backing off or paused, with the next retry
    time and the last error (read from the node's database; works while the node is stopped).

    The subcommands are operator actions on the running node. They need an operator token in
    LSNET_OPERATOR_TOKEN or --token-file (create one with 'lsnet tokens create --scope
    operator'); each is audited with the token's name."""
    if ctx.invoked_subcommand is not None:
        return
    if config_path is None:
        raise CliFailure("--config is required: lsnet links --config node.toml")
    config = load_config(config_path)
    doc = asyncio.run(_local_links(config))
    if as_json:
        click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    if not doc["links"]:
        click.echo(f"{config.node_id} is the root of the tree: it has no upward link")
    now = SystemClock().time_ms()
    table = Table("peer", "mode", "failures", "next retry", "last success", "last error")
    for link in doc["links"]:
        mode = link["mode"]
        style = {"live": "green", "catching_up": "cyan", "paused": "yellow"}.get(mode, "red")
        retry = link["next_retry_ms"]
        table.add_row(
            link["peer"],
            f"[{style}]{mode}[/]",
            str(link["failures"]),
            "now" if not retry or retry <= now else _when(retry),
            _when(link["last_success_ms"]),
            (link["last_error"] or "-")[:80],
        )
    if doc["links"]:
        Console().print(table)
    click.echo(
        f"quarantined batches waiting: {doc['quarantined']} (skipped: {doc['skipped']}); "
        "see 'lsnet links quarantine list'"
    )


TOKEN_FILE = click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help=f"File holding the operator token (default: environment variable {TOKEN_ENV}).",
)
PEER_OPTION = click.option(
    "--peer", default=None, help="The link's peer (default: this node's parent)."
)


def _peer(config: NodeConfig, peer: str | None) -> str:
    if peer:
        return peer
    if config.parent is None:
        raise CliFailure(f"{config.node_id} is the root of the tree: it has no upward link")
    return config.parent.id


def _print(doc: Any) -> None:
    click.echo(json.dumps(doc, ensure_ascii=False, indent=2))


def _link_action(action: str, help_text: str, needs_reason: bool) -> None:
    @links.command(action, help=help_text)
    @CONFIG_OPTION
    @PEER_OPTION
    @click.option(
        "--reason",
        required=needs_reason,
        default="",
        help="Why (written to the audit log)." + (" Required." if needs_reason else ""),
    )
    @TOKEN_FILE
    @friendly
    def command(config_path: Path, peer: str | None, reason: str, token_file: Path | None) -> None:
        config = load_config(config_path)
        target = _peer(config, peer)
        doc = call_node(
            config,
            "POST",
            f"/v1/admin/links/{target}/{action}",
            {"reason": reason},
            _token(token_file),
        )
        click.echo(f"{action}: link {config.node_id} → {target} is now {doc['link']['mode']}")


_link_action(
    "retry",
    "Retry now: forget the failure count and the backoff delay, send at once.",
    needs_reason=False,
)
_link_action(
    "pause",
    "Stop sending to the parent (records are still accepted and wait). Survives restarts.",
    needs_reason=True,
)
_link_action("resume", "Send to the parent again after a pause.", needs_reason=False)


@links.command("resend")
@CONFIG_OPTION
@PEER_OPTION
@click.option("--from-seq", type=click.IntRange(1), required=True, help="First seq to send again.")
@click.option("--origin", default=None, help="Whose batches (default: this node's own).")
@click.option("--reason", required=True, help="Why (written to the audit log).")
@TOKEN_FILE
@friendly
def links_resend(
    config_path: Path,
    peer: str | None,
    from_seq: int,
    origin: str | None,
    reason: str,
    token_file: Path | None,
) -> None:
    """Send acknowledged batches again from a seq (e.g. after the parent was restored from a
    backup). The parent skips what it already holds."""
    config = load_config(config_path)
    body = {"from_seq": from_seq, "origin": origin or config.node_id, "reason": reason}
    doc = call_node(
        config, "POST", f"/v1/admin/links/{_peer(config, peer)}/resend", body, _token(token_file)
    )
    click.echo(f"{doc['requeued_batches']} batches queued to be sent again")


@links.command("errors")
@CONFIG_OPTION
@PEER_OPTION
@click.option("--limit", type=click.IntRange(1, 50), default=10, show_default=True)
@JSON_OPTION
@TOKEN_FILE
@friendly
def links_errors(
    config_path: Path, peer: str | None, limit: int, as_json: bool, token_file: Path | None
) -> None:
    """The last N errors of the link (newest first), from the running node."""
    config = load_config(config_path)
    target = _peer(config, peer)
    doc = call_node(
        config, "GET", f"/v1/admin/links/{target}/errors?limit={limit}", None, _token(token_file)
    )
    if as_json:
        _print(doc)
        return
    if not doc["errors"]:
        click.echo(f"no errors on the link {config.node_id} → {target} since the node started")
    for e in doc["errors"]:
        click.echo(f"{_when(e['time_ms'])}  {e['message']}")


@links.group("quarantine")
def quarantine() -> None:
    """Quarantined (poison) batches: refused by the parent for their content, held back with the
    later batches of the same origin until an operator replays or skips them."""


@quarantine.command("list")
@CONFIG_OPTION
@click.option("--all", "include_skipped", is_flag=True, help="Include skipped batches.")
@JSON_OPTION
@TOKEN_FILE
@friendly
def quarantine_list(
    config_path: Path, include_skipped: bool, as_json: bool, token_file: Path | None
) -> None:
    """Quarantined batches with origin, range, reason and time."""
    config = load_config(config_path)
    suffix = "?all=1" if include_skipped else ""
    doc = call_node(config, "GET", f"/v1/admin/quarantine{suffix}", None, _token(token_file))
    if as_json:
        _print(doc)
        return
    if not doc["quarantined"]:
        click.echo("no quarantined batches")
        return
    table = Table("id", "origin", "range", "code", "reason", "since", "skipped")
    for q in doc["quarantined"]:
        table.add_row(
            str(q["batch_id"]),
            q["origin"],
            f"{q['first_seq']}-{q['last_seq']}",
            q["code"],
            q["reason"][:60],
            _when(q["time_ms"]),
            "yes" if q["skipped"] else "",
        )
    Console().print(table)


@quarantine.command("show")
@CONFIG_OPTION
@click.argument("batch_id", type=click.IntRange(1))
@TOKEN_FILE
@friendly
def quarantine_show(config_path: Path, batch_id: int, token_file: Path | None) -> None:
    """One quarantined batch: header, record types and counts (no personal data), decisions."""
    config = load_config(config_path)
    _print(call_node(config, "GET", f"/v1/admin/quarantine/{batch_id}", None, _token(token_file)))


def _decision(action: str, help_text: str) -> None:
    @quarantine.command(action, help=help_text)
    @CONFIG_OPTION
    @click.argument("batch_id", type=click.IntRange(1))
    @click.option("--reason", required=True, help="Why (written to the audit log).")
    @TOKEN_FILE
    @friendly
    def command(config_path: Path, batch_id: int, reason: str, token_file: Path | None) -> None:
        config = load_config(config_path)
        doc = call_node(
            config,
            "POST",
            f"/v1/admin/quarantine/{batch_id}/{action}",
            {"reason": reason},
            _token(token_file),
        )
        b = doc["batch"]
        click.echo(f"{action}: batch {batch_id} ({b['origin']} {b['first_seq']}-{b['last_seq']})")


_decision(
    "replay",
    "Lift the quarantine: the batch is sent again, byte for byte, with the batches it held back "
    "(after the cause was fixed, e.g. the parent now has the standards release it needs).",
)
_decision(
    "skip",
    "Give up on the batch: it is marked delivered without being delivered. Later batches of "
    "the same origin and epoch stay held (the parent accepts no gap); use it for batches made "
    "obsolete, e.g. when the origin was re-initialised with a new epoch.",
)
