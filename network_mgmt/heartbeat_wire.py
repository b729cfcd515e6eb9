"""Heartbeat wire format: a node's signed status report to its parent and the parent's answer.

A heartbeat (purpose `heartbeat`) carries the sender's own status first, then the latest status
of every node of its subtree it knows, each as the sender judged it (health, last seen). The
parent answers with a signed reply (purpose `heartbeat-reply`) carrying its own clock, so the
child computes its clock offset from the exchange (`clock_offset_ms`, NTP-style midpoint).

Pure: frozen dataclasses, deterministic msgpack (no floats: times and lags are integers in ms),
`check_heartbeat` / `check_reply` return a verified object or raise a `HeartbeatRejected`
subclass. No database, no HTTP, no schedule (see `network_mgmt.heartbeat`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from hierarchy_config.model import NodeConfig
from security.keyring import KeyRing, trusted_keys
from security.keys import NodeKey
from security.signing import SignatureInvalid, sign, verify_any
from sync.wire import MAX_ID_LEN, Code, Sealed, WireError, packb, unpackb

PURPOSE_HEARTBEAT = "heartbeat"
PURPOSE_HEARTBEAT_REPLY = "heartbeat-reply"
HEARTBEAT_PATH = "/v1/network/heartbeat"
WIRE_VERSION = 1
MAX_HEARTBEAT_BYTES = 4 * 1024 * 1024
MAX_NODES = 20_000
MAX_TEXT = 512
MAX_RECENT_ERRORS = 5
HEALTH_VALUES = ("up", "down", "unknown")


class HeartbeatRejected(Exception):
    """A heartbeat (or reply) is refused as a whole. `status` is the HTTP answer."""

    status: ClassVar[int] = 400

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class HeartbeatUnauthenticated(HeartbeatRejected):
    """Unknown sender, bad signature, wrong destination or a send time outside the skew."""

    status = 401


class HeartbeatNotAuthorised(HeartbeatRejected):
    """An authenticated child reported a node outside its subtree."""

    status = 403


@dataclass(frozen=True)
class RecentError:
    time_ms: int
    message: str


MAX_QUARANTINE_SAMPLE = 10


@dataclass(frozen=True)
class QuarantinedBatch:
    """One quarantined batch as a heartbeat names it, so ancestors can list it (not act on it)."""

    batch_id: int  # the id at the reporting node (for `lsnet links quarantine show` there)
    origin: str
    first_seq: int
    last_seq: int
    code: str
    reason: str
    time_ms: int

    def to_wire(self) -> list[Any]:
        return [
            self.batch_id,
            self.origin,
            self.first_seq,
            self.last_seq,
            self.code,
            self.reason,
            self.time_ms,
        ]

    @classmethod
    def from_wire(cls, m: Any) -> QuarantinedBatch:
        if not (
            isinstance(m, list)
            and len(m) == 7
            and _int(m[0])
            and _text(m[1], MAX_ID_LEN)
            and _int(m[2])
            and _int(m[3])
            and _text(m[4], 64)
            and _text(m[5])
            and _int(m[6])
        ):
            raise WireError(
                Code.MALFORMED,
                "quarantined batch must be [id, origin, first, last, code, reason, time_ms]",
            )
        return cls(*m)


@dataclass(frozen=True)
class NodeStatus:
    """The status of one node, as it reported it (and as the hop that passes it on judged it)."""

    node_id: str
    parent: str  # "" for the ministry
    level: str
    name: str
    software_version: str
    protocol_version: int
    release: str
    reported_ms: int  # the node's clock when it made this status
    uptime_ms: int
    backlog: int
    lag_ms: int
    last_push_ms: int  # 0 = never
    db_bytes: int  # -1 = unknown (e.g. PostgreSQL)
    errors: int
    security_events: int
    quarantined: int
    link_mode: str  # "" at the root; live, catching_up, backing_off, paused
    next_retry_ms: int  # 0 = none planned
    clock_offset_ms: int | None  # relative to its parent, from the last exchange
    e2e_lag_ms: int | None = None
    recent_errors: tuple[RecentError, ...] = ()
    health: str = "up"  # as judged by the hop that reports it
    last_seen_ms: int | None = None  # as judged by the hop that reports it (its clock)
    extra: Mapping[str, int] = field(default_factory=dict)
    # The oldest quarantined batches waiting at the node (at most MAX_QUARANTINE_SAMPLE); absent
    # from the heartbeats of older nodes.
    quarantine: tuple[QuarantinedBatch, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["recent_errors"] = [[e.time_ms, e.message] for e in self.recent_errors]
        doc["extra"] = dict(self.extra)
        doc["quarantine"] = [q.to_wire() for q in self.quarantine]
        return doc

    @classmethod
    def from_wire(cls, m: Any) -> NodeStatus:
        if not isinstance(m, dict):
            raise WireError(Code.MALFORMED, "status entry must be a map")
        errs = m.get("recent_errors", [])
        if not isinstance(errs, list) or len(errs) > MAX_RECENT_ERRORS:
            raise WireError(Code.MALFORMED, "status recent_errors must be a short list")
        recent = []
        for e in errs:
            if not (isinstance(e, list) and len(e) == 2 and _int(e[0]) and _text(e[1])):
                raise WireError(Code.MALFORMED, "recent error must be [time_ms, message]")
            recent.append(RecentError(e[0], e[1]))
        extra = m.get("extra", {})
        if not isinstance(extra, dict) or len(extra) > 32:
            raise WireError(Code.MALFORMED, "status extra must be a small map")
        if not all(_text(k, MAX_ID_LEN) and _int(v, lo=-(2**62)) for k, v in extra.items()):
            raise WireError(Code.MALFORMED, "status extra must map names to integers")
        sample = m.get("quarantine", [])
        if not isinstance(sample, list) or len(sample) > MAX_QUARANTINE_SAMPLE:
            raise WireError(Code.MALFORMED, "status quarantine must be a short list")
        quarantine = tuple(QuarantinedBatch.from_wire(q) for q in sample)
        values: dict[str, Any] = {}
        for name, kind in _FIELDS.items():
            v = m.get(name)
            if not kind(v):
                raise WireError(Code.MALFORMED, f"status field {name!r} is missing or invalid")
            values[name] = v
        if values["health"] not in HEALTH_VALUES:
            raise WireError(Code.MALFORMED, "status health must be up, down or unknown")
        return cls(**values, recent_errors=tuple(recent), extra=dict(extra), quarantine=quarantine)


def _int(v: Any, lo: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v < 2**63


def _text(v: Any, max_len: int = MAX_TEXT) -> bool:
    return isinstance(v, str) and len(v) <= max_len


def _opt_int(v: Any) -> bool:
    return v is None or _int(v, lo=-(2**62))


_FIELDS = {
    "node_id": lambda v: _text(v, MAX_ID_LEN) and bool(v),
    "parent": lambda v: _text(v, MAX_ID_LEN),
    "level": lambda v: v in ("city", "province", "ministry"),
    "name": _text,
    "software_version": lambda v: _text(v, 64),
    "protocol_version": _int,
    "release": lambda v: _text(v, 128),
    "reported_ms": _int,
    "uptime_ms": _int,
    "backlog": _int,
    "lag_ms": _int,
    "last_push_ms": _int,
    "db_bytes": lambda v: _int(v, lo=-1),
    "errors": _int,
    "security_events": _int,
    "quarantined": _int,
    "link_mode": lambda v: _text(v, 32),
    "next_retry_ms": _int,
    "clock_offset_ms": _opt_int,
    "e2e_lag_ms": _opt_int,
    "health": lambda v: isinstance(v, str),
    "last_seen_ms": _opt_int,
}


@dataclass(frozen=True)
class Heartbeat:
    sender: str
    destination: str
    sent_ms: int
    nonce: bytes
    nodes: tuple[NodeStatus, ...]


@dataclass(frozen=True)
class HeartbeatReply:
    responder: str
    destination: str
    nonce: bytes
    parent_ms: int  # the parent's clock when it answered
    taken: int
    received_ms: int = 0  # the parent's clock when the heartbeat arrived (0 = not said)
    # The parent's operator asks for batches again: (request id, origin, from seq), carried until
    # the child acknowledges them (network_mgmt.resend).
    resend: tuple[tuple[int, str, int], ...] = ()


def make_heartbeat(key: NodeKey, hb: Heartbeat) -> bytes:
    envelope = packb(
        {
            "v": WIRE_VERSION,
            "sender": hb.sender,
            "dest": hb.destination,
            "sent": hb.sent_ms,
            "nonce": hb.nonce,
            "nodes": [n.to_wire() for n in hb.nodes],
        }
    )
    return Sealed(envelope, sign(key, PURPOSE_HEARTBEAT, envelope)).to_bytes()


def new_nonce() -> bytes:
    return os.urandom(16)


def check_heartbeat(
    config: NodeConfig,
    body: bytes,
    now_ms: int,
    max_skew_ms: int,
    ring: KeyRing | None = None,
) -> Heartbeat:
    """Verify a child's heartbeat: size, shape, sender, destination, signature, time, subtree."""
    if len(body) > MAX_HEARTBEAT_BYTES:
        raise HeartbeatRejected(Code.TOO_LARGE, f"heartbeat exceeds {MAX_HEARTBEAT_BYTES} bytes")
    try:
        sealed = Sealed.from_bytes(body)
        doc = unpackb(sealed.envelope, what="heartbeat")
    except WireError as exc:
        raise HeartbeatRejected(exc.code, exc.message) from None
    if not isinstance(doc, dict) or doc.get("v") != WIRE_VERSION:
        raise HeartbeatRejected(Code.MALFORMED, "heartbeat must be a version-1 map")
    sender = doc.get("sender")
    child = next((c for c in config.children if c.id == sender), None)
    if child is None:
        raise HeartbeatUnauthenticated(
            Code.UNKNOWN_SENDER, f"node {sender!r} is not an enrolled child"
        )
    if doc.get("dest") != config.node_id:
        raise HeartbeatUnauthenticated(
            Code.WRONG_DESTINATION, "heartbeat is addressed to another node"
        )
    try:
        trusted = trusted_keys(ring, child.id, child.verify_key, now_ms)
        verify_any(trusted, PURPOSE_HEARTBEAT, sealed.envelope, sealed.signature)
    except SignatureInvalid:
        raise HeartbeatUnauthenticated(
            Code.BAD_SIGNATURE, f"heartbeat is not signed by {sender}"
        ) from None
    sent = doc.get("sent")
    if not isinstance(sent, int) or not _int(sent) or abs(now_ms - sent) > max_skew_ms:
        raise HeartbeatUnauthenticated(
            Code.STALE, "heartbeat send time is outside the allowed clock skew"
        )
    nonce = doc.get("nonce")
    rows = doc.get("nodes")
    if not isinstance(nonce, bytes) or not isinstance(rows, list) or len(rows) > MAX_NODES:
        raise HeartbeatRejected(Code.MALFORMED, "heartbeat needs a nonce and a list of nodes")
    try:
        nodes = tuple(NodeStatus.from_wire(r) for r in rows)
    except WireError as exc:
        raise HeartbeatRejected(exc.code, exc.message) from None
    if not nodes or nodes[0].node_id != sender:
        raise HeartbeatRejected(Code.MALFORMED, "a heartbeat starts with the sender's own status")
    subtree = {c.id for c in child.walk()}
    for n in nodes:
        if n.node_id not in subtree:
            raise HeartbeatNotAuthorised(
                Code.NOT_AUTHORISED, f"{sender} may not report for node {n.node_id}"
            )
    return Heartbeat(sender, config.node_id, sent, nonce, nodes)


def make_reply(key: NodeKey, reply: HeartbeatReply) -> bytes:
    envelope = packb(
        {
            "v": WIRE_VERSION,
            "responder": reply.responder,
            "dest": reply.destination,
            "nonce": reply.nonce,
            "time": reply.parent_ms,
            "taken": reply.taken,
            "received": reply.received_ms,
            **({"resend": [list(r) for r in reply.resend]} if reply.resend else {}),
        }
    )
    return Sealed(envelope, sign(key, PURPOSE_HEARTBEAT_REPLY, envelope)).to_bytes()


MAX_RESEND_REQUESTS = 16


def _resend_requests(raw: Any) -> tuple[tuple[int, str, int], ...]:
    if not isinstance(raw, list) or len(raw) > MAX_RESEND_REQUESTS:
        raise HeartbeatRejected(Code.MALFORMED, "heartbeat reply resend must be a short list")
    out = []
    for r in raw:
        if not (
            isinstance(r, list)
            and len(r) == 3
            and _int(r[0])
            and _text(r[1], MAX_ID_LEN)
            and bool(r[1])
            and _int(r[2])
            and r[2] >= 1
        ):
            raise HeartbeatRejected(Code.MALFORMED, "resend request must be [id, origin, seq]")
        out.append((r[0], r[1], r[2]))
    return tuple(out)


def check_reply(
    config: NodeConfig, body: bytes, nonce: bytes, ring: KeyRing | None = None, now_ms: int = 0
) -> HeartbeatReply:
    """Verify the parent's answer to the heartbeat sent with `nonce`."""
    parent = config.parent
    if parent is None:
        raise HeartbeatRejected(Code.MALFORMED, "the root has no parent to answer")
    try:
        sealed = Sealed.from_bytes(body)
        trusted = trusted_keys(ring, parent.id, parent.verify_key, now_ms)
        verify_any(trusted, PURPOSE_HEARTBEAT_REPLY, sealed.envelope, sealed.signature)
        doc = unpackb(sealed.envelope, what="heartbeat reply")
    except WireError as exc:
        raise HeartbeatRejected(exc.code, exc.message) from None
    except SignatureInvalid:
        raise HeartbeatUnauthenticated(
            Code.BAD_SIGNATURE, "heartbeat reply is not signed by the parent"
        ) from None
    if (
        not isinstance(doc, dict)
        or doc.get("responder") != parent.id
        or doc.get("dest") != config.node_id
        or doc.get("nonce") != nonce
        or not _int(doc.get("time"))
        or not _int(doc.get("taken"))
        or not _int(doc.get("received", 0))
    ):
        raise HeartbeatRejected(Code.MALFORMED, "heartbeat reply is not for this heartbeat")
    return HeartbeatReply(
        parent.id,
        config.node_id,
        nonce,
        doc["time"],
        doc["taken"],
        doc.get("received", 0),
        _resend_requests(doc.get("resend", [])),
    )


def clock_offset_ms(
    send_ms: int, receive_ms: int, parent_ms: int, parent_received_ms: int = 0
) -> int:
    """The parent's clock minus ours, NTP-style: ((t2 − t1) + (t3 − t4)) / 2 with t1 = our send,
    t2 = the parent's receipt, t3 = its answer, t4 = our receipt, so the time the parent spent
    on the heartbeat does not count. Without t2, the answer is taken as made half-way."""
    if not parent_received_ms:
        return parent_ms - (send_ms + receive_ms) // 2
    return ((parent_received_ms - send_ms) + (parent_ms - receive_ms)) // 2


def statuses_of(nodes: Sequence[NodeStatus]) -> dict[str, NodeStatus]:
    return {n.node_id: n for n in nodes}
