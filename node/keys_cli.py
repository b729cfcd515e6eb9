"""`lsnet keys rotate | revoke | list`: a node's key lifecycle from the command line.

rotate: make a new key, announce it to the parent signed with the old key (the parent passes it
up to the ministry before answering), then keep the old key file as `<key>.retired-<kid>` and
write the new one in its place; restart the node to sign with it. The old key keeps working for
the overlap window, and what it signed stays verifiable. revoke: mark a key of this node's
subtree as compromised; it spreads up and down the tree with the key-sync job. list: the keys
this node trusts, with their windows and revocations.

Parsing and printing only: the work is done by `security.key_docs` and `node.key_sync`.
"""

from __future__ import annotations

import asyncio
import getpass
from datetime import UTC, datetime
from pathlib import Path

import click
from sqlalchemy import Connection

from hierarchy_config.loader import load_config
from node.cli import CliFailure, _node_key, _node_passphrase, friendly, keys
from node.clock import SystemClock
from node.key_sync import ANNOUNCE_PATH, KeySyncError, record_rotation_txn
from node.peer_auth import PeerAuth
from security.audit import AuditKind, AuditLog
from security.http_signatures import Signer
from security.key_docs import make_rotation
from security.keyring import KeyRing
from security.keys import NodeKey, is_sealed_key_file, retired_key_path, write_key_file
from sync.errors import PeerRejected, PeerUnavailable
from sync.transport import HttpTransport


def _iso(ms: int | None) -> str:
    if ms is None or ms == 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _operator() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""


@keys.command("rotate")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option(
    "--overlap-hours",
    type=click.FloatRange(min=0.0, max=720.0),
    default=24.0,
    show_default=True,
    help="How long the old key keeps being accepted for new messages (restart within it).",
)
@friendly
def keys_rotate(config_path: Path, overlap_hours: float) -> None:
    """Replace this node's key by a new one, announced to the whole path to the ministry.

    Nothing changes on disk unless the parent (and through it every ancestor) accepted the
    announcement. Afterwards restart the node; until then, and for the overlap window, the old
    key still works. The old key file is kept as <key file>.retired-<kid>."""
    config = load_config(config_path)
    key_file = config.node.key_file
    passphrase = _node_passphrase() if is_sealed_key_file(key_file) else None
    old = _node_key(config)
    new = NodeKey.generate()
    clock = SystemClock()
    now = clock.time_ms()
    rotation = make_rotation(config.node_id, old, new, now, int(overlap_hours * 3600 * 1000))
    parent = config.parent
    if parent is not None:
        ring = KeyRing.from_keys({parent.id: parent.verify_key})
        auth = PeerAuth(
            config.node_id, Signer(config.node_id, old), ring, clock, {parent.url: parent.id}
        )
        from node.tls import client_context

        transport = HttpTransport(
            timeout_s=max(config.sync.request_timeout_s, 60.0),
            ssl_context=client_context(config),
            middlewares=(auth.middleware,),
        )

        async def announce() -> None:
            try:
                await transport.post(parent.id, parent.url + ANNOUNCE_PATH, rotation.doc)
            finally:
                await transport.close()

        try:
            asyncio.run(announce())
        except PeerRejected as exc:
            raise CliFailure(
                f"parent {parent.id} refused the new key ({exc.code}: {exc.message}); "
                "nothing changed"
            ) from None
        except PeerUnavailable as exc:
            raise CliFailure(
                f"parent {parent.id} could not be told ({exc}); nothing changed, try again"
            ) from None

    from node.db import Database

    async def record() -> None:
        db = Database(config.node.database)
        try:
            db.check_schema()
            audit = AuditLog(db, old, config.node_id, clock)

            def store(conn: Connection) -> None:
                record_rotation_txn(conn, rotation, config.node_id, now, now)
                audit.record_txn(
                    conn,
                    AuditKind.KEY_ROTATED,
                    code="rotated",
                    detail={
                        "node": config.node_id,
                        "old_kid": old.kid,
                        "new_kid": new.kid,
                        "overlap_ms": rotation.overlap_ms,
                        "operator": _operator()[:64],
                    },
                )

            await db.write(store)
        finally:
            await asyncio.to_thread(db.close)

    asyncio.run(record())
    retired = retired_key_path(key_file, old.kid)
    write_key_file(retired, old, overwrite=True, passphrase=passphrase)
    write_key_file(key_file, new, overwrite=True, passphrase=passphrase)
    click.echo(f"new key id:  {new.kid} (public key {new.public})")
    click.echo(f"old key id:  {old.kid}, kept as {retired}")
    if parent is not None:
        click.echo(f"announced to {parent.id} and passed up to the ministry")
    click.echo(
        f"restart the node within {overlap_hours:g} h to sign with the new key "
        "(its children learn the new key from its first signed answer)"
    )


@keys.command("revoke")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option("--node", "node_id", required=True, help="Node whose key is compromised.")
@click.option("--kid", required=True, help="Key id to revoke (see 'lsnet keys list').")
@click.option("--reason", required=True, help="Why, for the audit log of every node.")
@friendly
def keys_revoke(config_path: Path, node_id: str, kid: str, reason: str) -> None:
    """Revoke a compromised key of a node of this node's subtree (the ministry: any node).

    From then on this node refuses everything new signed with it; the revocation is sent to the
    parent and fetched by the children within the key-sync interval, so no node of the tree
    accepts the key. The node must enrol a new key (`lsnet node enroll` at its parent)."""
    from node.app import Node

    config = load_config(config_path)

    async def run() -> str:
        node = Node.open(config, key=_node_key(config))
        try:
            node.db.check_schema()
            assert node.key_sync is not None
            await node.key_sync.load()
            if node.keyring.entry(node_id, kid) is None and not node.keyring.knows(node_id):
                raise CliFailure(f"node {node_id} is not known at {config.node_id}")
            rev = await node.key_sync.revoke(node_id, kid, reason, _operator())
            return rev.issuer
        except KeySyncError as exc:
            raise CliFailure(exc.message) from None
        finally:
            await node.stop()

    issuer = asyncio.run(run())
    click.echo(f"revoked key {kid} of node {node_id} (issued by {issuer}); it spreads through")
    click.echo("the tree with the key-sync job; the running node applies it within that interval")


@keys.command("list")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@friendly
def keys_list(config_path: Path) -> None:
    """The keys this node trusts: enrolled, rotated (with their windows) and revoked."""
    from node.app import Node

    config = load_config(config_path)

    async def run() -> KeyRing:
        node = Node.open(config, key=_node_key(config))
        try:
            node.db.check_schema()
            assert node.key_sync is not None
            await node.key_sync.load()
            return node.keyring
        finally:
            await node.stop()

    ring = asyncio.run(run())
    click.echo(f"{'node':<10} {'kid':<17} {'valid from':<26} {'valid until':<26} state")
    for e in sorted(ring.entries(), key=lambda e: (e.node_id, e.valid_from_ms)):
        state = f"REVOKED ({e.reason})" if e.revoked_ms is not None else "trusted"
        click.echo(
            f"{e.node_id:<10} {e.kid:<17} {_iso(e.valid_from_ms):<26} "
            f"{_iso(e.valid_until_ms):<26} {state}"
        )
