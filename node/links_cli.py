"""`lsnet links …`: the upward link of a node and the operator actions on it.

`lsnet links` reads the node's own database (it works while the node is stopped, e.g. after a
crash). The subcommands (retry, pause, resume, resend, errors, quarantine list/show/replay/skip,
held list/show/replay/skip/recheck) call the running node's admin API with an operator token
from LSNET_OPERATOR_TOKEN or `--token-file` (never from the command line, where `ps` would show
it): the running node acts at once and audits the action with the token's name. Parsing and
printing only.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from hierarchy_config.loader import load_config
from hierarchy_config.model import NodeConfig
from node.cli import CliFailure, friendly, main
from node.clock import SystemClock
from node.db import Database
from node.network_cli import CONFIG_OPTION, JSON_OPTION, TOKEN_ENV, call_node, when


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
        kept = await admin.held_counts()
    finally:
        await asyncio.to_thread(db.close)
    return {
        "node": config.node_id,
        "links": links,
        "quarantined": held,
        "skipped": skipped,
        "held_records": kept["held"],
    }


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
            "now" if not retry or retry <= now else when(retry),
            when(link["last_success_ms"]),
            (link["last_error"] or "-")[:80],
        )
    if doc["links"]:
        Console().print(table)
    click.echo(
        f"quarantined batches waiting: {doc['quarantined']} (skipped: {doc['skipped']}); "
        "see 'lsnet links quarantine list'"
    )
    if doc["held_records"]:
        click.echo(
            f"received records held aside as invalid: {doc['held_records']}; "
            "see 'lsnet links held list'"
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


@links.command("ask-resend")
@CONFIG_OPTION
@click.argument("child")
@click.option("--from-seq", type=click.IntRange(1), required=True, help="First seq wanted again.")
@click.option("--origin", default=None, help="Whose batches (default: the child's own).")
@click.option("--reason", required=True, help="Why (written to the audit log).")
@TOKEN_FILE
@friendly
def links_ask_resend(
    config_path: Path,
    child: str,
    from_seq: int,
    origin: str | None,
    reason: str,
    token_file: Path | None,
) -> None:
    """Ask a CHILD for batches again from a seq (its own or, for a province, a city's), e.g.
    after rows were lost or damaged here. The request travels with the answer to the child's
    next heartbeat; the batches are then taken as a repair (missing or differing records are
    written again, version-guarded). 'lsnet links resend-requests' shows its progress."""
    config = load_config(config_path)
    body = {"from_seq": from_seq, "origin": origin or child, "reason": reason}
    doc = call_node(config, "POST", f"/v1/admin/children/{child}/resend", body, _token(token_file))
    click.echo(f"request {doc['request']['request_id']} queued: {doc['delivery']}")


@links.command("resend-requests")
@CONFIG_OPTION
@JSON_OPTION
@TOKEN_FILE
@friendly
def links_resend_requests(config_path: Path, as_json: bool, token_file: Path | None) -> None:
    """Requests for batches again sent to children: pending or acknowledged, batches repaired."""
    config = load_config(config_path)
    doc = call_node(config, "GET", "/v1/admin/children/resend", None, _token(token_file))
    if as_json:
        _print(doc)
        return
    if not doc["requests"]:
        click.echo("no requests since the node started")
        return
    table = Table("id", "child", "origin", "from seq", "asked", "state", "repaired", "by")
    for r in doc["requests"]:
        table.add_row(
            str(r["request_id"]),
            r["child"],
            r["origin"],
            str(r["from_seq"]),
            when(r["requested_ms"]),
            r["state"],
            str(r["repaired_batches"]),
            r["operator"],
        )
    Console().print(table)


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
        click.echo(f"{when(e['time_ms'])}  {e['message']}")


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
            when(q["time_ms"]),
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


def _decision(
    group: click.Group,
    path: str,
    action: str,
    help_text: str,
    say: Callable[[str, int, dict[str, Any]], str],
) -> None:
    """Register `action` (replay or skip, with a reason) under `group`: POST {path}/{id}/{action}
    on the running node, then print what `say` makes of the answer."""

    @group.command(action, help=help_text)
    @CONFIG_OPTION
    @click.argument("item_id", metavar="ID", type=click.IntRange(1))
    @click.option("--reason", required=True, help="Why (written to the audit log).")
    @TOKEN_FILE
    @friendly
    def command(config_path: Path, item_id: int, reason: str, token_file: Path | None) -> None:
        config = load_config(config_path)
        body = {"reason": reason}
        doc = call_node(config, "POST", f"{path}/{item_id}/{action}", body, _token(token_file))
        click.echo(say(action, item_id, doc))


def _said_of_batch(action: str, batch_id: int, doc: dict[str, Any]) -> str:
    b = doc["batch"]
    return f"{action}: batch {batch_id} ({b['origin']} {b['first_seq']}-{b['last_seq']})"


_decision(
    quarantine,
    "/v1/admin/quarantine",
    "replay",
    "Lift the quarantine: the batch is sent again, byte for byte, with the batches it held back "
    "(after the cause was fixed, e.g. the parent now has the standards release it needs).",
    _said_of_batch,
)
_decision(
    quarantine,
    "/v1/admin/quarantine",
    "skip",
    "Give up on the batch: it is marked delivered without being delivered. Later batches of "
    "the same origin and epoch stay held (the parent accepts no gap); use it for batches made "
    "obsolete, e.g. when the origin was re-initialised with a new epoch.",
    _said_of_batch,
)


@links.group("held")
def held() -> None:
    """Received records held aside as invalid (poison records). A child's batch whose records
    fail this node's validation is applied without them when the record type's policy is
    'hold' ([sync] on_invalid_record, the default), so nothing behind it is blocked; the
    records wait here for a decision. A new standards release re-checks them by itself."""


@held.command("list")
@CONFIG_OPTION
@click.option("--all", "include_decided", is_flag=True, help="Include replayed and skipped ones.")
@JSON_OPTION
@TOKEN_FILE
@friendly
def held_list(
    config_path: Path, include_decided: bool, as_json: bool, token_file: Path | None
) -> None:
    """Held records with origin, seq, record type, reason and time (no personal data)."""
    config = load_config(config_path)
    suffix = "?all=1" if include_decided else ""
    doc = call_node(config, "GET", f"/v1/admin/held{suffix}", None, _token(token_file))
    if as_json:
        _print(doc)
        return
    counts = doc["counts"]
    if not doc["held"]:
        click.echo(
            f"no held records waiting (replayed {counts['released']}, skipped {counts['skipped']})"
        )
        return
    table = Table("id", "origin", "seq", "type", "version", "reason", "since", "state")
    for h in doc["held"]:
        table.add_row(
            str(h["id"]),
            h["origin"],
            str(h["seq"]),
            h["record_type"],
            str(h["version"]),
            h["message"][:70],
            when(h["held_ms"]),
            h["state"],
        )
    Console().print(table)


@held.command("show")
@CONFIG_OPTION
@click.argument("held_id", type=click.IntRange(1))
@TOKEN_FILE
@friendly
def held_show(config_path: Path, held_id: int, token_file: Path | None) -> None:
    """One held record: origin, seq, type, version, why it was held, and the decision."""
    config = load_config(config_path)
    _print(call_node(config, "GET", f"/v1/admin/held/{held_id}", None, _token(token_file)))


def _said_of_held(action: str, held_id: int, doc: dict[str, Any]) -> str:
    h = doc["held"]
    what = f"held record {held_id} ({h['origin']} seq {h['seq']}, {h['record_type']})"
    if action == "replay" and h.get("superseded"):
        return f"replayed: {what}; a newer version was already applied, which stays"
    return f"{'replayed' if action == 'replay' else 'skipped'}: {what}"


_decision(
    held,
    "/v1/admin/held",
    "replay",
    "Validate the record again with the rules in force now and apply it (an older version never "
    "overwrites a newer one). Refused with 'still_invalid', changing nothing, if it still fails.",
    _said_of_held,
)
_decision(
    held,
    "/v1/admin/held",
    "skip",
    "Leave the record out for good (it stays listed, with the reason).",
    _said_of_held,
)


@held.command("recheck")
@CONFIG_OPTION
@click.option("--reason", required=True, help="Why (written to the audit log).")
@TOKEN_FILE
@friendly
def held_recheck(config_path: Path, reason: str, token_file: Path | None) -> None:
    """Replay every held record that passes the rules in force now; the others stay held."""
    config = load_config(config_path)
    body = {"reason": reason}
    doc = call_node(config, "POST", "/v1/admin/held/recheck", body, _token(token_file))
    click.echo(f"applied {doc['released']} held records; {doc['still_held']} still fail")
