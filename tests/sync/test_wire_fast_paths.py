"""The fast encoders produce exactly the canonical bytes of the generic `packb` (and the
standard JSON encoder's text); the column-wise body decoder accepts exactly what the per-change
decoder accepts."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.store import payload_json, record_hash, record_rows
from sync.wire import (
    _BODY,
    BatchHeader,
    Change,
    Code,
    WireError,
    _decode_changes_fast,
    decode_body,
    encode_body,
    pack_record,
    packb,
)

text = st.text(max_size=12)
payloads = st.dictionaries(text, text, max_size=6)


@given(st.lists(st.tuples(text, text, st.integers(1, 2**40), st.booleans(), payloads), max_size=5))
def test_encode_body_equals_generic_canonical_bytes(items: list) -> None:  # type: ignore[type-arg]
    changes = [
        Change(i + 1, rtype, key, version, deleted, payload, "std-1")
        for i, (rtype, key, version, deleted, payload) in enumerate(items)
    ]
    assert encode_body(changes) == packb([c.to_wire() for c in changes])


@given(text, text, text, st.integers(1, 2**40), st.booleans(), payloads)
def test_pack_record_equals_generic_canonical_bytes(
    rtype: str, owner: str, key: str, version: int, deleted: bool, payload: dict[str, str]
) -> None:
    assert pack_record(rtype, owner, key, version, deleted, payload) == packb(
        [rtype, owner, key, version, deleted, payload]
    )


@given(payloads)
def test_payload_json_equals_the_standard_encoder(payload: dict[str, str]) -> None:
    # orjson writes the stored text; the standard library's canonical encoder is the reference.
    assert payload_json(payload) == json.dumps(
        payload, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )


@given(
    st.lists(
        st.tuples(text, text, st.integers(1, 2**40), st.booleans(), payloads, text), max_size=6
    ),
    text,
)
def test_record_rows_hold_the_canonical_text_and_hash(items: list, origin: str) -> None:  # type: ignore[type-arg]
    # Payloads in any key order (hypothesis builds dicts in any order), any text.
    changes = [
        Change(i + 1, rtype, key, version, deleted, payload, standards)
        for i, (rtype, key, version, deleted, payload, standards) in enumerate(items)
    ]
    changes.append(Change(len(items) + 1, "t", "k", 1, False, {"b": "乙", "a": "\n"}, "s"))
    assert record_rows(origin, "e", changes, 7) == [
        (
            c.record_type,
            origin,
            c.key,
            c.version,
            c.deleted,
            payload_json(c.payload),
            c.standards,
            record_hash(c.record_type, origin, c.key, c.version, c.deleted, c.payload),
            "e",
            c.seq,
            7,
        )
        for c in changes
    ]


def test_payload_json_falls_back_for_what_orjson_refuses() -> None:
    lone = {"name": "\ud800"}  # a lone surrogate: orjson refuses it, the standard encoder not
    assert payload_json(lone) == '{"name":"\ud800"}'


# Long and non-ASCII text crosses msgpack's fixstr/str8/str16 boundaries (31, 255 bytes).
long_text = st.text(max_size=300)


@given(
    long_text,
    long_text,
    long_text,
    st.integers(1, 2**64 - 1),
    st.booleans(),
    st.dictionaries(long_text, long_text, max_size=20),
)
def test_msgspec_pack_record_equals_msgpack_for_any_sizes(
    rtype: str, owner: str, key: str, version: int, deleted: bool, payload: dict[str, str]
) -> None:
    assert pack_record(rtype, owner, key, version, deleted, payload) == packb(
        [rtype, owner, key, version, deleted, payload]
    )


def test_pack_record_sorts_an_unsorted_payload() -> None:
    assert pack_record("t", "o", "k", 1, False, {"b": "1", "a": "2"}) == packb(
        ["t", "o", "k", 1, False, {"a": "2", "b": "1"}]
    )


# -- the column-wise body decoder accepts exactly what the per-change decoder accepts ---------

wire_values = st.one_of(
    st.integers(-2, 2**40), st.booleans(), text, st.binary(max_size=4), st.none(), payloads
)


def _good(i: int) -> list[object]:
    return [i + 1, "person", f"k{i}", 1, False, {"name": "张三", "id": str(i)}, "std-1"]


def _decoded(raw: list[object]) -> list[Change] | str:
    try:
        return [Change.from_wire(c) for c in raw]
    except WireError as exc:
        return exc.message


@given(st.integers(0, 4), st.integers(0, 6), wire_values)
def test_fast_body_decoder_agrees_with_the_per_change_decoder(
    at: int, field: int, value: object
) -> None:
    raw = [_good(i) for i in range(5)]
    raw[at][field] = value
    expected = _decoded(raw)
    fast = _decode_changes_fast(raw)
    if isinstance(expected, str):
        assert fast is None  # refused; decode_body then reports the per-change message
    else:
        assert fast == expected
        assert all(type(c) is Change for c in fast)


def _msgspec(data: bytes) -> list[Change] | None:
    try:
        return list(map(Change._make, _BODY.decode(data)))
    except Exception:
        return None


long_wire_values = st.one_of(
    st.integers(-2, 2**64 - 1),
    st.booleans(),
    st.text(max_size=600),
    st.binary(max_size=4),
    st.none(),
    st.floats(allow_nan=False),
    payloads,
    st.lists(text, max_size=3),
)


@given(st.integers(0, 4), st.integers(0, 6), long_wire_values, st.integers(6, 8))
def test_msgspec_body_decoder_accepts_exactly_what_the_per_change_decoder_accepts(
    at: int, field: int, value: object, width: int
) -> None:
    """`decode_body` tries msgspec first: it must never accept what `Change.from_wire` refuses,
    and what both accept must decode to the same changes."""
    raw = [_good(i) for i in range(5)]
    raw[at][field] = value
    raw[at] = (raw[at] + ["extra", "more"])[:width] if width != 7 else raw[at]
    expected = _decoded(raw)
    fast = _msgspec(msgpack.packb(raw, use_bin_type=True))
    if isinstance(expected, str):
        assert fast is None
    else:
        assert fast == expected


def test_msgspec_body_decoder_refuses_trailing_bytes_and_bad_utf8() -> None:
    body = msgpack.packb([_good(0)], use_bin_type=True)
    assert _msgspec(body) is not None
    assert _msgspec(body + b"\x01") is None
    assert _msgspec(body.replace("张".encode(), b"\xed\xa0\x80")) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"name": 1},  # a value that is not a string
        {b"name": "x"},  # a key that is not a string
        [1, 2],  # a payload that is not a map
        "x" * 513,  # too long to be a key (placed in the key column below)
    ],
)
def test_decode_body_names_a_bad_change_as_before(bad: object) -> None:
    raw = [_good(i) for i in range(3)]
    if isinstance(bad, str):
        raw[1][2] = bad
    else:
        raw[1][5] = bad
    header = BatchHeader("330100", "e", 1, 3, 3, "std-1", 0, b"\0" * 32, b"\0" * 32, "k")
    with pytest.raises(WireError) as exc:
        decode_body(msgpack.packb(raw, use_bin_type=True), header)
    assert exc.value.code is Code.MALFORMED
    assert exc.value.message == _decoded(raw)


def test_decode_body_refuses_non_contiguous_seqs() -> None:
    raw = [_good(i) for i in range(3)]
    raw[2][0] = 5
    header = BatchHeader("330100", "e", 1, 3, 3, "std-1", 0, b"\0" * 32, b"\0" * 32, "k")
    with pytest.raises(WireError) as exc:
        decode_body(msgpack.packb(raw, use_bin_type=True), header)
    assert exc.value.code is Code.BAD_RANGE
