"""Trust decisions about incoming batches, as pure functions: no database, no socket.

`verify_batch` runs the checks that need no stored state, cheapest first: size, header shape,
authorisation (the origin is the sender or in the sender's subtree), the origin's key, the
signature over the header bytes as they arrived, the body digest, the body shape, and each
record (the records of one type together first, `unproven`; one by one those not proven so).
`decide_order` compares a verified header with the receiver's watermark for its
(origin, epoch) and says apply, duplicate, gap or chain broken.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from itertools import groupby
from operator import attrgetter

from nacl.signing import VerifyKey

from hierarchy_config.model import LimitsConfig
from network_mgmt.probe import check_probe, is_probe
from node.records import RecordInvalid
from node.validation import BuiltinValidator, RecordValidator
from security.keyring import KeyCode, KeyRefused, KeyRing
from security.signing import SignatureInvalid, verify
from sync.errors import BatchRejected
from sync.wire import (
    PURPOSE_BATCH,
    ZERO_HASH,
    BatchHeader,
    Change,
    Code,
    SignedBatch,
    WireError,
    decode_body,
    header_hash,
    sha256,
)


@dataclass(frozen=True, slots=True)
class HeldChange:
    """A change of a verified batch that failed record validation and is held aside, by the
    receiver's policy for its record type, instead of refusing the batch (`sync.held`)."""

    change: Change
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class VerifiedBatch:
    signed: SignedBatch
    header: BatchHeader
    header_hash: bytes
    changes: list[Change]  # the changes to apply (without the held ones)
    held: tuple[HeldChange, ...] = ()


def verify_batch(
    signed: SignedBatch,
    *,
    sender: str,
    receiver: str,
    keys: Mapping[str, VerifyKey] | KeyRing,
    route_of: Callable[[str], str | None],
    limits: LimitsConfig,
    validate_records: bool = True,
    rules_for: Callable[[str], RecordValidator] | None = None,
    hold_invalid: Callable[[str], bool] | None = None,
) -> VerifiedBatch:
    """Return the verified batch or raise BatchRejected with a precise code.

    A change that fails record validation refuses the whole batch, unless `hold_invalid` says
    its record type is held: then it is left out of `changes` and returned in `held`. Only
    record content is ever held; anything about the batch itself (signature, digest, shape,
    authorisation, probes) always refuses it.
    """
    if signed.size > limits.max_batch_bytes:
        raise BatchRejected(
            Code.TOO_LARGE, f"batch is {signed.size} bytes; limit {limits.max_batch_bytes}"
        )
    try:
        header = BatchHeader.from_bytes(signed.header_bytes)
    except WireError as exc:
        raise BatchRejected(exc.code, exc.message) from None
    if header.count > limits.max_batch_changes:
        raise BatchRejected(
            Code.TOO_LARGE, f"batch holds {header.count} changes; limit {limits.max_batch_changes}"
        )
    origin = header.origin
    if origin == receiver or (origin != sender and route_of(origin) != sender):
        raise BatchRejected(
            Code.NOT_AUTHORISED, f"node {sender} may not send batches of origin {origin}"
        )
    ring = keys if isinstance(keys, KeyRing) else KeyRing.from_keys(keys)
    if not ring.knows(origin):
        raise BatchRejected(Code.UNKNOWN_ORIGIN, f"origin {origin} is not enrolled here")
    try:
        # The key the batch names, trusted for what it signed when it signed it: a key rotated
        # away keeps verifying older batches; a revoked key verifies nothing new.
        key = ring.check_at(origin, header.kid, header.created_ms)
    except KeyRefused as exc:
        code = Code.BAD_SIGNATURE if exc.code is KeyCode.UNKNOWN_KEY else Code(exc.code.value)
        raise BatchRejected(code, f"batch of {origin}: {exc.message}") from None
    try:
        verify(key, PURPOSE_BATCH, signed.header_bytes, signed.signature)
    except SignatureInvalid as exc:
        raise BatchRejected(Code.BAD_SIGNATURE, f"batch of {origin}: {exc}") from None
    if sha256(signed.body) != header.digest:
        raise BatchRejected(Code.BAD_DIGEST, f"batch of {origin}: body does not match its digest")
    try:
        changes = decode_body(signed.body, header)
    except WireError as exc:
        raise BatchRejected(exc.code, f"batch of {origin}: {exc.message}") from None
    rules = rules_for(origin) if rules_for is not None else BuiltinValidator()
    check = check_change if validate_records else check_change_key
    held: list[HeldChange] = []
    for change in unproven(changes, rules) if validate_records else changes:
        if is_probe(change.record_type):  # end-to-end lag probe: not a record (network_mgmt)
            check_probe(change, origin)
            continue
        try:
            check(change, rules)
        except BatchRejected as exc:
            if hold_invalid is None or not hold_invalid(change.record_type):
                raise
            held.append(HeldChange(change, exc.code.value, exc.message))
    if held:
        seqs = {h.change.seq for h in held}
        changes = [c for c in changes if c.seq not in seqs]
    return VerifiedBatch(signed, header, header_hash(signed.header_bytes), changes, tuple(held))


_TYPE = attrgetter("record_type")
_KEY = attrgetter("key")
_PAYLOAD = attrgetter("payload")
_DELETED = attrgetter("deleted")


def unproven(changes: list[Change], rules: RecordValidator) -> list[Change]:
    """The changes `check_change` still has to look at, in order: all but those of a record
    type whose every change the validator's `accepts_normalised_all` proves valid at once
    (node.recheck: column by column). Probes and the changes of a type that holds a tombstone
    are never proven here. Proven changes are valid, so the first change `check_change` refuses
    is the same as when every change is checked."""
    accepts_all = getattr(rules, "accepts_normalised_all", None)
    if accepts_all is None or not changes:
        return changes
    proven: set[str] = set()
    types = 0
    for record_type, grouped in groupby(sorted(changes, key=_TYPE), key=_TYPE):
        types += 1
        group = list(grouped)
        if (
            not is_probe(record_type)
            and not any(map(_DELETED, group))
            and accepts_all(record_type, list(map(_KEY, group)), list(map(_PAYLOAD, group)))
        ):
            proven.add(record_type)
    if not proven:
        return changes
    if len(proven) == types:
        return []
    return [c for c in changes if c.record_type not in proven]


def check_change_key(change: Change, rules: RecordValidator) -> None:
    """Cheap check on every change: a known record type whose natural key matches its fields."""
    natural_key = rules.natural_key(change.record_type)
    if natural_key is None:
        raise BatchRejected(Code.INVALID_RECORD, f"change seq {change.seq}: unknown record type")
    payload = change.payload
    if "|".join(payload.get(name, "") for name in natural_key) != change.key:
        raise BatchRejected(
            Code.INVALID_RECORD, f"change seq {change.seq}: key does not match the record fields"
        )


def check_change(change: Change, rules: RecordValidator) -> None:
    """A change must be a valid, normalised record whose natural key matches the one it claims.

    A validator offering `accepts_normalised` (node.validation) answers first: it proves most
    records good without the full validator. Whenever it cannot, the full validator runs and
    gives the exact code and message."""
    fast = getattr(rules, "accepts_normalised", None)
    if fast is not None and fast(change.record_type, change.key, change.deleted, change.payload):
        return
    obj: dict[str, object] = {"type": change.record_type, **change.payload}
    if change.deleted:
        obj["deleted"] = True
    try:
        rec, _warnings = rules.validate(obj)
    except RecordInvalid as exc:
        raise BatchRejected(
            Code.INVALID_RECORD, f"change seq {change.seq} ({change.record_type}): {exc}"
        ) from None
    if rec.key != change.key:
        raise BatchRejected(
            Code.INVALID_RECORD, f"change seq {change.seq}: key does not match the record fields"
        )
    if rec.payload != change.payload:
        raise BatchRejected(
            Code.INVALID_RECORD,
            f"change seq {change.seq}: fields are not in their normalised form",
        )


class Order(StrEnum):
    APPLY = "apply"
    DUPLICATE = "duplicate"
    GAP = "gap"
    CHAIN_BROKEN = "chain_broken"
    OVERLAP = "overlap"


def decide_order(header: BatchHeader, wm_seq: int, wm_hash: bytes) -> Order:
    """Where a batch stands against the watermark of its (origin, epoch).

    Batch boundaries are immutable, so an honest batch either lies wholly at or below the
    watermark (a duplicate), starts right after it (apply, if it chains to the last applied
    header), or starts further on (a gap: ask for `wm_seq + 1`).
    """
    if header.last_seq <= wm_seq:
        return Order.DUPLICATE
    if header.first_seq > wm_seq + 1:
        return Order.GAP
    if header.first_seq <= wm_seq:
        return Order.OVERLAP
    expected = wm_hash if wm_seq > 0 else ZERO_HASH
    if header.prev != expected:
        return Order.CHAIN_BROKEN
    return Order.APPLY
