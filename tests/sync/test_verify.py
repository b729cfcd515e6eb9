"""sync.verify: pure trust decisions on one incoming batch, and its order against a watermark."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from nacl.signing import VerifyKey

from hierarchy_config.model import LimitsConfig
from security.keys import NodeKey
from security.signing import sign
from sync.errors import BatchRejected
from sync.verify import Order, VerifiedBatch, decide_order, verify_batch
from sync.wire import (
    PURPOSE_BATCH,
    PURPOSE_PUSH,
    ZERO_HASH,
    BatchHeader,
    Code,
    SignedBatch,
    encode_body,
    header_hash,
    packb,
    sha256,
    unpackb,
)
from tests.sync.helpers import (
    CITY_A,
    CITY_B,
    PROVINCE,
    changes_for,
    make_batch,
    make_header,
    valid_records,
)

MINISTRY = "100000"
OTHER_PROVINCE = "320000"
OTHER_CITY = "320100"
EPOCH = "a" * 32

KEYS = {name: NodeKey.generate() for name in (CITY_A, CITY_B, PROVINCE, OTHER_CITY)}
ATTACKER = NodeKey.generate()

# Where each node sits below the ministry: the direct child whose subtree holds it.
ROUTE_AT_MINISTRY = {
    PROVINCE: PROVINCE,
    CITY_A: PROVINCE,
    CITY_B: PROVINCE,
    OTHER_PROVINCE: OTHER_PROVINCE,
    OTHER_CITY: OTHER_PROVINCE,
}
ROUTE_AT_PROVINCE = {CITY_A: CITY_A, CITY_B: CITY_B}


def run(
    signed: SignedBatch,
    *,
    sender: str = CITY_A,
    receiver: str = PROVINCE,
    keys: Mapping[str, VerifyKey] | None = None,
    limits: LimitsConfig | None = None,
    validate_records: bool = True,
    hold_invalid: Callable[[str], bool] | None = None,
) -> VerifiedBatch:
    routes = ROUTE_AT_MINISTRY if receiver == MINISTRY else ROUTE_AT_PROVINCE
    return verify_batch(
        signed,
        sender=sender,
        receiver=receiver,
        keys=keys if keys is not None else {n: k.verify_key for n, k in KEYS.items()},
        route_of=routes.get,
        limits=limits or LimitsConfig(),
        validate_records=validate_records,
        hold_invalid=hold_invalid,
    )


def rejected(signed: SignedBatch, **kw: Any) -> BatchRejected:
    with pytest.raises(BatchRejected) as info:
        run(signed, **kw)
    return info.value


def good_batch(origin: str = CITY_A, n: int = 5, first_seq: int = 1) -> SignedBatch:
    recs = valid_records(origin, n, seed=7)
    return make_batch(KEYS[origin], origin, EPOCH, changes_for(recs, first_seq))


# -- accepted --------------------------------------------------------------------------------------


def test_accepts_a_good_batch() -> None:
    signed = good_batch()
    vb = run(signed)
    assert vb.signed is signed
    assert vb.header == BatchHeader.from_bytes(signed.header_bytes)
    assert vb.header_hash == header_hash(signed.header_bytes)
    assert [c.seq for c in vb.changes] == [1, 2, 3, 4, 5]
    assert vb.changes == changes_for(valid_records(CITY_A, 5, seed=7))


def test_ministry_accepts_a_city_batch_relayed_by_its_province() -> None:
    vb = run(good_batch(CITY_A), sender=PROVINCE, receiver=MINISTRY)
    assert vb.header.origin == CITY_A


def test_a_province_may_send_its_own_batches() -> None:
    vb = run(good_batch(PROVINCE), sender=PROVINCE, receiver=MINISTRY)
    assert vb.header.origin == PROVINCE


# -- size limits come first ------------------------------------------------------------------------


def test_oversize_batch_is_too_large_before_any_signature_work() -> None:
    signed = good_batch(n=20)
    forged = dataclasses.replace(signed, signature=b"\x00" * 64)
    limits = LimitsConfig(max_batch_bytes=1024)
    assert forged.size > 1024
    exc = rejected(forged, limits=limits)
    assert exc.code is Code.TOO_LARGE
    assert str(forged.size) in exc.message
    # Even an origin this sender may not speak for is refused for its size first.
    exc = rejected(dataclasses.replace(forged), sender=CITY_B, limits=limits)
    assert exc.code is Code.TOO_LARGE


def test_too_many_changes_is_too_large_before_the_signature() -> None:
    forged = dataclasses.replace(good_batch(n=6), signature=b"\x00" * 64)
    exc = rejected(forged, limits=LimitsConfig(max_batch_changes=5))
    assert exc.code is Code.TOO_LARGE
    assert "6 changes" in exc.message


# -- authorisation ---------------------------------------------------------------------------------


def test_origin_outside_the_senders_subtree_is_not_authorised() -> None:
    exc = rejected(good_batch(CITY_B), sender=CITY_A)
    assert exc.code is Code.NOT_AUTHORISED
    assert CITY_A in exc.message and CITY_B in exc.message


def test_province_may_not_relay_another_provinces_city() -> None:
    exc = rejected(good_batch(OTHER_CITY), sender=PROVINCE, receiver=MINISTRY)
    assert exc.code is Code.NOT_AUTHORISED


def test_batch_claiming_the_receiver_as_origin_is_not_authorised() -> None:
    exc = rejected(good_batch(PROVINCE), sender=CITY_A, receiver=PROVINCE)
    assert exc.code is Code.NOT_AUTHORISED
    # ... even when the route table would (wrongly) allow it.
    signed = good_batch(PROVINCE)
    with pytest.raises(BatchRejected) as info:
        verify_batch(
            signed,
            sender=PROVINCE,
            receiver=PROVINCE,
            keys={PROVINCE: KEYS[PROVINCE].verify_key},
            route_of=lambda origin: PROVINCE,
            limits=LimitsConfig(),
        )
    assert info.value.code is Code.NOT_AUTHORISED


def test_origin_without_an_enrolled_key_is_unknown() -> None:
    keys = {CITY_B: KEYS[CITY_B].verify_key}
    exc = rejected(good_batch(CITY_A), sender=CITY_A, keys=keys)
    assert exc.code is Code.UNKNOWN_ORIGIN
    assert CITY_A in exc.message


# -- signatures ------------------------------------------------------------------------------------


def test_header_naming_another_key_is_refused() -> None:
    recs = valid_records(CITY_A, 3)
    changes = changes_for(recs)
    body = encode_body(changes)
    header = make_header(ATTACKER, CITY_A, EPOCH, changes, body)  # kid of the attacker
    header_bytes = header.to_bytes()
    signed = SignedBatch(header_bytes, sign(KEYS[CITY_A], PURPOSE_BATCH, header_bytes), body)
    exc = rejected(signed)
    assert exc.code is Code.BAD_SIGNATURE
    assert ATTACKER.kid in exc.message and KEYS[CITY_A].kid in exc.message


def test_batch_signed_by_another_key_is_a_bad_signature() -> None:
    recs = valid_records(CITY_A, 3)
    forged = make_batch(KEYS[CITY_A], CITY_A, EPOCH, changes_for(recs), signer=ATTACKER)
    exc = rejected(forged)
    assert exc.code is Code.BAD_SIGNATURE


def test_signature_for_another_purpose_is_a_bad_signature() -> None:
    signed = good_batch()
    push_sig = sign(KEYS[CITY_A], PURPOSE_PUSH, signed.header_bytes)
    exc = rejected(dataclasses.replace(signed, signature=push_sig))
    assert exc.code is Code.BAD_SIGNATURE


@pytest.mark.parametrize("signature", [b"", b"\x00" * 63, b"\x00" * 65])
def test_signature_of_the_wrong_length_is_a_bad_signature(signature: bytes) -> None:
    exc = rejected(dataclasses.replace(good_batch(), signature=signature))
    assert exc.code is Code.BAD_SIGNATURE


def test_tampered_header_byte_is_a_bad_signature() -> None:
    signed = good_batch()
    header = BatchHeader.from_bytes(signed.header_bytes)
    at = signed.header_bytes.index(header.digest) + 3
    raw = bytearray(signed.header_bytes)
    raw[at] ^= 0x01
    exc = rejected(dataclasses.replace(signed, header_bytes=bytes(raw)))
    assert exc.code is Code.BAD_SIGNATURE


def test_re_serialised_header_with_a_changed_field_is_a_bad_signature() -> None:
    signed = good_batch()
    m = unpackb(signed.header_bytes, what="test")
    m["created"] += 1
    exc = rejected(dataclasses.replace(signed, header_bytes=packb(m)))
    assert exc.code is Code.BAD_SIGNATURE


def test_header_bytes_are_verified_as_they_arrived() -> None:
    # Same fields, different bytes (keys not sorted): the signature covers the canonical bytes
    # only, so a re-ordered encoding does not verify.
    import msgpack

    signed = good_batch()
    m = unpackb(signed.header_bytes, what="test")
    reordered = msgpack.packb(dict(reversed(list(m.items()))), use_bin_type=True)
    assert reordered != signed.header_bytes
    assert BatchHeader.from_bytes(reordered) == BatchHeader.from_bytes(signed.header_bytes)
    exc = rejected(dataclasses.replace(signed, header_bytes=reordered))
    assert exc.code is Code.BAD_SIGNATURE


# -- body ------------------------------------------------------------------------------------------


def test_tampered_body_is_a_bad_digest() -> None:
    signed = good_batch()
    body = signed.body.replace(b"330", b"331", 1)
    assert body != signed.body
    exc = rejected(dataclasses.replace(signed, body=body))
    assert exc.code is Code.BAD_DIGEST


def test_body_with_a_different_count_than_signed_is_a_bad_range() -> None:
    recs = valid_records(CITY_A, 3)
    changes = changes_for(recs)
    body = encode_body(changes[:2])
    header = dataclasses.replace(
        make_header(KEYS[CITY_A], CITY_A, EPOCH, changes, body), digest=sha256(body)
    )
    header_bytes = header.to_bytes()
    signed = SignedBatch(header_bytes, sign(KEYS[CITY_A], PURPOSE_BATCH, header_bytes), body)
    exc = rejected(signed)
    assert exc.code is Code.BAD_RANGE


def test_malformed_header_is_refused_with_its_wire_code() -> None:
    signed = good_batch()
    exc = rejected(dataclasses.replace(signed, header_bytes=signed.header_bytes[:-4]))
    assert exc.code is Code.MALFORMED
    m = unpackb(signed.header_bytes, what="test")
    m["v"] = 9
    exc = rejected(dataclasses.replace(signed, header_bytes=packb(m)))
    assert exc.code is Code.UNSUPPORTED_VERSION


def _signed_with_changes(changes: list[Any]) -> SignedBatch:
    return make_batch(KEYS[CITY_A], CITY_A, EPOCH, changes)


def test_invalid_record_inside_a_well_signed_batch() -> None:
    recs = valid_records(CITY_A, 4)
    changes = changes_for(recs)
    person = next(i for i, c in enumerate(changes) if c.record_type == "person")
    payload = dict(changes[person].payload)
    payload["gender"] = "7"  # not in the GB/T 2261.1 table
    changes[person] = changes[person]._replace(payload=payload)
    exc = rejected(_signed_with_changes(changes))
    assert exc.code is Code.INVALID_RECORD
    assert f"seq {changes[person].seq}" in exc.message
    # The same batch passes when record validation is switched off.
    assert run(_signed_with_changes(changes), validate_records=False).header.count == 4


def test_invalid_record_of_a_held_type_is_held_and_the_rest_verified() -> None:
    changes = changes_for(valid_records(CITY_A, 6))
    person = next(i for i, c in enumerate(changes) if c.record_type == "person")
    payload = dict(changes[person].payload)
    payload["gender"] = "7"
    changes[person] = changes[person]._replace(payload=payload)
    signed = _signed_with_changes(changes)
    vb = run(signed, hold_invalid=lambda record_type: record_type == "person")
    assert [h.change.seq for h in vb.held] == [changes[person].seq]
    assert vb.held[0].code == Code.INVALID_RECORD.value and "gender" in vb.held[0].message
    assert [c.seq for c in vb.changes] == [c.seq for c in changes if c.seq != changes[person].seq]
    assert vb.header.count == len(changes)  # the batch itself is whole and stays as signed
    # A policy of 'block' for persons refuses the batch, as before.
    exc = rejected(signed, hold_invalid=lambda record_type: record_type != "person")
    assert exc.code is Code.INVALID_RECORD


def test_nothing_about_the_batch_itself_is_ever_held() -> None:
    changes = changes_for(valid_records(CITY_A, 3))
    signed = _signed_with_changes(changes)
    tampered = dataclasses.replace(signed, body=signed.body[:-1] + b"\x00")
    assert rejected(tampered, hold_invalid=lambda _t: True).code is Code.BAD_DIGEST
    forged = make_batch(KEYS[CITY_B], CITY_A, EPOCH, changes)
    assert rejected(forged, hold_invalid=lambda _t: True).code is Code.BAD_SIGNATURE


def test_unknown_record_type_is_an_invalid_record() -> None:
    changes = changes_for(valid_records(CITY_A, 2))
    changes[1] = changes[1]._replace(record_type="salary")
    exc = rejected(_signed_with_changes(changes))
    assert exc.code is Code.INVALID_RECORD


def test_change_whose_key_does_not_match_its_fields_is_an_invalid_record() -> None:
    changes = changes_for(valid_records(CITY_A, 3))
    changes[2] = changes[2]._replace(key=changes[0].key)
    exc = rejected(_signed_with_changes(changes))
    assert exc.code is Code.INVALID_RECORD
    assert "key does not match" in exc.message


def test_tombstone_with_its_natural_key_is_valid() -> None:
    recs = valid_records(CITY_A, 1)
    change = changes_for(recs, version=2)[0]
    natural = {
        k: v
        for k, v in change.payload.items()
        if k in ("uscc", "person_id", "insurance_type", "agency_region")
    }
    tomb = change._replace(deleted=True, payload=natural)
    vb = run(_signed_with_changes([tomb]))
    assert vb.changes[0].deleted is True


# -- order against the watermark -------------------------------------------------------------------

HASH_10 = b"\x0a" * 32


def header(first: int, last: int, prev: bytes = ZERO_HASH) -> BatchHeader:
    return BatchHeader(
        origin=CITY_A,
        epoch=EPOCH,
        first_seq=first,
        last_seq=last,
        count=last - first + 1,
        standards="builtin-1",
        created_ms=0,
        digest=b"\x00" * 32,
        prev=prev,
        kid="k",
    )


def test_first_batch_must_chain_to_the_zero_hash() -> None:
    assert decide_order(header(1, 5), 0, ZERO_HASH) is Order.APPLY
    assert decide_order(header(1, 5, prev=HASH_10), 0, ZERO_HASH) is Order.CHAIN_BROKEN
    # With no applied prefix the stored hash is irrelevant: the zero hash is expected.
    assert decide_order(header(1, 5), 0, HASH_10) is Order.APPLY


@pytest.mark.parametrize(
    ("first", "last", "prev", "expected"),
    [
        (1, 10, ZERO_HASH, Order.DUPLICATE),
        (4, 8, HASH_10, Order.DUPLICATE),
        (10, 10, HASH_10, Order.DUPLICATE),
        (11, 15, HASH_10, Order.APPLY),
        (11, 11, HASH_10, Order.APPLY),
        (11, 15, ZERO_HASH, Order.CHAIN_BROKEN),
        (11, 15, b"\x0b" * 32, Order.CHAIN_BROKEN),
        (12, 15, HASH_10, Order.GAP),
        (100, 200, HASH_10, Order.GAP),
        (10, 15, HASH_10, Order.OVERLAP),
        (1, 11, ZERO_HASH, Order.OVERLAP),
    ],
)
def test_decide_order(first: int, last: int, prev: bytes, expected: Order) -> None:
    assert decide_order(header(first, last, prev), 10, HASH_10) is expected
