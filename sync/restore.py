"""Restore from parent: a node that lost its database rebuilds its own history from the signed
batches its parent holds (DESIGN §4 "Recovery").

Parent side (`RestoreServer`, `POST /v1/sync/restore`): an enrolled direct child, authenticated
by its signed request (`sync.child_gate`), gets pages of *its own* stored batches — never
another origin's — for the epoch it names (or the newest epoch the parent knows of it).

Child side (`restore_from_parent`): every batch is verified against the node's OWN key and hash
chain (origin, key id, signature, body digest, contiguous seqs, `prev` links from the start);
each page is written in one transaction — records, change log, the batch store (acknowledged:
the parent holds them) and the sequence counters and chain head — keeping the epoch, so the
node resumes at the next seq without re-sending or losing anything the parent held. Changes the
parent never received are gone; the result says up to which seq the node was restored.
The parent limits each child's request rate (`ChildGate.throttle`); a page answered 429 is asked
for again after `RATE_LIMITED_WAIT_S`, up to `RATE_LIMITED_WAITS` times in a row.
End-to-end probes (`network_mgmt.probe`) come back into the change log (they hold seqs) but never
into `records`.

This module does not restore relayed batches of a node's own children (they resend theirs).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy import Connection, func, select, update

from hierarchy_config.model import NodeConfig
from network_mgmt.probe import is_probe
from node.clock import Clock
from node.db import Database
from node.schema import batches, changelog, node_meta, records, watermarks
from node.store import payload_json, record_hash, upsert_record_rows
from security.keys import NodeKey
from security.signing import SignatureInvalid, sign, verify
from sync.ae_wire import (
    PURPOSE_RESTORE,
    PURPOSE_RESTORE_PAGE,
    RESTORE_PATH,
    RestorePage,
    RestoreRequest,
)
from sync.child_gate import ChildGate
from sync.errors import PeerRejected
from sync.metrics import SyncMetrics
from sync.receiver import ReceiveError
from sync.store import _store_batch, log_apply
from sync.transport import Transport
from sync.wire import (
    CONTENT_TYPE,
    PURPOSE_BATCH,
    ZERO_HASH,
    BatchHeader,
    Change,
    Sealed,
    SignedBatch,
    WireError,
    decode_body,
    header_hash,
    sha256,
)

if TYPE_CHECKING:
    from node.security_events import SecurityEvents

log = logging.getLogger("lsnet.sync")

RATE_LIMITED_WAIT_S = 1.0
RATE_LIMITED_WAITS = 30


class RestoreError(Exception):
    """The restore cannot go on: the message says why and what to do."""


# -- parent side -----------------------------------------------------------------------------------


def newest_epoch_txn(conn: Connection, origin: str) -> str:
    row = conn.execute(
        select(watermarks.c.epoch)
        .where(watermarks.c.origin == origin)
        .order_by(watermarks.c.first_seen_ms.desc())
        .limit(1)
    ).first()
    return "" if row is None else str(row.epoch)


def restore_page_txn(
    conn: Connection, origin: str, epoch: str, after_seq: int, max_batches: int, max_bytes: int
) -> tuple[str, int, list[SignedBatch], bool]:
    if not epoch:
        epoch = newest_epoch_txn(conn, origin)
    mark = conn.execute(
        select(watermarks.c.seq).where(watermarks.c.origin == origin, watermarks.c.epoch == epoch)
    ).scalar()
    rows = conn.execute(
        select(batches.c.header, batches.c.signature, batches.c.body, batches.c.size)
        .where(
            batches.c.origin == origin, batches.c.epoch == epoch, batches.c.first_seq > after_seq
        )
        .order_by(batches.c.first_seq)
        .limit(max_batches + 1)
    ).all()
    out: list[SignedBatch] = []
    size = 0
    for r in rows[:max_batches]:
        if out and size + r.size > max_bytes:
            break
        out.append(SignedBatch(bytes(r.header), bytes(r.signature), bytes(r.body)))
        size += r.size
    return epoch, int(mark or 0), out, len(out) < len(rows)


class RestoreServer:
    def __init__(
        self,
        *,
        config: NodeConfig,
        key: NodeKey,
        db: Database,
        clock: Clock,
        metrics: SyncMetrics,
        events: Callable[[], SecurityEvents | None],
    ) -> None:
        self.config = config
        self.key = key
        self.db = db
        self.gate = ChildGate(config, clock, metrics, events)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = await self.gate.read(request)
            req = self.gate.open(body, PURPOSE_RESTORE, RestoreRequest.from_bytes, request)
            self.gate.throttle(req.sender)
        except ReceiveError as exc:
            return await self.gate.refuse(request, exc, "restore")
        limits = self.config.limits
        epoch, held, page, more = await self.db.read(
            restore_page_txn,
            req.sender,  # only the sender's own batches, whatever it asks
            req.epoch,
            req.after_seq,
            limits.max_batches_per_transfer,
            max(limits.max_body_bytes // 2, 1024),
        )
        log.info(
            "RESTORE [%s] sent %d batches after seq %d of epoch %s",
            req.sender,
            len(page),
            req.after_seq,
            epoch[:8],
        )
        reply = RestorePage(
            self.config.node_id, req.sender, req.nonce, epoch, held, tuple(page), more
        )
        envelope = reply.to_bytes()
        sealed = Sealed(envelope, sign(self.key, PURPOSE_RESTORE_PAGE, envelope))
        return web.Response(body=sealed.to_bytes(), content_type=CONTENT_TYPE)


# -- child side ------------------------------------------------------------------------------------


@dataclass
class RestoreResult:
    epoch: str
    last_seq: int
    batches: int
    parent_held: int


@dataclass(frozen=True)
class OwnBatch:
    header: BatchHeader
    signed: SignedBatch
    header_hash: bytes
    changes: list[Change]


def verify_own(signed: SignedBatch, key: NodeKey, node_id: str, epoch: str) -> OwnBatch:
    """A batch this node made: its origin, its key, intact body. Raises RestoreError."""
    try:
        header = BatchHeader.from_bytes(signed.header_bytes)
        if header.origin != node_id or header.epoch != epoch:
            raise RestoreError(
                f"the parent sent a batch of {header.origin} epoch {header.epoch[:8]}; "
                f"expected {node_id} epoch {epoch[:8]}"
            )
        if header.kid != key.kid:
            raise RestoreError(
                f"batch [{header.first_seq}, {header.last_seq}] names key {header.kid}, this "
                f"node's key is {key.kid}: restore with the key the node had"
            )
        verify(key.verify_key, PURPOSE_BATCH, signed.header_bytes, signed.signature)
        if sha256(signed.body) != header.digest:
            raise RestoreError(f"batch [{header.first_seq}, {header.last_seq}]: body was altered")
        changes = decode_body(signed.body, header)
    except (WireError, SignatureInvalid) as exc:
        raise RestoreError(f"the parent sent a batch that does not verify: {exc}") from None
    return OwnBatch(header, signed, header_hash(signed.header_bytes), changes)


def write_page_txn(
    conn: Connection, node_id: str, epoch: str, page: list[OwnBatch], now_ms: int
) -> None:
    """One page of the restore, in one transaction: records, change log, batches, counters."""
    meta = conn.execute(select(node_meta).where(node_meta.c.id == 1)).mappings().first()
    if meta is None:
        conn.execute(
            node_meta.insert().values(
                id=1,
                node_id=node_id,
                epoch=epoch,
                created_ms=now_ms,
                last_seq=0,
                batched_seq=0,
                chain_head=ZERO_HASH,
            )
        )
    log_rows = []
    rec_rows = []
    for ob in page:
        h = ob.header
        for c in ob.changes:
            body = payload_json(c.payload)
            log_rows.append(
                {
                    "seq": c.seq,
                    "record_type": c.record_type,
                    "key": c.key,
                    "version": c.version,
                    "deleted": c.deleted,
                    "payload": body,
                    "standards": c.standards,
                    "created_ms": h.created_ms,
                }
            )
            if is_probe(c.record_type):
                continue  # a probe holds its seq in the change log; it is never a record
            rec_rows.append(
                {
                    "record_type": c.record_type,
                    "owner": node_id,
                    "key": c.key,
                    "version": c.version,
                    "deleted": c.deleted,
                    "payload": body,
                    "standards": c.standards,
                    "hash": record_hash(
                        c.record_type, node_id, c.key, c.version, c.deleted, c.payload
                    ),
                    "epoch": epoch,
                    "seq": c.seq,
                    "updated_ms": now_ms,
                }
            )
        _store_batch(conn, h, ob.signed, ob.header_hash, source="local", acked=True, now_ms=now_ms)
        log_apply(conn, h, ob.header_hash, "restore", now_ms)
    if log_rows:
        conn.execute(changelog.insert(), log_rows)
    upsert_record_rows(conn, rec_rows)
    last = page[-1]
    conn.execute(
        update(node_meta)
        .where(node_meta.c.id == 1)
        .values(
            epoch=epoch,
            last_seq=last.header.last_seq,
            batched_seq=last.header.last_seq,
            chain_head=last.header_hash,
        )
    )


def check_empty_txn(conn: Connection, node_id: str) -> None:
    meta = conn.execute(select(node_meta).where(node_meta.c.id == 1)).mappings().first()
    held = conn.execute(select(func.count()).select_from(records)).scalar_one()
    if (meta is not None and meta["last_seq"] > 0) or held:
        raise RestoreError(
            "this node's database still holds data; restore only into an empty database "
            "(move the old database file away first)"
        )
    if meta is not None and meta["node_id"] != node_id:
        raise RestoreError(f"this database belongs to node {meta['node_id']}, not {node_id}")
    # An empty database made by 'lsnet node init' keeps its row until the first page replaces
    # its new epoch (in that page's transaction): a failed restore leaves it as it was.


async def restore_from_parent(
    *,
    config: NodeConfig,
    key: NodeKey,
    db: Database,
    transport: Transport,
    clock: Clock,
    epoch: str = "",
) -> RestoreResult:
    parent = config.parent
    if parent is None:
        raise RestoreError(f"node {config.node_id} has no parent to restore from")
    await db.write(check_empty_txn, config.node_id)
    after = 0
    prev = ZERO_HASH
    pages = 0
    count = 0
    held = 0
    waits = 0
    while True:
        nonce = os.urandom(16)
        req = RestoreRequest(config.node_id, parent.id, clock.time_ms(), nonce, epoch, after)
        envelope = req.to_bytes()
        try:
            answer = await transport.post(
                parent.id,
                parent.url + RESTORE_PATH,
                Sealed(envelope, sign(key, PURPOSE_RESTORE, envelope)).to_bytes(),
            )
        except PeerRejected as exc:
            # The parent limits each child's request rate: wait and ask for the same page again.
            if exc.status != 429 or waits >= RATE_LIMITED_WAITS:
                raise
            waits += 1
            await clock.sleep(RATE_LIMITED_WAIT_S)
            continue
        waits = 0
        try:
            sealed = Sealed.from_bytes(answer)
            verify(parent.verify_key, PURPOSE_RESTORE_PAGE, sealed.envelope, sealed.signature)
            page = RestorePage.from_bytes(
                sealed.envelope, max_batches=config.limits.max_batches_per_transfer
            )
        except (WireError, SignatureInvalid) as exc:
            raise RestoreError(f"the parent's answer does not verify: {exc}") from None
        if page.responder != parent.id or page.destination != config.node_id or page.nonce != nonce:
            raise RestoreError("the parent's answer is not for this request")
        if not page.epoch:
            raise RestoreError(f"parent {parent.id} holds nothing of node {config.node_id}")
        epoch = page.epoch
        held = page.held_seq
        own: list[OwnBatch] = []
        for signed in page.batches:
            ob = verify_own(signed, key, config.node_id, epoch)
            if ob.header.first_seq != after + 1 or ob.header.prev != prev:
                raise RestoreError(
                    f"the chain breaks at seq {ob.header.first_seq} (restored up to {after}); "
                    "the parent's copy is incomplete"
                )
            own.append(ob)
            after, prev = ob.header.last_seq, ob.header_hash
        if own:
            await db.write(write_page_txn, config.node_id, epoch, own, clock.time_ms())
            pages += 1
            count += len(own)
        if not page.more or not own:
            break
    if count == 0:
        raise RestoreError(f"parent {parent.id} holds no batches of node {config.node_id}")
    log.info("RESTORE restored seq 1..%d of epoch %s in %d pages", after, epoch[:8], pages)
    return RestoreResult(epoch, after, count, held)
