"""Detached Ed25519 signatures over exact bytes, with domain separation.

Every signed structure names its purpose (`batch`, `envelope`, `response`), so a signature made
for one purpose never verifies for another. Callers sign the bytes they send and verify the bytes
that arrived; nothing here re-serialises. This module knows nothing about the wire format.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from security.keys import NodeKey

SIGNATURE_BYTES = 64
DIGEST_SUFFIX = "/sha256"


class SignatureInvalid(Exception):
    """A signature does not verify for the given key and bytes."""


def _message(purpose: str, data: bytes) -> bytes:
    return b"lsnet/v1/" + purpose.encode("ascii") + b"\x00" + data


def sign(key: NodeKey, purpose: str, data: bytes) -> bytes:
    return key.sign(_message(purpose, data))


def verify(verify_key: VerifyKey, purpose: str, data: bytes, signature: bytes) -> None:
    """Raise SignatureInvalid unless `signature` is `verify_key`'s signature over `data`."""
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureInvalid(f"signature must be {SIGNATURE_BYTES} bytes")
    try:
        verify_key.verify(_message(purpose, data), signature)
    except BadSignatureError as exc:
        raise SignatureInvalid("signature does not verify") from exc


def sign_digest(key: NodeKey, purpose: str, data: bytes) -> bytes:
    """A signature over the SHA-256 digest of `data` rather than `data` itself (ADR 0016): for
    megabytes, one fast hash pass instead of Ed25519's two SHA-512 passes. Its purpose is
    `<purpose>/sha256`, so it never verifies as a signature over bytes, nor the other way."""
    return sign(key, purpose + DIGEST_SUFFIX, hashlib.sha256(data).digest())


def verify_digest_any(
    keys: Iterable[VerifyKey], purpose: str, data: bytes, signature: bytes
) -> None:
    """`verify_any` for a signature made by `sign_digest`."""
    verify_any(keys, purpose + DIGEST_SUFFIX, hashlib.sha256(data).digest(), signature)


def verify_any(keys: Iterable[VerifyKey], purpose: str, data: bytes, signature: bytes) -> None:
    """Raise SignatureInvalid unless one of `keys` (e.g. old and new key during a rotation's
    overlap) made `signature`."""
    for key in keys:
        try:
            verify(key, purpose, data, signature)
            return
        except SignatureInvalid:
            continue
    raise SignatureInvalid("signature does not verify with any trusted key")
