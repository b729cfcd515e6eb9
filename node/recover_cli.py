"""`lsnet node recover --from-parent`: rebuild a node that lost its database from the signed
copy its parent holds (`sync.restore`). Registers itself on the `node` command group.

It needs the node's configuration and its own key (the batches are verified against it) and an
empty database; it does not start the node.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from node.cli import CliFailure, _load, _node_key, friendly, node_group


@node_group.command("recover")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option(
    "--from-parent",
    "from_parent",
    is_flag=True,
    required=True,
    help="Fetch this node's own signed batches from its parent (the only source for now).",
)
@click.option(
    "--epoch",
    default="",
    help="The database epoch to restore (default: the newest the parent knows for this node).",
)
@friendly
def node_recover(config_path: Path, from_parent: bool, epoch: str) -> None:
    """Rebuild this node's records and change log after its database was lost.

    The parent keeps a signed copy of every change this node sent. They are fetched page by
    page, each batch is verified against THIS node's key and hash chain, and written together
    with the sequence counters, keeping the old epoch: after `lsnet node run` the node goes on
    at the next sequence number and the parent accepts its new changes as usual. Changes that
    never reached the parent cannot be recovered; the output says up to which one it restored.
    Run it with the node stopped and an empty (or missing) database.
    """
    from node.app import Node
    from node.db import Database
    from sync.errors import PeerRejected, PeerUnavailable
    from sync.restore import RestoreError, restore_from_parent

    config = _load(config_path)
    parent = config.parent
    if parent is None:
        raise CliFailure(f"node {config.node_id} has no parent; there is nothing to recover from")
    key = _node_key(config)

    async def run() -> str:
        node = Node.open(config, key=key)  # for its transport (TLS, request signing)
        db: Database = node.db
        try:
            await asyncio.to_thread(db.migrate)
            result = await restore_from_parent(
                config=config,
                key=key,
                db=db,
                transport=node.transport,
                clock=node.clock,
                epoch=epoch,
            )
        finally:
            await node.transport.close()
            await asyncio.to_thread(db.close)
        return (
            f"node {config.node_id}: restored {result.last_seq} changes "
            f"({result.batches} signed batches) of epoch {result.epoch} from {parent.id}; "
            "start it with 'lsnet node run'"
        )

    try:
        message = asyncio.run(run())
    except RestoreError as exc:
        raise CliFailure(f"recover failed: {exc}") from None
    except PeerRejected as exc:
        raise CliFailure(f"parent refused the restore: {exc}") from None
    except PeerUnavailable as exc:
        raise CliFailure(f"parent not reachable: {exc}; check that it runs and retry") from None
    click.echo(message)
