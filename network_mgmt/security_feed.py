"""Security feed: the audit entries of a whole subtree, forwarded upward, signed, hop by hop.

Every node sends its parent, in signed reports (purpose `security-report`), the entries of its
own audit log (security.audit) and those it received from its children; the parent checks the
report, keeps the entries in `security_feed` and forwards them further, so the ministry holds the
audit entries of every node of the tree. Each entry travels with its origin's own signature and
chain fields, so an ancestor re-verifies it against the origin's key (`config.subtree_keys()`)
instead of trusting the hops in between: a province cannot alter a city's entry unnoticed.

Pure part (no database, no network): `FeedEntry` (wire row), `make_report`, `check_report` →
`CheckedReport` or a `ReportRejected` subclass, `make_reply` / `check_reply` (the parent's signed
acknowledgement). Database part: `SecurityFeed` (store received entries, page the backlog into
reports, mark what the parent acknowledged, list the subtree's events).

What this does not do: it does not send HTTP (the node passes a `post` function), it does not
authorise who may *read* the events (the HTTP route does, or will), it does not keep a nonce
cache (a replayed report only re-stores identical entries), it does not prove that an origin's
newest entries were not withheld by a hop (entries arrive with gaps; `verify_chain` at the origin
and anchors are the tools for that), and it does not count events (SecurityEvents does).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from nacl.signing import VerifyKey
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import Connection, func, select, update

from hierarchy_config.model import NodeConfig
from node.clock import Clock
from node.db import Database
from node.schema import security_feed
from security.audit import (
    MAX_DETAIL_BYTES,
    PURPOSE_AUDIT,
    AuditEntry,
    AuditKind,
    AuditReader,
    entry_hash,
)
from security.keyring import KeyRing, trusted_keys
from security.keys import NodeKey, key_id
from security.signing import SignatureInvalid, sign, verify, verify_any
from sync.wire import MAX_ID_LEN, Code, Sealed, WireError, packb, unpackb

log = logging.getLogger("lsnet.security.feed")

PURPOSE_REPORT = "security-report"
PURPOSE_REPLY = "security-report-reply"
REPORT_PATH = "/v1/security/report"
EVENTS_PATH = "/v1/security/events"
REPORT_VERSION = 1
MAX_REPORT_ENTRIES = 500
MAX_REPORT_BYTES = 1024 * 1024  # the entries of one report, packed
MAX_REQUEST_BYTES = MAX_REPORT_BYTES + 64 * 1024  # plus envelope and signature
MAX_PAGES_PER_RUN = 20  # one scheduled run forwards at most this many reports
REPORT_INTERVAL_S = 30.0
MAX_EVENTS_LIMIT = 1000
_ENTRY_FIELDS = 11
_INT64 = 2**63


# -- errors ----------------------------------------------------------------------------------------


class FeedError(Exception):
    """Base of security feed failures."""


class ReportRejected(FeedError):
    """A report is refused as a whole; nothing of it is stored. `status` is the HTTP answer."""

    status: ClassVar[int] = 400

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ReportTooLarge(ReportRejected):
    """The report exceeds MAX_REQUEST_BYTES; refused before any decoding or crypto."""

    status = 413


class ReportUnauthenticated(ReportRejected):
    """Unknown sender, bad envelope signature or a send time outside the skew."""

    status = 401


class ReportNotAuthorised(ReportRejected):
    """An authenticated child reported an entry for a node outside its subtree."""

    status = 403


class EntryForged(ReportRejected):
    """An entry's content does not match its hash, or its origin's known key did not sign it."""

    status = 422


class ReplyInvalid(FeedError):
    """The parent's acknowledgement is malformed, not signed by the parent or for another report."""


# -- wire ------------------------------------------------------------------------------------------


def _int(v: Any, lo: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v < _INT64


def _text(v: Any, max_len: int) -> bool:
    return isinstance(v, str) and len(v) <= max_len and v.isprintable()


def _bin(v: Any, size: int) -> bool:
    return isinstance(v, bytes) and len(v) == size


@dataclass(frozen=True)
class FeedEntry:
    """One audit entry of `origin`'s log, with everything needed to re-verify it."""

    origin: str
    seq: int
    time_ms: int
    kind: str
    peer: str
    code: str
    detail: str
    prev_hash: bytes
    hash: bytes
    signature: bytes
    kid: str

    @classmethod
    def from_audit(cls, e: AuditEntry) -> FeedEntry:
        return cls(
            e.node, e.seq, e.time_ms, e.kind, e.peer, e.code, e.detail,
            e.prev_hash, e.hash, e.signature, e.kid,
        )  # fmt: skip

    def to_wire(self) -> list[Any]:
        return [
            self.origin, self.seq, self.time_ms, self.kind, self.peer, self.code, self.detail,
            self.prev_hash, self.hash, self.signature, self.kid,
        ]  # fmt: skip

    @classmethod
    def from_wire(cls, obj: Any) -> FeedEntry:
        if not isinstance(obj, list) or len(obj) != _ENTRY_FIELDS:
            raise ReportRejected(Code.MALFORMED, f"entry must be a list of {_ENTRY_FIELDS} items")
        origin, seq, time_ms, kind, peer, code, detail, prev, digest, sig, kid = obj
        if not (
            _text(origin, MAX_ID_LEN)
            and origin
            and _int(seq, 1)
            and _int(time_ms)
            and _text(kind, 32)
            and _text(peer, 128)
            and _text(code, 64)
            and isinstance(detail, str)
            and len(detail.encode("utf-8")) <= MAX_DETAIL_BYTES
            and _bin(prev, 32)
            and _bin(digest, 32)
            and _bin(sig, 64)
            and _text(kid, 16)
        ):
            raise ReportRejected(Code.MALFORMED, "entry has a field of the wrong type or size")
        return cls(origin, seq, time_ms, kind, peer, code, detail, prev, digest, sig, kid)

    def consistent(self) -> bool:
        """The stored hash is the hash of the content (says nothing about who made it)."""
        return self.hash == entry_hash(
            seq=self.seq,
            time_ms=self.time_ms,
            node=self.origin,
            kid=self.kid,
            kind=self.kind,
            peer=self.peer,
            code=self.code,
            detail=self.detail,
            prev_hash=self.prev_hash,
        )

    def signed_by(self, keys: Mapping[str, VerifyKey]) -> bool | None:
        """True if the origin's known key signed it, None if that key is not known here
        (rotated, or an origin outside what this node knows), False if the signature fails."""
        vk = keys.get(self.origin)
        if vk is None or key_id(vk) != self.kid:
            return None
        try:
            verify(vk, PURPOSE_AUDIT, self.hash, self.signature)
        except SignatureInvalid:
            return False
        return True


def make_report(
    key: NodeKey, sender: str, dest: str, entries: Sequence[FeedEntry], now_ms: int
) -> tuple[bytes, bytes]:
    """The signed report bytes and the digest of its envelope (what the reply acknowledges)."""
    envelope = packb(
        {
            "v": REPORT_VERSION,
            "sender": sender,
            "dest": dest,
            "sent": now_ms,
            "nonce": os.urandom(16),
            "entries": [e.to_wire() for e in entries],
        }
    )
    return Sealed(envelope, sign(key, PURPOSE_REPORT, envelope)).to_bytes(), _digest(envelope)


def _digest(envelope: bytes) -> bytes:
    return hashlib.sha256(envelope).digest()


@dataclass(frozen=True)
class CheckedReport:
    """A report that passed every check: its sender, envelope digest and entries, each with
    True (signature verified against the origin's key) or False (key unknown here)."""

    sender: str
    digest: bytes
    entries: tuple[tuple[FeedEntry, bool], ...]


def check_report(
    body: bytes,
    config: NodeConfig,
    now_ms: int,
    max_skew_ms: int,
    ring: KeyRing | None = None,
) -> CheckedReport:
    """Decode, authenticate and authorise a child's report; raise a ReportRejected subclass."""
    if len(body) > MAX_REQUEST_BYTES:
        raise ReportTooLarge(Code.TOO_LARGE, f"report exceeds {MAX_REQUEST_BYTES} bytes")
    try:
        sealed = Sealed.from_bytes(body)
        doc = unpackb(sealed.envelope, what="security report")
    except WireError as exc:
        raise ReportRejected(exc.code, exc.message) from None
    if not isinstance(doc, dict) or doc.get("v") != REPORT_VERSION:
        raise ReportRejected(Code.MALFORMED, "security report must be a version-1 map")
    sender = doc.get("sender")
    child = next((c for c in config.children if c.id == sender), None)
    if child is None:
        raise ReportUnauthenticated(
            Code.UNKNOWN_SENDER, f"node {sender!r} is not an enrolled child"
        )
    if doc.get("dest") != config.node_id:
        raise ReportUnauthenticated(Code.WRONG_DESTINATION, "report is addressed to another node")
    try:
        trusted = trusted_keys(ring, child.id, child.verify_key, now_ms)
        verify_any(trusted, PURPOSE_REPORT, sealed.envelope, sealed.signature)
    except SignatureInvalid:
        raise ReportUnauthenticated(
            Code.BAD_SIGNATURE, f"report is not signed by {child.id}"
        ) from None
    sent = doc.get("sent")
    if not isinstance(sent, int) or not _int(sent) or abs(now_ms - sent) > max_skew_ms:
        raise ReportUnauthenticated(Code.STALE, "report send time is outside the allowed skew")
    rows = doc.get("entries")
    if not isinstance(rows, list) or len(rows) > MAX_REPORT_ENTRIES:
        raise ReportRejected(
            Code.MALFORMED, f"report 'entries' must be a list of at most {MAX_REPORT_ENTRIES}"
        )
    subtree = {c.id for c in child.walk()}
    keys = config.subtree_keys()
    checked: list[tuple[FeedEntry, bool]] = []
    for row in rows:
        entry = FeedEntry.from_wire(row)
        if entry.origin not in subtree:
            raise ReportNotAuthorised(
                Code.NOT_AUTHORISED, f"{child.id} may not report entries of node {entry.origin}"
            )
        where = f"entry {entry.origin}/{entry.seq}"
        if not entry.consistent():
            raise EntryForged(Code.BAD_DIGEST, f"{where}: content does not match its hash")
        signed = entry.signed_by(keys)
        if signed is False:
            raise EntryForged(Code.BAD_SIGNATURE, f"{where} is not signed by {entry.origin}")
        checked.append((entry, signed is True))
    return CheckedReport(child.id, _digest(sealed.envelope), tuple(checked))


def make_reply(key: NodeKey, sender: str, dest: str, digest: bytes, stored: int) -> bytes:
    envelope = packb({"v": REPORT_VERSION, "sender": sender, "dest": dest, "ack": digest,
                      "stored": stored})  # fmt: skip
    return Sealed(envelope, sign(key, PURPOSE_REPLY, envelope)).to_bytes()


def check_reply(
    data: bytes, config: NodeConfig, digest: bytes, ring: KeyRing | None = None, now_ms: int = 0
) -> int:
    """The number of entries the parent stored; ReplyInvalid unless the parent signed an
    acknowledgement of exactly this report, addressed to this node."""
    assert config.parent is not None
    try:
        sealed = Sealed.from_bytes(data)
        doc = unpackb(sealed.envelope, what="security report reply")
        keys = trusted_keys(ring, config.parent.id, config.parent.verify_key, now_ms)
        verify_any(keys, PURPOSE_REPLY, sealed.envelope, sealed.signature)
    except (WireError, SignatureInvalid) as exc:
        raise ReplyInvalid(f"reply is not a reply signed by {config.parent.id}: {exc}") from None
    if (
        not isinstance(doc, dict)
        or doc.get("sender") != config.parent.id
        or doc.get("dest") != config.node_id
        or doc.get("ack") != digest
        or not _int(doc.get("stored"))
    ):
        raise ReplyInvalid("reply does not acknowledge this report")
    stored: int = doc["stored"]
    return stored


# -- database --------------------------------------------------------------------------------------


def _values(e: FeedEntry) -> dict[str, Any]:
    return {
        "origin": e.origin, "seq": e.seq, "time_ms": e.time_ms, "kind": e.kind, "peer": e.peer,
        "code": e.code, "detail": e.detail, "prev_hash": e.prev_hash, "hash": e.hash,
        "signature": e.signature, "kid": e.kid,
    }  # fmt: skip


def _row_entry(r: Any) -> FeedEntry:
    return FeedEntry(
        r.origin, r.seq, r.time_ms, r.kind, r.peer, r.code, r.detail,
        bytes(r.prev_hash), bytes(r.hash), bytes(r.signature), r.kid,
    )  # fmt: skip


def _store_txn(
    conn: Connection, entries: Sequence[tuple[FeedEntry, bool]], now_ms: int
) -> tuple[int, list[str]]:
    """Insert new entries; an entry already held is kept, unless the held one is unverified and
    the new one verified (then the verified one replaces it and is forwarded again). Returns
    (entries inserted or replaced, origins of conflicting entries that were not taken)."""
    stored, conflicts = 0, []
    t = security_feed.c
    for entry, verified in entries:
        held = conn.execute(
            select(t.id, t.hash, t.verified).where(t.origin == entry.origin, t.seq == entry.seq)
        ).first()
        if held is None:
            conn.execute(
                security_feed.insert().values(
                    **_values(entry), verified=verified, received_ms=now_ms, forwarded_ms=0
                )
            )
            stored += 1
        elif bytes(held.hash) == entry.hash:
            if verified and not held.verified:
                conn.execute(update(security_feed).where(t.id == held.id).values(verified=True))
        elif verified and not held.verified:
            conn.execute(
                update(security_feed)
                .where(t.id == held.id)
                .values(**_values(entry), verified=True, received_ms=now_ms, forwarded_ms=0)
            )
            stored += 1
        else:
            conflicts.append(entry.origin)
    return stored, conflicts


def _own_head_txn(conn: Connection, node_id: str) -> int:
    t = security_feed.c
    head = conn.execute(select(func.max(t.seq)).where(t.origin == node_id)).scalar()
    return int(head or 0)


def _pending_txn(conn: Connection, limit: int) -> list[tuple[int, FeedEntry]]:
    t = security_feed.c
    rows = conn.execute(
        select(security_feed).where(t.forwarded_ms == 0).order_by(t.id).limit(limit)
    )
    return [(r.id, _row_entry(r)) for r in rows]


def _mark_txn(conn: Connection, ids: Sequence[int], now_ms: int) -> None:
    conn.execute(
        update(security_feed).where(security_feed.c.id.in_(ids)).values(forwarded_ms=now_ms)
    )


def _counts_txn(conn: Connection, node_id: str) -> dict[str, tuple[int, int]]:
    """Per subtree origin: entries held and the highest seq held."""
    t = security_feed.c
    q = (
        select(t.origin, func.count(), func.max(t.seq))
        .where(t.origin != node_id)
        .group_by(t.origin)
    )
    return {origin: (int(n), int(top)) for origin, n, top in conn.execute(q)}


def _events_txn(
    conn: Connection, node_id: str, origin: str | None, kind: str | None, limit: int
) -> list[tuple[FeedEntry, bool, int]]:
    t = security_feed.c
    q = select(security_feed).where(t.origin != node_id)
    if origin is not None:
        q = q.where(t.origin == origin)
    if kind is not None:
        q = q.where(t.kind == kind)
    q = q.order_by(t.time_ms.desc(), t.origin, t.seq.desc()).limit(limit)
    return [(_row_entry(r), bool(r.verified), int(r.received_ms)) for r in conn.execute(q)]


def event_json(entry: FeedEntry, verified: bool, received_ms: int | None) -> dict[str, Any]:
    return {
        "origin": entry.origin,
        "seq": entry.seq,
        "time_ms": entry.time_ms,
        "kind": entry.kind,
        "peer": entry.peer,
        "code": entry.code,
        "detail": entry.detail,
        "hash": entry.hash.hex(),
        "kid": entry.kid,
        "verified": verified,
        "received_ms": received_ms,
    }


Post = Callable[[bytes], Awaitable[bytes]]


class SecurityFeed:
    """This node's side of the feed: receives its children's reports, forwards to its parent."""

    def __init__(
        self,
        config: NodeConfig,
        db: Database,
        key: NodeKey,
        audit: AuditReader,
        clock: Clock,
        registry: CollectorRegistry,
    ) -> None:
        self.config = config
        self.db = db
        self.key = key
        self.audit = audit
        self.clock = clock
        self.keyring: KeyRing | None = None  # the node's key ring (rotations, revocations)
        self._own_keys = {config.node_id: key.verify_key}
        self.entries_gauge = Gauge(
            "lsnet_security_feed_entries",
            "Audit entries of subtree nodes held in this node's security feed",
            ["origin"],
            registry=registry,
        )
        self.missing_gauge = Gauge(
            "lsnet_security_feed_missing_entries",
            "Audit entries of an origin below its highest forwarded seq that never arrived",
            ["origin"],
            registry=registry,
        )
        self.conflicts = Counter(
            "lsnet_security_feed_conflicts",
            "Reported entries that differ from an entry already held and were not taken",
            ["origin"],
            registry=registry,
        )

    # -- receiving ---------------------------------------------------------------------------------
    async def accept(self, body: bytes) -> tuple[bytes, int]:
        """Check a child's report and store its entries; return the signed reply and how many
        entries were new. Raises a ReportRejected subclass; then nothing is stored."""
        now = self.clock.time_ms()
        skew = int(self.config.sync.max_clock_skew_s * 1000)
        report = check_report(body, self.config, now, skew, self.keyring)
        stored, conflicts = await self.db.write(_store_txn, report.entries, now)
        for origin in conflicts:
            self.conflicts.labels(origin).inc()
        if conflicts:
            log.warning(
                "SEC [%s] %d reported entries conflict with entries held; kept the held ones",
                report.sender,
                len(conflicts),
            )
        await self.refresh_gauge()
        reply = make_reply(self.key, self.config.node_id, report.sender, report.digest, stored)
        return reply, stored

    async def refresh_gauge(self) -> None:
        for origin, (n, top) in (await self.db.read(_counts_txn, self.config.node_id)).items():
            self.entries_gauge.labels(origin).set(n)
            # Entries arrive in seq order per origin: a hole below the highest seq held is an
            # entry someone on the way did not forward (withheld), or one still in transit.
            self.missing_gauge.labels(origin).set(top - n)

    # -- forwarding --------------------------------------------------------------------------------
    async def _catch_up_own(self) -> None:
        """Copy the own log's new entries into the feed (verified against the own key)."""
        head = await self.db.read(_own_head_txn, self.config.node_id)
        new = await self.audit.entries_after(head, MAX_REPORT_ENTRIES)
        if not new:
            return
        checked = []
        for e in new:
            entry = FeedEntry.from_audit(e)
            checked.append((entry, entry.consistent() and entry.signed_by(self._own_keys) is True))
        await self.db.write(_store_txn, checked, self.clock.time_ms())

    async def next_report(self) -> tuple[bytes, bytes, list[int]] | None:
        """The next report of the backlog (bytes, envelope digest, feed row ids), or None."""
        assert self.config.parent is not None
        await self._catch_up_own()
        pending = await self.db.read(_pending_txn, MAX_REPORT_ENTRIES)
        if not pending:
            return None
        ids: list[int] = []
        entries: list[FeedEntry] = []
        size = 0
        for row_id, entry in pending:
            size += len(packb(entry.to_wire()))
            if entries and size > MAX_REPORT_BYTES:
                break
            ids.append(row_id)
            entries.append(entry)
        body, digest = make_report(
            self.key, self.config.node_id, self.config.parent.id, entries, self.clock.time_ms()
        )
        return body, digest, ids

    async def forward(self, post: Post) -> int:
        """Send the backlog to the parent, report by report, marking what it acknowledged.
        Returns the entries acknowledged; transport errors propagate to the caller."""
        if self.config.parent is None:
            return 0
        sent = 0
        for _ in range(MAX_PAGES_PER_RUN):
            report = await self.next_report()
            if report is None:
                break
            body, digest, ids = report
            check_reply(await post(body), self.config, digest, self.keyring, self.clock.time_ms())
            await self.db.write(_mark_txn, ids, self.clock.time_ms())
            sent += len(ids)
        return sent

    # -- reading -----------------------------------------------------------------------------------
    async def events(
        self, *, origin: str | None = None, kind: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The audit entries of this subtree (own log and feed), newest first."""
        if not 1 <= limit <= MAX_EVENTS_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_EVENTS_LIMIT}")
        me = self.config.node_id
        out: list[tuple[FeedEntry, bool, int | None]] = []
        known_kind = kind is None or kind in {k.value for k in AuditKind}
        if (origin is None or origin == me) and known_kind:
            for e in await self.audit.entries(kind=kind, limit=limit):
                entry = FeedEntry.from_audit(e)
                ok = entry.consistent() and entry.signed_by(self._own_keys) is True
                out.append((entry, ok, None))
        if origin != me:
            out.extend(await self.db.read(_events_txn, me, origin, kind, limit))
        out.sort(key=lambda x: (-x[0].time_ms, x[0].origin, -x[0].seq))
        return [event_json(*x) for x in out[:limit]]
