"""The decoders and verifiers that face hostile bytes, as one fuzz entry point.

`check(data)` feeds the bytes to every decoder/verifier that reads from the network: msgpack
envelopes (push, reply, batch header and body), key documents (rotation, revocation), the RFC 9421
signature headers and the security-feed report. Each must either return or raise its own domain
error; anything else (an unexpected exception, a crash) is a bug. Used by the hypothesis
properties (every test run) and by the atheris target (`python -m tests.fuzz.atheris_target`).
"""

from __future__ import annotations

import contextlib

from security.http_signatures import RequestRefused, verify_request
from security.key_docs import KeyDocInvalid, parse_revocation, parse_rotation
from security.keyring import KeyRing
from security.keys import NodeKey
from sync.wire import (
    BatchHeader,
    Push,
    PushReply,
    Sealed,
    SignedBatch,
    WireError,
    decode_body,
)

_KEY = NodeKey.generate()
_RING = KeyRing.from_keys({"330100": _KEY.verify_key})
EXPECTED = (WireError, KeyDocInvalid, RequestRefused)


def _header_for(data: bytes) -> BatchHeader | None:
    try:
        return BatchHeader.from_bytes(data)
    except WireError:
        return None


def check(data: bytes) -> None:
    """Run every decoder on `data`; raise only if one fails in an unexpected way."""
    decoders = (
        lambda: Sealed.from_bytes(data),
        lambda: Push.from_bytes(data, max_batches=8),
        lambda: PushReply.from_bytes(data),
        lambda: BatchHeader.from_bytes(data),
        lambda: SignedBatch.from_wire(data),
        lambda: parse_rotation(data),
        lambda: parse_revocation(data, _RING),
        lambda: verify_request(
            "POST",
            "http://peer/v1/sync/push",
            [
                ("Signature-Input", data.decode("latin-1")[:1500]),
                ("Signature", data[::-1].decode("latin-1")[:500]),
                ("LSNet-Sender", "330100"),
                ("LSNet-Destination", "330000"),
            ],
            data,
            me="330000",
            keys=_RING,
            now_s=1_800_000_000,
            max_skew_s=300,
        ),
    )
    for decode in decoders:
        with contextlib.suppress(EXPECTED):
            decode()
    header = _header_for(data[: len(data) // 2])
    if header is not None:
        with contextlib.suppress(WireError):
            decode_body(data[len(data) // 2 :], header)
