"""Wire messages of anti-entropy and restore-from-parent (pure: no I/O, no crypto, no database).

Anti-entropy: a child sends a `RangeSummaries` (per origin and epoch it holds: the highest seq it
holds and a top digest of those records); the parent answers a `RangeVerdicts` (its watermark and
top digest per range, plus per-bucket digests where the tops differ at equal positions). The
repair transfer reuses `sync.wire.Push`/`PushReply`, signed under their own purposes so a repair
cannot pass as a push or the reverse.

Restore: a child that lost its database asks its parent for its own stored batches with a
`RestoreRequest` (epoch, after seq) and gets a `RestorePage` back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sync.wire import (
    PROTOCOL_VERSION,
    Code,
    SignedBatch,
    WireError,
    _check_version,
    _get,
    _get_id,
    _map,
    packb,
    unpackb,
)

PURPOSE_AE_SUMMARY = "ae-summary"
PURPOSE_AE_VERDICT = "ae-verdict"
PURPOSE_AE_REPAIR = "ae-repair"
PURPOSE_AE_REPAIR_REPLY = "ae-repair-reply"
PURPOSE_RESTORE = "restore"
PURPOSE_RESTORE_PAGE = "restore-page"

SUMMARY_PATH = "/v1/sync/summary"
REPAIR_PATH = "/v1/sync/repair"
RESTORE_PATH = "/v1/sync/restore"

MAX_RANGES = 4096
MAX_BUCKETS = 65536
BUCKET_SEQS = 256  # seqs per bucket digest


def _nonce(m: dict[str, Any], what: str) -> bytes:
    nonce: bytes = _get(m, "nonce", bytes, what)
    if not 8 <= len(nonce) <= 64:
        raise WireError(Code.MALFORMED, f"{what}: nonce must be 8..64 bytes")
    return nonce


def _digest(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise WireError(Code.MALFORMED, f"{what}: digests must be 32 bytes")
    return value


def _uint(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise WireError(Code.MALFORMED, f"{what}: expected a non-negative integer")
    return value


@dataclass(frozen=True, slots=True)
class RangeSummary:
    origin: str
    epoch: str
    held_seq: int
    count: int
    top: bytes

    def to_wire(self) -> list[Any]:
        return [self.origin, self.epoch, self.held_seq, self.count, self.top]

    @classmethod
    def from_wire(cls, obj: Any) -> RangeSummary:
        what = "range summary"
        if not isinstance(obj, list) or len(obj) != 5:
            raise WireError(Code.MALFORMED, f"{what} must be a list of 5 items")
        origin, epoch, held, count, top = obj
        if not isinstance(origin, str) or not isinstance(epoch, str) or not origin or not epoch:
            raise WireError(Code.MALFORMED, f"{what}: origin and epoch must be strings")
        if len(origin) > 64 or len(epoch) > 64:
            raise WireError(Code.MALFORMED, f"{what}: origin or epoch too long")
        return cls(origin, epoch, _uint(held, what), _uint(count, what), _digest(top, what))


@dataclass(frozen=True, slots=True)
class RangeSummaries:
    sender: str
    destination: str
    sent_ms: int
    nonce: bytes
    ranges: tuple[RangeSummary, ...]
    v: int = PROTOCOL_VERSION

    def to_bytes(self) -> bytes:
        return packb(
            {
                "v": self.v,
                "sender": self.sender,
                "dest": self.destination,
                "sent": self.sent_ms,
                "nonce": self.nonce,
                "ranges": [r.to_wire() for r in self.ranges],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> RangeSummaries:
        what = "range summaries"
        m = _map(unpackb(data, what=what), what)
        _check_version(m, what)
        ranges = _get(m, "ranges", list, what)
        if len(ranges) > MAX_RANGES:
            raise WireError(Code.TOO_LARGE, f"{what}: more than {MAX_RANGES} ranges")
        return cls(
            sender=_get_id(m, "sender", what),
            destination=_get_id(m, "dest", what),
            sent_ms=_get(m, "sent", int, what),
            nonce=_nonce(m, what),
            ranges=tuple(RangeSummary.from_wire(r) for r in ranges),
        )


@dataclass(frozen=True, slots=True)
class RangeVerdict:
    """The parent's side of one range: its watermark, its top digest, and — only when the tops
    differ at equal positions — its digest per bucket (bucket index → digest)."""

    origin: str
    epoch: str
    parent_seq: int
    top: bytes
    buckets: dict[int, bytes] | None

    def to_wire(self) -> list[Any]:
        buckets = (
            None if self.buckets is None else [[i, d] for i, d in sorted(self.buckets.items())]
        )
        return [self.origin, self.epoch, self.parent_seq, self.top, buckets]

    @classmethod
    def from_wire(cls, obj: Any) -> RangeVerdict:
        what = "range verdict"
        if not isinstance(obj, list) or len(obj) != 5:
            raise WireError(Code.MALFORMED, f"{what} must be a list of 5 items")
        origin, epoch, seq, top, raw = obj
        if not isinstance(origin, str) or not isinstance(epoch, str):
            raise WireError(Code.MALFORMED, f"{what}: origin and epoch must be strings")
        buckets: dict[int, bytes] | None = None
        if raw is not None:
            if not isinstance(raw, list) or len(raw) > MAX_BUCKETS:
                raise WireError(Code.MALFORMED, f"{what}: bad bucket list")
            buckets = {}
            for item in raw:
                if not isinstance(item, list) or len(item) != 2:
                    raise WireError(Code.MALFORMED, f"{what}: bad bucket entry")
                buckets[_uint(item[0], what)] = _digest(item[1], what)
        return cls(origin, epoch, _uint(seq, what), _digest(top, what), buckets)


@dataclass(frozen=True, slots=True)
class RangeVerdicts:
    responder: str
    destination: str
    nonce: bytes
    verdicts: tuple[RangeVerdict, ...]
    v: int = PROTOCOL_VERSION

    def to_bytes(self) -> bytes:
        return packb(
            {
                "v": self.v,
                "from": self.responder,
                "dest": self.destination,
                "nonce": self.nonce,
                "verdicts": [r.to_wire() for r in self.verdicts],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> RangeVerdicts:
        what = "range verdicts"
        m = _map(unpackb(data, what=what), what)
        _check_version(m, what)
        verdicts = _get(m, "verdicts", list, what)
        if len(verdicts) > MAX_RANGES:
            raise WireError(Code.TOO_LARGE, f"{what}: more than {MAX_RANGES} ranges")
        return cls(
            responder=_get_id(m, "from", what),
            destination=_get_id(m, "dest", what),
            nonce=_nonce(m, what),
            verdicts=tuple(RangeVerdict.from_wire(r) for r in verdicts),
        )


@dataclass(frozen=True, slots=True)
class RestoreRequest:
    """A child asks for its own batches of `epoch` (empty: the newest epoch the parent knows)
    with first seq after `after_seq`."""

    sender: str
    destination: str
    sent_ms: int
    nonce: bytes
    epoch: str
    after_seq: int
    v: int = PROTOCOL_VERSION

    def to_bytes(self) -> bytes:
        return packb(
            {
                "v": self.v,
                "sender": self.sender,
                "dest": self.destination,
                "sent": self.sent_ms,
                "nonce": self.nonce,
                "epoch": self.epoch,
                "after": self.after_seq,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> RestoreRequest:
        what = "restore request"
        m = _map(unpackb(data, what=what), what)
        _check_version(m, what)
        epoch = _get(m, "epoch", str, what)
        if len(epoch) > 64:
            raise WireError(Code.MALFORMED, f"{what}: epoch too long")
        return cls(
            sender=_get_id(m, "sender", what),
            destination=_get_id(m, "dest", what),
            sent_ms=_get(m, "sent", int, what),
            nonce=_nonce(m, what),
            epoch=epoch,
            after_seq=_uint(_get(m, "after", int, what), what),
        )


@dataclass(frozen=True, slots=True)
class RestorePage:
    """Some of the child's stored batches in seq order; `held_seq` is the parent's watermark for
    (child, epoch) and `more` says whether batches after this page remain."""

    responder: str
    destination: str
    nonce: bytes
    epoch: str
    held_seq: int
    batches: tuple[SignedBatch, ...]
    more: bool
    v: int = PROTOCOL_VERSION

    def to_bytes(self) -> bytes:
        return packb(
            {
                "v": self.v,
                "from": self.responder,
                "dest": self.destination,
                "nonce": self.nonce,
                "epoch": self.epoch,
                "held": self.held_seq,
                "batches": [b.to_wire() for b in self.batches],
                "more": self.more,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, max_batches: int) -> RestorePage:
        what = "restore page"
        m = _map(unpackb(data, what=what), what)
        _check_version(m, what)
        batches = _get(m, "batches", list, what)
        if len(batches) > max_batches:
            raise WireError(Code.TOO_LARGE, f"{what}: more than {max_batches} batches")
        return cls(
            responder=_get_id(m, "from", what),
            destination=_get_id(m, "dest", what),
            nonce=_nonce(m, what),
            epoch=_get(m, "epoch", str, what),
            held_seq=_uint(_get(m, "held", int, what), what),
            batches=tuple(SignedBatch.from_wire(b) for b in batches),
            more=_get(m, "more", bool, what),
        )
