"""sync.wire: canonical bytes, round trips, and strict decoding with a precise Code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.wire import (
    PROTOCOL_VERSION,
    ZERO_HASH,
    BatchHeader,
    BatchResult,
    BatchStatus,
    Change,
    Code,
    Push,
    PushReply,
    Sealed,
    SignedBatch,
    Watermark,
    WireError,
    decode_body,
    encode_body,
    error_body,
    header_hash,
    packb,
    parse_error_body,
    sha256,
    unpackb,
)


def a_change(seq: int = 1, **kw: Any) -> Change:
    fields: dict[str, Any] = {
        "seq": seq,
        "record_type": "person",
        "key": f"33010219900101{seq:04d}",
        "version": 1,
        "deleted": False,
        "payload": {"name": "张三", "gender": "1"},
        "standards": "builtin-1",
    }
    fields.update(kw)
    return Change(**fields)


def a_header(**kw: Any) -> BatchHeader:
    fields: dict[str, Any] = {
        "origin": "330100",
        "epoch": "e" * 32,
        "first_seq": 1,
        "last_seq": 3,
        "count": 3,
        "standards": "builtin-1",
        "created_ms": 1_790_000_000_000,
        "digest": b"\x01" * 32,
        "prev": ZERO_HASH,
        "kid": "0123456789abcdef",
    }
    fields.update(kw)
    return BatchHeader(**fields)


def header_map(**kw: Any) -> dict[str, Any]:
    """The header as the map that travels, to be mutated by tests."""
    m: dict[str, Any] = unpackb(a_header().to_bytes(), what="test")
    m.update(kw)
    return m


def a_push(n_batches: int = 2) -> Push:
    return Push(
        sender="330100",
        destination="330000",
        sent_ms=1_790_000_000_000,
        nonce=b"n" * 16,
        batches=tuple(SignedBatch(b"h%d" % i, b"s" * 64, b"body%d" % i) for i in range(n_batches)),
    )


def push_map(**kw: Any) -> dict[str, Any]:
    m: dict[str, Any] = unpackb(a_push().to_bytes(), what="test")
    m.update(kw)
    return m


def reply_map(**kw: Any) -> dict[str, Any]:
    reply = PushReply(
        responder="330000",
        destination="330100",
        nonce=b"n" * 16,
        results=(BatchResult("330100", "e", 1, 3, BatchStatus.APPLIED),),
        watermarks=(Watermark("330100", "e", 3),),
    )
    m: dict[str, Any] = unpackb(reply.to_bytes(), what="test")
    m.update(kw)
    return m


def code_of(fn: Callable[[], object]) -> Code:
    with pytest.raises(WireError) as info:
        fn()
    return info.value.code


# -- canonical bytes -------------------------------------------------------------------------------


def test_canonical_bytes_do_not_depend_on_key_order() -> None:
    one = {"b": 1, "a": {"y": [1, {"q": b"x", "p": "s"}], "x": True}, "c": None}
    two = {"c": None, "a": {"x": True, "y": [1, {"p": "s", "q": b"x"}]}, "b": 1}
    assert packb(one) == packb(two)
    # and the map keys really are written in sorted order
    assert list(msgpack.unpackb(packb(two), raw=False)) == ["a", "b", "c"]


def test_canonical_bytes_are_deterministic_for_headers() -> None:
    h = a_header()
    assert h.to_bytes() == a_header().to_bytes()
    assert h.hash == sha256(h.to_bytes()) == header_hash(h.to_bytes())
    assert a_header(created_ms=1).to_bytes() != h.to_bytes()


def test_tuples_and_lists_encode_alike() -> None:
    assert packb({"k": (1, 2)}) == packb({"k": [1, 2]})


@pytest.mark.parametrize("obj", [1.5, {"a": 0.0}, [1, [2.5]], {"a": {"b": (1.0,)}}])
def test_floats_are_refused(obj: object) -> None:
    with pytest.raises(TypeError, match="floats"):
        packb(obj)


# -- round trips -----------------------------------------------------------------------------------


def test_batch_header_round_trip() -> None:
    h = a_header(prev=b"\x07" * 32)
    back = BatchHeader.from_bytes(h.to_bytes())
    assert back == h
    assert back.to_bytes() == h.to_bytes()


def test_change_round_trip_including_tombstones() -> None:
    for change in (a_change(5), a_change(6, deleted=True, payload={}, version=9)):
        wire = unpackb(packb(change.to_wire()), what="test")
        assert Change.from_wire(wire) == change


def test_body_round_trip() -> None:
    changes = [a_change(seq) for seq in (1, 2, 3)]
    body = encode_body(changes)
    assert decode_body(body, a_header()) == changes


def test_push_round_trip() -> None:
    push = a_push(3)
    back = Push.from_bytes(push.to_bytes(), max_batches=3)
    assert back == push
    assert back.batches[1].size == len(b"h1") + 64 + len(b"body1")


def test_sealed_round_trip() -> None:
    sealed = Sealed(b"envelope", b"s" * 64)
    assert Sealed.from_bytes(sealed.to_bytes()) == sealed


def test_push_reply_round_trip() -> None:
    reply = PushReply(
        responder="330000",
        destination="330100",
        nonce=b"n" * 16,
        results=(
            BatchResult("330100", "e1", 1, 3, BatchStatus.APPLIED),
            BatchResult("330100", "e1", 7, 9, BatchStatus.GAP, "bad_range", "gap", 4),
            BatchResult("330100", "e1", 4, 6, BatchStatus.REJECTED, "chain_broken", "no"),
        ),
        watermarks=(Watermark("330100", "e1", 3), Watermark("330101", "e2", 0)),
    )
    assert PushReply.from_bytes(reply.to_bytes()) == reply


def test_error_body_round_trip_and_garbage() -> None:
    assert parse_error_body(error_body(Code.STALE, "clock")) == ("stale", "clock")
    code, message = parse_error_body(b"<html>proxy error</html>")
    assert code == Code.INTERNAL.value
    assert "proxy error" in message


# -- strict decoding of headers --------------------------------------------------------------------


@pytest.mark.parametrize("cut", [0, 1, 5, 20, -1])
def test_truncated_header_is_malformed(cut: int) -> None:
    data = a_header().to_bytes()
    assert code_of(lambda: BatchHeader.from_bytes(data[:cut])) is Code.MALFORMED


def test_trailing_bytes_are_malformed() -> None:
    data = a_header().to_bytes() + b"\x00"
    assert code_of(lambda: BatchHeader.from_bytes(data)) is Code.MALFORMED


@pytest.mark.parametrize(
    "field",
    ["v", "origin", "epoch", "first", "last", "count", "std", "created", "digest", "prev", "kid"],
)
def test_header_missing_field_is_malformed(field: str) -> None:
    m = header_map()
    del m[field]
    with pytest.raises(WireError) as info:
        BatchHeader.from_bytes(packb(m))
    assert info.value.code is Code.MALFORMED
    assert field in info.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("origin", 330100),
        ("origin", b"330100"),
        ("origin", ""),
        ("origin", "x" * 65),
        ("epoch", None),
        ("first", "1"),
        ("first", True),
        ("last", [3]),
        ("count", {"n": 3}),
        ("std", 1),
        ("created", "now"),
        ("digest", "00" * 32),
        ("digest", b"\x01" * 31),
        ("prev", b"\x00" * 33),
        ("kid", 7),
        ("v", "1"),
        ("v", True),
    ],
)
def test_header_wrong_types_are_malformed(field: str, value: object) -> None:
    data = packb(header_map(**{field: value}))
    assert code_of(lambda: BatchHeader.from_bytes(data)) is Code.MALFORMED


@pytest.mark.parametrize("data", [packb([1, 2, 3]), packb("header"), packb(None), b"\xc1"])
def test_header_that_is_not_a_map_is_malformed(data: bytes) -> None:
    assert code_of(lambda: BatchHeader.from_bytes(data)) is Code.MALFORMED


@pytest.mark.parametrize("version", [0, 2, PROTOCOL_VERSION + 100])
def test_unknown_protocol_version(version: int) -> None:
    for decode in (
        lambda: BatchHeader.from_bytes(packb(header_map(v=version))),
        lambda: Push.from_bytes(packb(push_map(v=version)), max_batches=8),
        lambda: PushReply.from_bytes(packb(reply_map(v=version))),
    ):
        with pytest.raises(WireError) as info:
            decode()
        assert info.value.code is Code.UNSUPPORTED_VERSION
        assert str(version) in info.value.message


@pytest.mark.parametrize(
    ("first", "last", "count"),
    [(0, 2, 3), (-1, 1, 3), (5, 4, 0), (1, 3, 2), (1, 3, 4), (2, 2, 0)],
)
def test_header_bad_range(first: int, last: int, count: int) -> None:
    data = packb(header_map(first=first, last=last, count=count))
    assert code_of(lambda: BatchHeader.from_bytes(data)) is Code.BAD_RANGE


# -- strict decoding of bodies and changes ---------------------------------------------------------


def test_decode_body_rejects_count_mismatch() -> None:
    body = encode_body([a_change(1), a_change(2)])
    with pytest.raises(WireError) as info:
        decode_body(body, a_header(first_seq=1, last_seq=3, count=3))
    assert info.value.code is Code.BAD_RANGE
    assert "number of changes" in info.value.message


@pytest.mark.parametrize("seqs", [(1, 2, 4), (2, 3, 4), (1, 1, 2), (3, 2, 1)])
def test_decode_body_rejects_non_contiguous_seqs(seqs: tuple[int, ...]) -> None:
    body = encode_body([a_change(s) for s in seqs])
    with pytest.raises(WireError) as info:
        decode_body(body, a_header(first_seq=1, last_seq=3, count=3))
    assert info.value.code is Code.BAD_RANGE
    assert "contiguous" in info.value.message


@pytest.mark.parametrize(
    "raw",
    [
        {"seq": 1},
        [1, "person", "k", 1, False, {}],  # 6 items
        [1, "person", "k", 1, False, {}, "std", "extra"],
        ["1", "person", "k", 1, False, {}, "std"],
        [True, "person", "k", 1, False, {}, "std"],
        [1, "person", "k", 1, 0, {}, "std"],
        [1, "person", "k", 1, False, [], "std"],
        [1, "person", "k", 1, False, {"a": 1}, "std"],
        [1, "person", "k", 1, False, {"a": b"x"}, "std"],
        [0, "person", "k", 1, False, {}, "std"],
        [1, "person", "k", 0, False, {}, "std"],
        [1, "", "k", 1, False, {}, "std"],
        [1, "person", "", 1, False, {}, "std"],
        [1, "person", "k" * 513, 1, False, {}, "std"],
        [1, "t" * 65, "k", 1, False, {}, "std"],
    ],
)
def test_bad_change_is_malformed(raw: object) -> None:
    body = packb([raw])
    header = a_header(first_seq=1, last_seq=1, count=1)
    assert code_of(lambda: decode_body(body, header)) is Code.MALFORMED


@pytest.mark.parametrize("body", [packb({"changes": []}), packb(b"x"), b"\x92\x01"])
def test_body_that_is_not_a_list_is_malformed(body: bytes) -> None:
    assert code_of(lambda: decode_body(body, a_header())) is Code.MALFORMED


# -- strict decoding of pushes, sealed messages and replies ----------------------------------------


def test_push_with_too_many_batches_is_too_large() -> None:
    data = a_push(5).to_bytes()
    with pytest.raises(WireError) as info:
        Push.from_bytes(data, max_batches=4)
    assert info.value.code is Code.TOO_LARGE
    assert "5" in info.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nonce", b"short"),
        ("nonce", b"x" * 65),
        ("nonce", "n" * 16),
        ("sender", 330100),
        ("dest", ""),
        ("sent", "yesterday"),
        ("batches", "none"),
        ("batches", [[b"h", b"s"]]),
        ("batches", [[b"h", b"s", "body"]]),
        ("batches", [b"hsb"]),
    ],
)
def test_push_wrong_fields_are_malformed(field: str, value: object) -> None:
    data = packb(push_map(**{field: value}))
    assert code_of(lambda: Push.from_bytes(data, max_batches=8)) is Code.MALFORMED


@pytest.mark.parametrize("field", ["sender", "dest", "sent", "nonce", "batches", "v"])
def test_push_missing_field_is_malformed(field: str) -> None:
    m = push_map()
    del m[field]
    assert code_of(lambda: Push.from_bytes(packb(m), max_batches=8)) is Code.MALFORMED


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        packb({"e": b"x"}),
        packb({"e": "x", "s": b"s"}),
        packb({"e": b"x", "s": 5}),
        packb([b"x", b"s"]),
        Sealed(b"x" * 100, b"s" * 64).to_bytes()[:-10],
    ],
)
def test_bad_sealed_is_malformed(data: bytes) -> None:
    assert code_of(lambda: Sealed.from_bytes(data)) is Code.MALFORMED


@pytest.mark.parametrize(
    "mutation",
    [
        {"wm": [["330100", "e"]]},
        {"wm": [["330100", "e", "3"]]},
        {"wm": [["330100", "e", True]]},
        {"wm": "none"},
        {"results": [{"status": "applied"}]},
        {"results": [dict(reply_map()["results"][0], status="eaten")]},
        {"nonce": "n"},
    ],
)
def test_bad_push_reply_is_malformed(mutation: dict[str, Any]) -> None:
    data = packb(reply_map(**mutation))
    assert code_of(lambda: PushReply.from_bytes(data)) is Code.MALFORMED


# -- nothing but WireError, whatever the bytes -----------------------------------------------------

DECODERS: list[Callable[[bytes], object]] = [
    BatchHeader.from_bytes,
    Sealed.from_bytes,
    PushReply.from_bytes,
    lambda d: Push.from_bytes(d, max_batches=8),
    lambda d: decode_body(d, a_header()),
]

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.sampled_from(["v", "e", "s", "origin", "first", "x"]), inner, max_size=5
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_raise_only_wire_error(data: bytes) -> None:
    for decode in DECODERS:
        try:
            decode(data)
        except WireError as exc:
            assert isinstance(exc.code, Code)


@settings(max_examples=300, deadline=None)
@given(obj=msgpack_values, seed=st.sampled_from(["header", "push", "reply"]))
def test_random_msgpack_structures_raise_only_wire_error(obj: object, seed: str) -> None:
    # Random values, alone and grafted into otherwise valid messages.
    base = {"header": header_map(), "push": push_map(), "reply": reply_map()}[seed]
    candidates = [packb(obj)] + [packb({**base, k: obj}) for k in list(base)[:6]]
    for data in candidates:
        for decode in DECODERS:
            try:
                decode(data)
            except WireError as exc:
                assert isinstance(exc.code, Code)
