"""Signed key-lifecycle documents: rotation announcements and revocations (issue 4, item 4).

A **rotation announcement** says "node N replaces key OLD by key NEW at time T; OLD keeps signing
new things for an overlap of O ms". It is signed by OLD (so only the holder of the trusted key can
announce a successor) and by NEW (proof that the announcer holds the new key). Every neighbour
that trusts OLD can therefore trust NEW without an operator, and old signatures stay verifiable:
the key ring keeps OLD, with the time it stopped signing.

A **revocation** says "key K of node N must not be trusted any more (reason R)", signed by the
node that issued it. It travels up and down the tree; who may send which revocation to whom is
decided by `node.key_sync`, not here.

Pure: bytes in, a checked document or `KeyDocInvalid` out, against a `KeyRing`. No database, no
network, no clock (times are passed in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from security.keyring import KeyEntry, KeyRefused, KeyRing
from security.keys import NodeKey, key_id
from security.signing import SignatureInvalid, sign, verify

PURPOSE_ROTATION = "key-rotation"
PURPOSE_REVOCATION = "key-revocation"
MAX_DOC_BYTES = 4096
MAX_REASON_CHARS = 200
KIND_ROTATION = "rotation"
KIND_REVOCATION = "revocation"


class KeyDocInvalid(Exception):
    """A key document that is malformed, wrongly signed or not acceptable; `code` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _pack(obj: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb({k: obj[k] for k in sorted(obj)}, use_bin_type=True)
    return data


def _unpack(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_DOC_BYTES:
        raise KeyDocInvalid("too_large", f"key document of {len(data)} bytes")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_bin_len=MAX_DOC_BYTES,
            max_str_len=MAX_DOC_BYTES,
            max_array_len=16,
            max_map_len=16,
        )
    except Exception:
        raise KeyDocInvalid("malformed", "key document is not valid msgpack") from None
    if not isinstance(obj, dict):
        raise KeyDocInvalid("malformed", "key document must be a map")
    return obj


def _field(obj: dict[str, Any], name: str, kind: type) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise KeyDocInvalid("malformed", f"key document field {name!r} must be {kind.__name__}")
    return value


@dataclass(frozen=True)
class Rotation:
    node: str
    old_kid: str
    new_key: VerifyKey
    at_ms: int
    overlap_ms: int
    doc: bytes

    @property
    def new_kid(self) -> str:
        return key_id(self.new_key)


def make_rotation(node: str, old: NodeKey, new: NodeKey, at_ms: int, overlap_ms: int) -> Rotation:
    body = _pack(
        {
            "t": KIND_ROTATION,
            "node": node,
            "old_kid": old.kid,
            "new_key": bytes(new.verify_key),
            "at_ms": at_ms,
            "overlap_ms": overlap_ms,
        }
    )
    doc = _pack(
        {"a": body, "o": sign(old, PURPOSE_ROTATION, body), "n": sign(new, PURPOSE_ROTATION, body)}
    )
    return Rotation(node, old.kid, new.verify_key, at_ms, overlap_ms, doc)


def parse_rotation(doc: bytes) -> Rotation:
    outer = _unpack(doc)
    body = _field(outer, "a", bytes)
    inner = _unpack(body)
    if inner.get("t") != KIND_ROTATION:
        raise KeyDocInvalid("malformed", "not a rotation announcement")
    raw_key = _field(inner, "new_key", bytes)
    if len(raw_key) != 32:
        raise KeyDocInvalid("malformed", "new key must be 32 bytes")
    rotation = Rotation(
        _field(inner, "node", str),
        _field(inner, "old_kid", str),
        VerifyKey(raw_key),
        _field(inner, "at_ms", int),
        _field(inner, "overlap_ms", int),
        doc,
    )
    if not 0 <= rotation.overlap_ms <= 30 * 24 * 3600 * 1000:
        raise KeyDocInvalid("malformed", "overlap must be between 0 and 30 days")
    try:
        verify(rotation.new_key, PURPOSE_ROTATION, body, _field(outer, "n", bytes))
    except (SignatureInvalid, BadSignatureError):
        raise KeyDocInvalid(
            "bad_signature", "the announcement is not signed by the new key"
        ) from None
    return rotation


def check_rotation(doc: bytes, ring: KeyRing) -> Rotation:
    """The announcement, verified against the old key this ring trusts, or KeyDocInvalid."""
    rotation = parse_rotation(doc)
    outer = _unpack(doc)
    try:
        old_key = ring.check_at(rotation.node, rotation.old_kid, rotation.at_ms)
    except KeyRefused as exc:
        raise KeyDocInvalid(exc.code.value, f"rotation of {rotation.node}: {exc.message}") from None
    try:
        verify(old_key, PURPOSE_ROTATION, outer["a"], _field(outer, "o", bytes))
    except SignatureInvalid:
        raise KeyDocInvalid(
            "bad_signature", f"the announcement is not signed by {rotation.node}'s key"
        ) from None
    return rotation


def apply_rotation(rotation: Rotation, ring: KeyRing) -> KeyEntry:
    return ring.rotate(
        rotation.node, rotation.old_kid, rotation.new_key, rotation.at_ms, rotation.overlap_ms
    )


@dataclass(frozen=True)
class Revocation:
    node: str
    kid: str
    at_ms: int
    reason: str
    issuer: str
    doc: bytes


def make_revocation(
    issuer: str, issuer_key: NodeKey, node: str, kid: str, at_ms: int, reason: str
) -> Revocation:
    reason = reason[:MAX_REASON_CHARS]
    body = _pack(
        {
            "t": KIND_REVOCATION,
            "node": node,
            "kid": kid,
            "at_ms": at_ms,
            "reason": reason,
            "issuer": issuer,
        }
    )
    doc = _pack({"r": body, "s": sign(issuer_key, PURPOSE_REVOCATION, body), "k": issuer_key.kid})
    return Revocation(node, kid, at_ms, reason, issuer, doc)


def parse_revocation(doc: bytes, ring: KeyRing | None = None) -> Revocation:
    """The revocation; its issuer's signature is verified when `ring` knows the issuer's key
    (a node far from the issuer accepts it on the word of the neighbour that sent it)."""
    outer = _unpack(doc)
    body = _field(outer, "r", bytes)
    inner = _unpack(body)
    if inner.get("t") != KIND_REVOCATION:
        raise KeyDocInvalid("malformed", "not a revocation")
    revocation = Revocation(
        _field(inner, "node", str),
        _field(inner, "kid", str),
        _field(inner, "at_ms", int),
        _field(inner, "reason", str)[:MAX_REASON_CHARS],
        _field(inner, "issuer", str),
        doc,
    )
    if ring is not None and ring.knows(revocation.issuer):
        issuer_kid = _field(outer, "k", str)
        entry = ring.entry(revocation.issuer, issuer_kid)
        if entry is None:
            raise KeyDocInvalid("bad_signature", f"issuer key {issuer_kid} is not known here")
        try:
            verify(entry.verify_key, PURPOSE_REVOCATION, body, _field(outer, "s", bytes))
        except SignatureInvalid:
            raise KeyDocInvalid(
                "bad_signature", f"the revocation is not signed by {revocation.issuer}"
            ) from None
    return revocation
