"""Wire formats of upward sync: pure data, canonical bytes, size limits, error codes.

A *signed batch* is three byte strings: the canonical header, the origin's Ed25519 signature over
it, and the msgpack body whose SHA-256 the header carries. A *push* carries several signed batches
in an envelope signed by the sending hop. Everything here is deterministic msgpack (sorted map
keys, no floats) so the bytes that are signed are the bytes that travel.

The hot paths (a batch body's changes, a record's canonical bytes) go through msgspec, which
decodes and type-checks in one pass in C; every other structure, and every refusal's message,
goes through msgpack and the checks below.

This module does no I/O, no signing and no database work: it imports neither aiohttp, nor
SQLAlchemy, nor pynacl.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import chain
from typing import Annotated, Any, NamedTuple

import msgpack
import msgspec

PROTOCOL_VERSION = 1
ZERO_HASH = b"\x00" * 32
MAX_ID_LEN = 64
CONTENT_TYPE = "application/msgpack"

# Purposes for domain-separated signatures (see security.signing).
PURPOSE_BATCH = "batch"
PURPOSE_PUSH = "push"
PURPOSE_PUSH_REPLY = "push-reply"
# A sealed message whose signature is over the envelope's digest says so with this (ADR 0016);
# a parent that accepts such pushes lists ACCEPTS_DIGEST in its push replies' "accepts".
ENVELOPE_DIGEST = "sha256"
ACCEPTS_DIGEST = "sealed-sha256"


class Code(StrEnum):
    """Closed set of error codes that cross the wire."""

    MALFORMED = "malformed"
    UNSUPPORTED_VERSION = "unsupported_version"
    TOO_LARGE = "too_large"
    UNKNOWN_SENDER = "unknown_sender"
    BAD_SIGNATURE = "bad_signature"
    WRONG_DESTINATION = "wrong_destination"
    STALE = "stale"
    NOT_AUTHORISED = "not_authorised"
    UNKNOWN_ORIGIN = "unknown_origin"
    BAD_DIGEST = "bad_digest"
    CHAIN_BROKEN = "chain_broken"
    BAD_RANGE = "bad_range"
    INVALID_RECORD = "invalid_record"
    UNAUTHENTICATED = "unauthenticated"
    RATE_LIMITED = "rate_limited"
    REPLAY = "replay"
    KEY_REVOKED = "key_revoked"
    KEY_EXPIRED = "key_expired"
    KEY_NOT_YET_VALID = "key_not_yet_valid"
    INTERNAL = "internal"


class WireError(Exception):
    """Bytes that cannot be decoded into a wire structure; carries a Code."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def packb(obj: Any) -> bytes:
    """Deterministic msgpack: maps with sorted keys, floats refused."""
    data: bytes = msgpack.packb(_canon(obj), use_bin_type=True)
    return data


def _canon(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _canon(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list | tuple):
        return [_canon(v) for v in obj]
    if isinstance(obj, float):
        raise TypeError("floats are not allowed in signed structures")
    return obj


def unpackb(data: bytes, *, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as exc:
        raise WireError(Code.MALFORMED, f"{what} is not valid msgpack: {exc}") from None
    except Exception as exc:  # msgpack raises assorted errors on truncated input
        raise WireError(Code.MALFORMED, f"{what} is not valid msgpack: {exc!r}") from None


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# -- helpers for strict decoding -------------------------------------------------------------------


def _get(m: Mapping[str, Any], key: str, typ: type | tuple[type, ...], what: str) -> Any:
    if key not in m:
        raise WireError(Code.MALFORMED, f"{what}: missing field '{key}'")
    value = m[key]
    if isinstance(value, bool) and typ is int:
        raise WireError(Code.MALFORMED, f"{what}: field '{key}' must be an integer")
    if not isinstance(value, typ):
        raise WireError(Code.MALFORMED, f"{what}: field '{key}' has the wrong type")
    return value


def _get_id(m: Mapping[str, Any], key: str, what: str) -> str:
    value: str = _get(m, key, str, what)
    if not value or len(value) > MAX_ID_LEN:
        raise WireError(Code.MALFORMED, f"{what}: field '{key}' must be 1..{MAX_ID_LEN} chars")
    return value


def _get_hash(m: Mapping[str, Any], key: str, what: str) -> bytes:
    value: bytes = _get(m, key, bytes, what)
    if len(value) != 32:
        raise WireError(Code.MALFORMED, f"{what}: field '{key}' must be 32 bytes")
    return value


def _map(obj: Any, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise WireError(Code.MALFORMED, f"{what} must be a map")
    return obj


def _check_version(m: Mapping[str, Any], what: str) -> None:
    v = _get(m, "v", int, what)
    if v != PROTOCOL_VERSION:
        raise WireError(
            Code.UNSUPPORTED_VERSION,
            f"{what}: protocol version {v} is not supported (this node speaks {PROTOCOL_VERSION})",
        )


# -- changes and batches ---------------------------------------------------------------------------


_Positive = Annotated[int, msgspec.Meta(ge=1)]


class Change(NamedTuple):
    """One entry of an origin's change log: a record version (or tombstone) at a sequence number.

    A named tuple in wire order, so a decoded change is built in one step (issue 8: a receiver
    makes one per record)."""

    # The constraints are what `decode_body` checks while msgspec builds each change in C.
    seq: _Positive
    record_type: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    version: _Positive
    deleted: bool
    payload: Mapping[str, str]
    standards: str

    def to_wire(self) -> list[Any]:
        return [
            self.seq,
            self.record_type,
            self.key,
            self.version,
            self.deleted,
            dict(self.payload),
            self.standards,
        ]

    @classmethod
    def from_wire(cls, obj: Any) -> Change:
        # Exact types (`type(x) is int` also refuses booleans): msgpack decodes to exact types,
        # and this runs once per received record.
        if type(obj) is not list or len(obj) != 7:
            raise WireError(Code.MALFORMED, "change must be a list of 7 items")
        seq, rtype, key, version, deleted, payload, standards = obj
        if (
            type(seq) is not int
            or type(rtype) is not str
            or type(key) is not str
            or type(version) is not int
            or type(deleted) is not bool
            or type(payload) is not dict
            or type(standards) is not str
        ):
            raise WireError(Code.MALFORMED, "change has a field of the wrong type")
        if seq < 1 or version < 1 or not rtype or not key or len(key) > 512 or len(rtype) > 64:
            raise WireError(Code.MALFORMED, "change has an out-of-range field")
        if not _only_strings((payload,)):
            raise WireError(Code.MALFORMED, "change payload must map strings to strings")
        return cls._make(obj)


def _only_strings(payloads: Iterable[dict[Any, Any]]) -> bool:
    """Whether every key and value of these maps is a string: str.join takes nothing else (and
    msgpack makes exact strings), so the check runs in C."""
    try:
        "".join(chain.from_iterable(payloads))
        "".join(chain.from_iterable(map(dict.values, payloads)))
    except TypeError:
        return False
    return True


_ONLY_STR = {str}
_ONLY_INT = {int}
_ONLY_BOOL = {bool}
_ONLY_DICT = {dict}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """What the origin signs. `prev` chains each batch to the previous one of the same epoch."""

    origin: str
    epoch: str
    first_seq: int
    last_seq: int
    count: int
    standards: str
    created_ms: int
    digest: bytes
    prev: bytes
    kid: str
    v: int = PROTOCOL_VERSION

    def to_bytes(self) -> bytes:
        """The one function that makes the bytes a batch signature covers."""
        return packb(
            {
                "v": self.v,
                "origin": self.origin,
                "epoch": self.epoch,
                "first": self.first_seq,
                "last": self.last_seq,
                "count": self.count,
                "std": self.standards,
                "created": self.created_ms,
                "digest": self.digest,
                "prev": self.prev,
                "kid": self.kid,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> BatchHeader:
        m = _map(unpackb(data, what="batch header"), "batch header")
        what = "batch header"
        _check_version(m, what)
        first = _get(m, "first", int, what)
        last = _get(m, "last", int, what)
        count = _get(m, "count", int, what)
        if first < 1 or last < first or count != last - first + 1:
            raise WireError(Code.BAD_RANGE, f"batch header: bad range [{first}, {last}] ({count})")
        return cls(
            origin=_get_id(m, "origin", what),
            epoch=_get_id(m, "epoch", what),
            first_seq=first,
            last_seq=last,
            count=count,
            standards=_get(m, "std", str, what),
            created_ms=_get(m, "created", int, what),
            digest=_get_hash(m, "digest", what),
            prev=_get_hash(m, "prev", what),
            kid=_get(m, "kid", str, what),
        )

    @property
    def hash(self) -> bytes:
        return sha256(self.to_bytes())


def header_hash(header_bytes: bytes) -> bytes:
    """Hash of a header as it travels; used for `prev` chaining."""
    return sha256(header_bytes)


def encode_body(changes: Sequence[Change]) -> bytes:
    """Same bytes as `packb([c.to_wire() ...])`, without the generic canonicalising pass:
    a change holds only ints, bools, strings and one str→str map (sorted here)."""
    data: bytes = msgpack.packb(
        [
            [
                c.seq,
                c.record_type,
                c.key,
                c.version,
                c.deleted,
                sorted_payload(c.payload),
                c.standards,
            ]
            for c in changes
        ],
        use_bin_type=True,
    )
    return data


_ENCODERS = threading.local()


def record_encoder() -> msgspec.msgpack.Encoder:
    """This thread's msgspec encoder: the same bytes as msgpack's packer for the ints, bools,
    strings, lists and str→str maps of a record, in fewer steps (tests: test_wire_fast_paths)."""
    try:
        encoder: msgspec.msgpack.Encoder = _ENCODERS.encoder
    except AttributeError:
        encoder = _ENCODERS.encoder = msgspec.msgpack.Encoder()
    return encoder


# Key orders already seen to be sorted: payloads come in a few shapes per record type, so
# hashing the shape (a tuple of interned field names) is cheaper than sorting it again. Bounded.
_SORTED_SHAPES: set[tuple[str, ...]] = set()
_SORTED_SHAPES_MAX = 4096


def sorted_payload(payload: Mapping[str, str]) -> dict[str, str]:
    """The payload as a dict with its keys in canonical (sorted) order; the same object when it
    already is one, which is the common case (validated records and decoded batches)."""
    if type(payload) is dict:
        shape = tuple(payload)
        if shape in _SORTED_SHAPES:
            return payload
        if list(shape) == sorted(shape):
            if len(_SORTED_SHAPES) < _SORTED_SHAPES_MAX:
                _SORTED_SHAPES.add(shape)
            return payload
    return {k: payload[k] for k in sorted(payload)}


def pack_record(
    record_type: str, owner: str, key: str, version: int, deleted: bool, payload: Mapping[str, str]
) -> bytes:
    """Canonical bytes of one record version (same as `packb` of the list), for its hash."""
    data: bytes = record_encoder().encode(
        [record_type, owner, key, version, deleted, sorted_payload(payload)]
    )
    return data


# Exactly what `Change.from_wire` accepts, as one msgspec type: a list of 7-item arrays of exact
# types (an int is never a bool), seq and version >= 1, a record type of 1..64 and a key of
# 1..512 characters, a str→str payload (decoded as a dict); each made a `Change` in C.
_BODY = msgspec.msgpack.Decoder(list[Change])


def decode_body(data: bytes, header: BatchHeader) -> list[Change]:
    try:
        changes = _BODY.decode(data)
    except Exception:  # refused: the checks below find the fault and name it precisely
        changes = _decode_body_checked(data)
    if len(changes) != header.count:
        raise WireError(
            Code.BAD_RANGE, "batch body holds a different number of changes than its header"
        )
    if [c.seq for c in changes] != list(range(header.first_seq, header.last_seq + 1)):
        raise WireError(Code.BAD_RANGE, "batch body sequence numbers are not contiguous")
    return changes


def _decode_body_checked(data: bytes) -> list[Change]:
    raw = unpackb(data, what="batch body")
    if not isinstance(raw, list):
        raise WireError(Code.MALFORMED, "batch body must be a list of changes")
    changes = _decode_changes_fast(raw)
    if changes is None:  # something is wrong: the per-change decoder says what, precisely
        changes = [Change.from_wire(c) for c in raw]
    return changes


def _decode_changes_fast(raw: list[Any]) -> list[Change] | None:
    """Every change of a body checked column by column (the loops run in C), then made in one
    step each; None when any check fails, so `Change.from_wire` finds and names the first bad
    change. Accepts exactly what `Change.from_wire` accepts (issue 8: a receiver decodes every
    record it applies)."""
    if not raw:
        return []
    if not all(type(c) is list and len(c) == 7 for c in raw):
        return None
    seqs, rtypes, keys, versions, deleted, payloads, standards = zip(*raw, strict=True)
    if (
        set(map(type, seqs)) != _ONLY_INT
        or set(map(type, rtypes)) != _ONLY_STR
        or set(map(type, keys)) != _ONLY_STR
        or set(map(type, versions)) != _ONLY_INT
        or set(map(type, deleted)) != _ONLY_BOOL
        or set(map(type, payloads)) != _ONLY_DICT
        or set(map(type, standards)) != _ONLY_STR
        or min(seqs) < 1
        or min(versions) < 1
        or min(map(len, rtypes)) < 1
        or max(map(len, rtypes)) > 64
        or min(map(len, keys)) < 1
        or max(map(len, keys)) > 512
    ):
        return None
    if not _only_strings(payloads):
        return None
    return list(map(Change._make, raw))


@dataclass(frozen=True, slots=True)
class SignedBatch:
    """A batch exactly as its origin made it; immutable and resent byte for byte."""

    header_bytes: bytes
    signature: bytes
    body: bytes

    def to_wire(self) -> list[bytes]:
        return [self.header_bytes, self.signature, self.body]

    @classmethod
    def from_wire(cls, obj: Any) -> SignedBatch:
        if not isinstance(obj, list) or len(obj) != 3 or not all(isinstance(x, bytes) for x in obj):
            raise WireError(Code.MALFORMED, "signed batch must be [header, signature, body] bytes")
        return cls(obj[0], obj[1], obj[2])

    @property
    def size(self) -> int:
        return len(self.header_bytes) + len(self.signature) + len(self.body)


# -- push transfer ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Push:
    """One transfer from a child to its parent: several signed batches in a signed envelope."""

    sender: str
    destination: str
    sent_ms: int
    nonce: bytes
    batches: tuple[SignedBatch, ...]
    v: int = PROTOCOL_VERSION

    def to_bytes(self) -> bytes:
        return packb(
            {
                "v": self.v,
                "sender": self.sender,
                "dest": self.destination,
                "sent": self.sent_ms,
                "nonce": self.nonce,
                "batches": [b.to_wire() for b in self.batches],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, max_batches: int) -> Push:
        what = "push"
        m = _map(unpackb(data, what=what), what)
        _check_version(m, what)
        batches = _get(m, "batches", list, what)
        if len(batches) > max_batches:
            raise WireError(
                Code.TOO_LARGE, f"push carries {len(batches)} batches; limit {max_batches}"
            )
        nonce = _get(m, "nonce", bytes, what)
        if not 8 <= len(nonce) <= 64:
            raise WireError(Code.MALFORMED, "push: nonce must be 8..64 bytes")
        return cls(
            sender=_get_id(m, "sender", what),
            destination=_get_id(m, "dest", what),
            sent_ms=_get(m, "sent", int, what),
            nonce=nonce,
            batches=tuple(SignedBatch.from_wire(b) for b in batches),
        )


@dataclass(frozen=True, slots=True)
class Sealed:
    """Envelope bytes plus the hop's signature: `{"e": bytes, "s": bytes}` when the signature is
    over the envelope bytes themselves, `{"e": bytes, "s": bytes, "h": "sha256"}` when it is over
    their SHA-256 digest (`security.signing.sign_digest`, ADR 0016): one fast hash pass instead
    of Ed25519's two SHA-512 passes over a push of megabytes."""

    envelope: bytes
    signature: bytes
    digest: bool = False

    def to_bytes(self) -> bytes:
        if self.digest:
            return packb({"e": self.envelope, "s": self.signature, "h": ENVELOPE_DIGEST})
        return packb({"e": self.envelope, "s": self.signature})

    @classmethod
    def from_bytes(cls, data: bytes) -> Sealed:
        m = _map(unpackb(data, what="message"), "message")
        digest = m.get("h")
        if digest is not None and digest != ENVELOPE_DIGEST:
            raise WireError(
                Code.UNSUPPORTED_VERSION,
                f"message: envelope digest {str(digest)[:16]!r} is not supported "
                f"(this node knows {ENVELOPE_DIGEST!r})",
            )
        return cls(
            _get(m, "e", bytes, "message"), _get(m, "s", bytes, "message"), digest is not None
        )


class BatchStatus(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    GAP = "gap"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The receiver's verdict on one batch of a push, in order."""

    origin: str
    epoch: str
    first_seq: int
    last_seq: int
    status: BatchStatus
    code: str = ""
    message: str = ""
    need_seq: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "epoch": self.epoch,
            "first": self.first_seq,
            "last": self.last_seq,
            "status": self.status.value,
            "code": self.code,
            "msg": self.message,
            "need": self.need_seq,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> BatchResult:
        what = "batch result"
        m = _map(obj, what)
        try:
            status = BatchStatus(_get(m, "status", str, what))
        except ValueError:
            raise WireError(Code.MALFORMED, "batch result: unknown status") from None
        return cls(
            origin=_get(m, "origin", str, what),
            epoch=_get(m, "epoch", str, what),
            first_seq=_get(m, "first", int, what),
            last_seq=_get(m, "last", int, what),
            status=status,
            code=_get(m, "code", str, what),
            message=_get(m, "msg", str, what),
            need_seq=_get(m, "need", int, what),
        )


@dataclass(frozen=True, slots=True)
class Watermark:
    origin: str
    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class PushReply:
    """The parent's answer: a verdict per batch and its watermarks for the sender's subtree."""

    responder: str
    destination: str
    nonce: bytes
    results: tuple[BatchResult, ...]
    watermarks: tuple[Watermark, ...]
    # What the responder accepts beyond protocol version 1 (ADR 0016: ACCEPTS_DIGEST); older
    # nodes send none and ignore it.
    accepts: tuple[str, ...] = ()
    v: int = PROTOCOL_VERSION

    def to_bytes(self) -> bytes:
        m: dict[str, Any] = {
            "v": self.v,
            "from": self.responder,
            "dest": self.destination,
            "nonce": self.nonce,
            "results": [r.to_wire() for r in self.results],
            "wm": [[w.origin, w.epoch, w.seq] for w in self.watermarks],
        }
        if self.accepts:
            m["accepts"] = list(self.accepts)
        return packb(m)

    @classmethod
    def from_bytes(cls, data: bytes) -> PushReply:
        what = "push reply"
        m = _map(unpackb(data, what=what), what)
        _check_version(m, what)
        wms = []
        for item in _get(m, "wm", list, what):
            if (
                not isinstance(item, list)
                or len(item) != 3
                or not isinstance(item[0], str)
                or not isinstance(item[1], str)
                or not _is_int(item[2])
            ):
                raise WireError(Code.MALFORMED, "push reply: bad watermark entry")
            wms.append(Watermark(item[0], item[1], item[2]))
        accepts = m.get("accepts", [])
        if not isinstance(accepts, list) or not all(isinstance(a, str) for a in accepts):
            raise WireError(Code.MALFORMED, "push reply: accepts must be a list of strings")
        return cls(
            responder=_get(m, "from", str, what),
            destination=_get(m, "dest", str, what),
            nonce=_get(m, "nonce", bytes, what),
            results=tuple(BatchResult.from_wire(r) for r in _get(m, "results", list, what)),
            watermarks=tuple(wms),
            accepts=tuple(accepts[:16]),
        )


def error_body(code: Code, message: str) -> bytes:
    """Body of a non-2xx sync answer."""
    return packb({"error": {"code": code.value, "message": message}})


def parse_error_body(data: bytes) -> tuple[str, str]:
    try:
        m = unpackb(data, what="error")
        err = m["error"]
        return str(err["code"]), str(err["message"])
    except (WireError, KeyError, TypeError):
        return Code.INTERNAL.value, data[:200].decode("utf-8", "replace")
