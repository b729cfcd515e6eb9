"""The fast encoders produce exactly the canonical bytes of the generic `packb`."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sync.wire import Change, encode_body, pack_record, packb

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
