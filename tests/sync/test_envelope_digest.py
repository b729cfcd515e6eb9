"""Push envelopes signed over their SHA-256 digest (ADR 0016), over real HTTP on both backends.

A child signs the bytes of its first push; once a reply of the parent says it accepts digest
signatures, it signs the digest. A parent that does not say so (an older node) keeps receiving
signatures over the bytes; a parent that stops accepting digests (replaced by an older version)
costs one refused push, after which the child signs the bytes again, and nothing is lost or
doubled. A digest signature never passes as a signature over the bytes, nor the other way."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from node.app import Node
from security.keys import NodeKey
from security.signing import (
    SignatureInvalid,
    sign,
    sign_digest,
    verify_any,
    verify_digest_any,
)
from sync.errors import PeerRejected
from sync.wire import ACCEPTS_DIGEST, PURPOSE_PUSH, Code, PushReply, Sealed, WireError
from tests.sync.helpers import valid_records
from tests.sync.test_push_window import (
    PER_BATCH,
    PER_TRANSFER,
    RECORDS,
    GatedTransport,
    Window,
    drain,
    window,
)
from tests.sync.test_sender import applied, batch_rows, sample


def forms(bodies: list[bytes]) -> list[bool]:
    """Per push sent: True if its signature is over the digest."""
    return [Sealed.from_bytes(body).digest for body in bodies]


def received(province: Node, city_id: str, signed: str) -> float:
    return sample(
        province,
        "lsnet_sync_sealed_received_total",
        child=city_id,
        purpose=PURPOSE_PUSH,
        signed=signed,
    )


def hop(tmp_path: Path, database_for: Callable[[str], str]) -> AbstractAsyncContextManager[Window]:
    """A running province and a city whose queue the test drives, one push at a time, every
    push's bytes kept."""
    return window(tmp_path, database_for, GatedTransport, in_flight=1)


async def test_pushes_are_signed_over_their_digest_once_the_parent_accepts_it(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    async with hop(tmp_path, database_for) as h:
        await h.city.ingest(valid_records(h.city_id, RECORDS, seed=11))
        await drain(h.queue)
        pushes = RECORDS // (PER_BATCH * PER_TRANSFER)
        assert forms(h.transport.bodies) == [False] + [True] * (pushes - 1)
        assert received(h.province, h.city_id, "bytes") == 1
        assert received(h.province, h.city_id, "sha256") == pushes - 1
        assert await applied(h.province, h.city_id) == RECORDS
        assert all(r.acked for r in await batch_rows(h.city))


async def test_a_parent_that_does_not_accept_digests_gets_signatures_over_the_bytes(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    async with hop(tmp_path, database_for) as h:
        h.province.receiver.gate.accepts_digest = False  # as a node of protocol 1 only
        await h.city.ingest(valid_records(h.city_id, RECORDS, seed=12))
        await drain(h.queue)
        assert forms(h.transport.bodies) == [False] * len(h.transport.bodies)
        assert received(h.province, h.city_id, "sha256") == 0
        assert await applied(h.province, h.city_id) == RECORDS


async def test_a_parent_that_stops_accepting_digests_costs_one_refused_push(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    async with hop(tmp_path, database_for) as h:
        await h.city.ingest(valid_records(h.city_id, RECORDS, seed=13))
        assert await h.queue.transfer_once() is True  # over the bytes; the reply says more
        assert await h.queue.transfer_once() is True
        assert forms(h.transport.bodies) == [False, True]
        # The province is replaced by a node that verifies signatures over the bytes only.
        h.province.receiver.gate.accepts_digest = False
        refused_before = sample(h.province, "lsnet_sync_rejected_total", reason="bad_signature")
        with pytest.raises(PeerRejected) as refused:
            await h.queue.transfer_once()
        assert refused.value.code == Code.BAD_SIGNATURE.value
        assert forms(h.transport.bodies)[2] is True
        after = sample(h.province, "lsnet_sync_rejected_total", reason="bad_signature")
        assert after == refused_before + 1
        await drain(h.queue)
        # After the refusal every push is signed over the bytes, and everything arrives once.
        assert set(forms(h.transport.bodies)[3:]) == {False}
        assert await applied(h.province, h.city_id) == RECORDS
        assert all(r.acked for r in await batch_rows(h.city))
        own = (await h.city.store.origin_digests())[h.city_id]
        assert (await h.province.store.origin_digests())[h.city_id] == own


# -- the wire and the signatures -------------------------------------------------------------------


def test_a_digest_signature_is_not_a_signature_over_the_bytes() -> None:
    key = NodeKey(SigningKey.generate())
    data = b"envelope" * 1000
    verify_digest_any([key.verify_key], PURPOSE_PUSH, data, sign_digest(key, PURPOSE_PUSH, data))
    with pytest.raises(SignatureInvalid):
        verify_any([key.verify_key], PURPOSE_PUSH, data, sign_digest(key, PURPOSE_PUSH, data))
    with pytest.raises(SignatureInvalid):
        verify_digest_any([key.verify_key], PURPOSE_PUSH, data, sign(key, PURPOSE_PUSH, data))
    with pytest.raises(SignatureInvalid):  # another purpose
        verify_digest_any(
            [key.verify_key], "push-reply", data, sign_digest(key, PURPOSE_PUSH, data)
        )
    with pytest.raises(SignatureInvalid):  # other bytes
        verify_digest_any(
            [key.verify_key], PURPOSE_PUSH, data + b"!", sign_digest(key, PURPOSE_PUSH, data)
        )


def test_sealed_says_what_was_signed() -> None:
    plain = Sealed(b"e", b"s" * 64)
    digest = Sealed(b"e", b"s" * 64, digest=True)
    assert Sealed.from_bytes(plain.to_bytes()) == plain
    assert Sealed.from_bytes(digest.to_bytes()) == digest
    assert plain.to_bytes() != digest.to_bytes()
    from sync.wire import packb

    with pytest.raises(WireError) as refused:
        Sealed.from_bytes(packb({"e": b"e", "s": b"s" * 64, "h": "md5"}))
    assert refused.value.code is Code.UNSUPPORTED_VERSION
    assert "'md5' is not supported" in refused.value.message


def test_push_replies_say_what_the_parent_accepts() -> None:
    reply = PushReply("330000", "330100", b"n" * 16, (), (), accepts=(ACCEPTS_DIGEST,))
    assert PushReply.from_bytes(reply.to_bytes()).accepts == (ACCEPTS_DIGEST,)
    older = PushReply("330000", "330100", b"n" * 16, (), ())
    assert b"accepts" not in older.to_bytes()  # what a node of protocol 1 sends and reads
    assert PushReply.from_bytes(older.to_bytes()).accepts == ()
    from sync.wire import packb, unpackb

    bad = unpackb(reply.to_bytes(), what="test")
    bad["accepts"] = [1]
    with pytest.raises(WireError) as refused:
        PushReply.from_bytes(packb(bad))
    assert refused.value.code is Code.MALFORMED
