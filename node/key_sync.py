"""Key rotations and revocations inside a running node, and their distribution (issue 4, item 4).

- **Rotation upward**: a node announces its new key to its parent (`POST /v1/keys/announce`,
  signed with the old key). The parent checks it against the old key it trusts, stores it,
  trusts the new key from then on and passes the announcement to its own parent *before*
  answering, so when the announcing node starts signing with the new key every ancestor — the
  ministry included — already accepts it. Old batches stay verifiable with the old key.
- **Rotation downward**: a node whose key was rotated attaches its announcement to what it signs
  (`LSNet-Key-Announcement`), so its children learn the new key from the first answer that uses
  it (`PeerAuth`), checked against the old key they trust.
- **Revocation**: issued at any node for a key in its subtree (`lsnet keys revoke`); pushed to the
  parent by a scheduled job (`POST /v1/keys/revocations`) until acknowledged, and pulled by
  children from their parent (`POST /v1/keys/events` with `{after: N}`). A node accepts from
  its parent any revocation, and from a child only revocations of keys of that child's subtree.
  Once known,
  nothing new signed with the key is accepted anywhere: requests, batches, reports.

Storage is the `key_events` table (one row per signed document, written in one transaction with
its audit entry). What this does not do: it does not generate or store private keys (the CLI in
`node.keys_cli` does) and it does not verify HTTP signatures (`node.peer_auth`).
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgpack
from sqlalchemy import Connection, insert, select, update

from node.db import Database
from node.schema import key_events
from security.audit import AuditKind
from security.key_docs import (
    KIND_REVOCATION,
    KIND_ROTATION,
    KeyDocInvalid,
    Revocation,
    Rotation,
    apply_rotation,
    check_rotation,
    make_revocation,
    parse_revocation,
    parse_rotation,
)
from security.keyring import KeyRing
from sync.errors import PeerRejected, PeerUnavailable

if TYPE_CHECKING:
    from node.app import Node

log = logging.getLogger("lsnet.keys")

ANNOUNCE_PATH = "/v1/keys/announce"
REVOCATIONS_PATH = "/v1/keys/revocations"
EVENTS_PATH = "/v1/keys/events"
MAX_EVENTS_PER_ANSWER = 500
PULL_INTERVAL_S = 30.0


class KeySyncError(Exception):
    """A key document refused here; `code` and `status` go on the wire."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class StoredEvent:
    id: int
    kind: str
    doc: bytes


def _insert_txn(
    conn: Connection,
    kind: str,
    node_id: str,
    kid: str,
    doc: bytes,
    received_from: str,
    now_ms: int,
    forwarded_ms: int,
) -> bool:
    exists = conn.execute(
        select(key_events.c.id).where(
            key_events.c.kind == kind, key_events.c.node_id == node_id, key_events.c.kid == kid
        )
    ).first()
    if exists is not None:
        return False
    conn.execute(
        insert(key_events).values(
            kind=kind,
            node_id=node_id,
            kid=kid,
            doc=doc,
            received_from=received_from,
            received_ms=now_ms,
            forwarded_ms=forwarded_ms,
        )
    )
    return True


def _all_txn(conn: Connection, after_id: int, limit: int) -> list[StoredEvent]:
    rows = conn.execute(
        select(key_events.c.id, key_events.c.kind, key_events.c.doc)
        .where(key_events.c.id > after_id)
        .order_by(key_events.c.id)
        .limit(limit)
    ).all()
    return [StoredEvent(int(r.id), str(r.kind), bytes(r.doc)) for r in rows]


def _pending_txn(conn: Connection, limit: int) -> list[StoredEvent]:
    rows = conn.execute(
        select(key_events.c.id, key_events.c.kind, key_events.c.doc)
        .where(key_events.c.forwarded_ms == 0)
        .order_by(key_events.c.id)
        .limit(limit)
    ).all()
    return [StoredEvent(int(r.id), str(r.kind), bytes(r.doc)) for r in rows]


def _mark_txn(conn: Connection, ids: list[int], now_ms: int) -> None:
    conn.execute(update(key_events).where(key_events.c.id.in_(ids)).values(forwarded_ms=now_ms))


def record_rotation_txn(
    conn: Connection, rotation: Rotation, received_from: str, now_ms: int, forwarded_ms: int
) -> bool:
    """Store an announcement (the CLI's own rotation, or one received); False if known."""
    return _insert_txn(
        conn,
        KIND_ROTATION,
        rotation.node,
        rotation.new_kid,
        rotation.doc,
        received_from,
        now_ms,
        forwarded_ms,
    )


def _apply_events(
    events: list[StoredEvent], ring: KeyRing, own_id: str, own_kid: str
) -> bytes | None:
    """Apply stored rotations and revocations to `ring` (this node's own rotations are not
    applied: its key comes from its key file); return this node's announcement of `own_kid`,
    if one is among them. A document that no longer checks is logged and skipped."""
    own: bytes | None = None
    for event in events:
        try:
            if event.kind == KIND_ROTATION:
                rotation = parse_rotation(event.doc)
                if rotation.node == own_id:
                    if rotation.new_kid == own_kid:
                        own = event.doc
                    continue
                apply_rotation(check_rotation(event.doc, ring), ring)
            else:
                rev = parse_revocation(event.doc)
                ring.revoke(rev.node, rev.kid, rev.at_ms, rev.reason)
        except KeyDocInvalid as exc:
            log.warning("stored key document %d not applied: %s", event.id, exc.message)
    return own


async def apply_stored(db: Database, ring: KeyRing, own_id: str) -> None:
    """Apply every stored rotation and revocation to `ring` (for tools that read a database
    without running the node, e.g. `lsnet verify`)."""
    _apply_events(await db.read(_all_txn, 0, 1_000_000), ring, own_id, "")


class KeySync:
    """The key-lifecycle side of one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.pulled_after = 0  # the parent's last key_events id seen by this node
        self.own_announcement: bytes | None = None
        self._learned: list[Rotation] = []
        self.loaded_upto = 0  # key_events rows applied to the ring so far

    # -- start-up ---------------------------------------------------------------------------------
    async def load(self) -> None:
        """Apply stored rotations and revocations not applied yet to the node's key ring (at
        start-up, and by the key-sync job: a revocation written by `lsnet keys revoke` while
        the node runs takes effect at the next run)."""
        node = self.node
        events = await node.db.read(_all_txn, self.loaded_upto, 1_000_000)
        if events:
            self.loaded_upto = max(e.id for e in events)
        own = _apply_events(events, node.keyring, node.config.node_id, node.key.kid)
        self.own_announcement = own or self.own_announcement
        if self.own_announcement is not None and self.node.peer_auth is not None:
            self.node.peer_auth.announcement = base64.b64encode(self.own_announcement).decode()

    # -- rotation ---------------------------------------------------------------------------------
    def _in_subtree_of(self, node_id: str, sender: str) -> bool:
        return node_id == sender or self.node.config.route_of(node_id) == sender

    async def accept_rotation(self, doc: bytes, sender: str) -> Rotation:
        """A child's (or its subtree's) announcement: check, store, trust, tell the parent."""
        try:
            rotation = parse_rotation(doc)
        except KeyDocInvalid as exc:
            raise KeySyncError(exc.code, exc.message) from None
        if not self._in_subtree_of(rotation.node, sender):
            raise KeySyncError(
                "not_authorised",
                f"node {sender} may not announce keys of {rotation.node}",
                403,
            )
        ring = self.node.keyring
        known = ring.entry(rotation.node, rotation.new_kid) is not None
        if not known:
            try:
                check_rotation(doc, ring)
            except KeyDocInvalid as exc:
                raise KeySyncError(exc.code, exc.message, 401) from None
            now = self.node.clock.time_ms()
            audit = self.node.security.audit if self.node.security is not None else None

            def store(conn: Connection) -> bool:
                new = record_rotation_txn(conn, rotation, sender, now, 0)
                if new and audit is not None:
                    audit.record_txn(
                        conn,
                        AuditKind.KEY_ROTATED,
                        peer=sender,
                        code="announced",
                        detail={
                            "node": rotation.node,
                            "old_kid": rotation.old_kid,
                            "new_kid": rotation.new_kid,
                            "overlap_ms": rotation.overlap_ms,
                        },
                    )
                return new

            await self.node.db.write(store)
            apply_rotation(rotation, ring)
            log.info(
                "KEY [%s] %s rotated key %s -> %s",
                sender,
                rotation.node,
                rotation.old_kid,
                rotation.new_kid,
            )
        await self.forward_pending()
        return rotation

    async def forward_pending(self) -> int:
        """Send not-yet-acknowledged rotations and revocations to the parent. Raises
        KeySyncError(503) if the parent cannot be reached (the caller retries)."""
        parent = self.node.config.parent
        if parent is None:
            return 0
        pending = await self.node.db.read(_pending_txn, 100)
        sent: list[int] = []
        try:
            for event in pending:
                if event.kind == KIND_ROTATION:
                    await self.node.transport.post(parent.id, parent.url + ANNOUNCE_PATH, event.doc)
                    sent.append(event.id)
            revocations = [e for e in pending if e.kind == KIND_REVOCATION]
            if revocations:
                body = msgpack.packb({"docs": [e.doc for e in revocations]}, use_bin_type=True)
                await self.node.transport.post(parent.id, parent.url + REVOCATIONS_PATH, body)
                sent.extend(e.id for e in revocations)
        except PeerUnavailable as exc:
            raise KeySyncError(
                "parent_unavailable",
                f"the parent {parent.id} could not be told yet ({exc}); try again",
                503,
            ) from None
        except PeerRejected as exc:
            raise KeySyncError(
                exc.code, f"the parent {parent.id} refused: {exc.message}", 502
            ) from None
        finally:
            if sent:
                await self.node.db.write(_mark_txn, sent, self.node.clock.time_ms())
        return len(sent)

    def learn_from_header(self, value: str) -> None:
        """A neighbour's announcement attached to a signed message: trust its new key if the
        old one is trusted here (stored by the next start-up pass or by `keep`)."""
        try:
            doc = base64.b64decode(value, validate=True)
            rotation = check_rotation(doc, self.node.keyring)
        except (ValueError, KeyDocInvalid):
            return
        if self.node.keyring.entry(rotation.node, rotation.new_kid) is None:
            apply_rotation(rotation, self.node.keyring)
            self._learned.append(rotation)

    async def keep_learned(self) -> None:
        """Store announcements learned from headers (run by a job)."""
        learned, self._learned = self._learned, []
        now = self.node.clock.time_ms()
        for rotation in learned:
            await self.node.db.write(record_rotation_txn, rotation, rotation.node, now, now)

    # -- revocation -------------------------------------------------------------------------------
    async def revoke(self, node_id: str, kid: str, reason: str, operator: str) -> Revocation:
        """Revoke a key at this node (an operator's decision) and start distributing it."""
        outside = node_id != self.node.config.node_id and self.node.config.route_of(node_id) is None
        if outside and self.node.config.parent is not None:  # the ministry may revoke any key
            raise KeySyncError(
                "not_authorised",
                f"node {node_id} is not in this node's subtree; revoke it where it is",
                403,
            )
        rev = make_revocation(
            self.node.config.node_id, self.node.key, node_id, kid, self.node.clock.time_ms(), reason
        )
        await self._store_revocation(rev, "", forwarded=False, operator=operator)
        return rev

    async def accept_revocations(self, body: bytes, sender: str) -> int:
        try:
            docs = msgpack.unpackb(
                body, raw=False, max_bin_len=4096, max_array_len=1000, max_map_len=4
            )["docs"]
            if not isinstance(docs, list) or not all(isinstance(d, bytes) for d in docs):
                raise TypeError
        except Exception:
            raise KeySyncError("malformed", "expected {docs: [bytes ...]}") from None
        from_parent = self.node.config.parent is not None and sender == self.node.config.parent.id
        taken = 0
        for doc in docs:
            try:
                rev = parse_revocation(doc, self.node.keyring)
            except KeyDocInvalid as exc:
                raise KeySyncError(exc.code, exc.message, 401) from None
            if not from_parent and not self._in_subtree_of(rev.node, sender):
                raise KeySyncError(
                    "not_authorised",
                    f"node {sender} may not revoke keys of {rev.node}",
                    403,
                )
            if await self._store_revocation(rev, sender, forwarded=from_parent, operator=""):
                taken += 1
        return taken

    async def _store_revocation(
        self, rev: Revocation, sender: str, *, forwarded: bool, operator: str
    ) -> bool:
        now = self.node.clock.time_ms()
        audit = self.node.security.audit if self.node.security is not None else None

        def store(conn: Connection) -> bool:
            new = _insert_txn(
                conn,
                KIND_REVOCATION,
                rev.node,
                rev.kid,
                rev.doc,
                sender,
                now,
                now if forwarded else 0,
            )
            if new and audit is not None:
                detail: dict[str, str | int | bool] = {
                    "node": rev.node,
                    "kid": rev.kid,
                    "issuer": rev.issuer,
                    "reason": rev.reason[:120],
                }
                if operator:
                    detail["operator"] = operator[:64]
                audit.record_txn(
                    conn, AuditKind.KEY_REVOKED, peer=sender, code="revoked", detail=detail
                )
            return new

        new = await self.node.db.write(store)
        self.node.keyring.revoke(rev.node, rev.kid, rev.at_ms, rev.reason)
        if new:
            log.warning("KEY key %s of node %s revoked (issuer %s)", rev.kid, rev.node, rev.issuer)
        return new

    async def events_after(self, body: bytes) -> bytes:
        """The answer to a child's pull: key documents after the id it names."""
        try:
            after_id = msgpack.unpackb(body, raw=False, max_map_len=4)["after"]
            if not isinstance(after_id, int) or isinstance(after_id, bool) or after_id < 0:
                raise TypeError
        except Exception:
            raise KeySyncError("malformed", "expected {after: integer >= 0}") from None
        events = await self.node.db.read(_all_txn, after_id, MAX_EVENTS_PER_ANSWER)
        last = events[-1].id if events else after_id
        answer = {"events": [[e.id, e.kind, e.doc] for e in events], "last": last}
        data: bytes = msgpack.packb(answer, use_bin_type=True)
        return data

    async def pull_from_parent(self) -> int:
        """Child: fetch the parent's rotations and revocations after the last one seen."""
        parent = self.node.config.parent
        if parent is None:
            return 0
        url = parent.url + EVENTS_PATH
        request = msgpack.packb({"after": self.pulled_after}, use_bin_type=True)
        try:
            data = await self.node.transport.post(parent.id, url, request)
        except (PeerUnavailable, PeerRejected) as exc:
            log.info("KEY [%s] key events not fetched: %s", parent.id, exc)
            return 0
        try:
            answer = msgpack.unpackb(data, raw=False, max_bin_len=4096, max_array_len=10_000)
            events = answer["events"]
            last = int(answer["last"])
        except Exception:
            log.warning("KEY [%s] malformed key events answer", parent.id)
            return 0
        taken = 0
        revocations = []
        for item in events:
            if not isinstance(item, list) or len(item) != 3:
                continue
            _, kind, doc = item
            if kind == KIND_REVOCATION and isinstance(doc, bytes):
                revocations.append(doc)
            elif kind == KIND_ROTATION and isinstance(doc, bytes):
                self.learn_from_header(base64.b64encode(doc).decode())
        if revocations:
            body = msgpack.packb({"docs": revocations}, use_bin_type=True)
            try:
                taken = await self.accept_revocations(body, parent.id)
            except KeySyncError as exc:
                log.warning("KEY [%s] key events refused: %s", parent.id, exc.message)
                return 0
        await self.keep_learned()
        self.pulled_after = last
        return taken
