"""Builders shared by the sync tests: real records, real signed batches, sealed pushes, row counts.

Nothing here fakes a component of lsnet: batches are signed with real Ed25519 keys through
`security.signing`, pushes are sealed exactly as `sync.sender` seals them, and counts are read
from the real database.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from sqlalchemy import Connection, func, select

from hierarchy_config.model import LimitsConfig
from node.datagen import generate_records
from node.db import Database
from node.records import ValidRecord, validate_record
from node.schema import batches, records, watermarks
from node.store import BUILTIN_STANDARDS
from security.keys import NodeKey
from security.signing import sign, verify
from sync.verify import VerifiedBatch, verify_batch
from sync.wire import (
    PURPOSE_BATCH,
    PURPOSE_PUSH,
    PURPOSE_PUSH_REPLY,
    ZERO_HASH,
    BatchHeader,
    Change,
    Push,
    PushReply,
    Sealed,
    SignedBatch,
    encode_body,
    sha256,
)

CITY_A = "330100"
CITY_B = "330200"
PROVINCE = "330000"
NOW_MS = 1_790_000_000_000


def valid_records(city: str, n: int, seed: int = 0) -> list[ValidRecord]:
    return [validate_record(o) for o in generate_records(city, n, seed=seed)]


def changes_for(recs: Sequence[ValidRecord], first_seq: int = 1, version: int = 1) -> list[Change]:
    return [
        Change(
            seq=first_seq + i,
            record_type=r.record_type,
            key=r.key,
            version=version,
            deleted=r.deleted,
            payload=dict(r.payload),
            standards=BUILTIN_STANDARDS,
        )
        for i, r in enumerate(recs)
    ]


def make_header(
    key: NodeKey,
    origin: str,
    epoch: str,
    changes: Sequence[Change],
    body: bytes,
    *,
    prev: bytes = ZERO_HASH,
    created_ms: int = NOW_MS,
) -> BatchHeader:
    return BatchHeader(
        origin=origin,
        epoch=epoch,
        first_seq=changes[0].seq,
        last_seq=changes[-1].seq,
        count=len(changes),
        standards=BUILTIN_STANDARDS,
        created_ms=created_ms,
        digest=sha256(body),
        prev=prev,
        kid=key.kid,
    )


def make_batch(
    key: NodeKey,
    origin: str,
    epoch: str,
    changes: Sequence[Change],
    *,
    prev: bytes = ZERO_HASH,
    signer: NodeKey | None = None,
) -> SignedBatch:
    """A batch of `origin` naming `key`; signed by `signer` (default: `key` itself)."""
    body = encode_body(changes)
    header_bytes = make_header(key, origin, epoch, changes, body, prev=prev).to_bytes()
    return SignedBatch(header_bytes, sign(signer or key, PURPOSE_BATCH, header_bytes), body)


def verified(
    signed: SignedBatch, key: NodeKey, *, sender: str = CITY_A, receiver: str = PROVINCE
) -> VerifiedBatch:
    """Run the real verifier for a batch of `sender` arriving at `receiver`."""
    return verify_batch(
        signed,
        sender=sender,
        receiver=receiver,
        keys={sender: key.verify_key},
        route_of=lambda origin: origin if origin == sender else None,
        limits=LimitsConfig(),
    )


def seal_push(
    key: NodeKey,
    *,
    sender: str,
    destination: str,
    batches_: Sequence[SignedBatch],
    sent_ms: int,
    nonce: bytes | None = None,
    v: int | None = None,
) -> bytes:
    """The bytes a child posts to /v1/sync/push, sealed exactly as the sender seals them."""
    push = Push(
        sender=sender,
        destination=destination,
        sent_ms=sent_ms,
        nonce=nonce or os.urandom(16),
        batches=tuple(batches_),
        **({"v": v} if v is not None else {}),
    )
    envelope = push.to_bytes()
    return Sealed(envelope, sign(key, PURPOSE_PUSH, envelope)).to_bytes()


def open_reply(data: bytes, parent_key: NodeKey) -> PushReply:
    """Check the parent's signature on a reply and decode it."""
    sealed = Sealed.from_bytes(data)
    verify(parent_key.verify_key, PURPOSE_PUSH_REPLY, sealed.envelope, sealed.signature)
    return PushReply.from_bytes(sealed.envelope)


def _counts_txn(conn: Connection) -> dict[str, int]:
    return {
        t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
        for t in (records, batches, watermarks)
    }


async def row_counts(db: Database) -> dict[str, int]:
    """Rows in records, batches and watermarks."""
    return await db.read(_counts_txn)
