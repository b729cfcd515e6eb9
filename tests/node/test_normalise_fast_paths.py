"""The receiver-side fast paths of record normalisation (issue 8) agree with the full
normalisers: the per-field cache of accepted values, the canonical-decimal and ISO-date
shortcuts. Same value or the same refusal, first call and cached call alike."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from node.records import (
    RECORD_TYPES,
    FieldSpec,
    RecordInvalid,
    _norm_date,
    _norm_date_full,
    _norm_dec,
    _norm_dec_full,
    _normalise,
    _normalise_uncached,
    _Reject,
)

DECIMAL_TEXT = st.from_regex(r"[ +-]?[0-9]{0,14}(\.[0-9]{0,4})?[ ]?", fullmatch=True)
DATE_TEXT = st.one_of(
    st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", fullmatch=True),
    st.from_regex(r"[0-9]{8}", fullmatch=True),
    st.dates().map(lambda d: d.isoformat()),
)


def _outcome(fn: object, spec: FieldSpec, raw: object) -> tuple[str, str | None]:
    assert callable(fn)
    try:
        return "ok", fn(spec, raw)
    except RecordInvalid as exc:
        return "invalid", str(exc)


def _specs(kind_prefix: str) -> list[FieldSpec]:
    return [
        f
        for schema in RECORD_TYPES.values()
        for f in schema.fields
        if f.kind.startswith(kind_prefix)
    ]


def _plain(fn: object, *args: object) -> tuple[str, str]:
    assert callable(fn)
    try:
        return "ok", fn(*args)
    except _Reject as exc:
        return "rejected", str(exc)


@settings(max_examples=300, deadline=None)
@given(raw=DECIMAL_TEXT, precision=st.integers(1, 18), scale=st.integers(0, 4))
@example(raw="1.0", precision=1, scale=1)  # no digit allowed before the point: only "0.x"
def test_canonical_decimal_shortcut_equals_full_normaliser(
    raw: str, precision: int, scale: int
) -> None:
    scale = min(scale, precision)
    assert _plain(_norm_dec, raw, precision, scale) == _plain(_norm_dec_full, raw, precision, scale)


@settings(max_examples=300, deadline=None)
@given(raw=DATE_TEXT)
def test_iso_date_shortcut_equals_full_normaliser(raw: str) -> None:
    assert _plain(_norm_date, raw) == _plain(_norm_date_full, raw)


@settings(max_examples=300, deadline=None)
@given(raw=DECIMAL_TEXT)
def test_decimal_fast_path_and_cache_agree(raw: str) -> None:
    for spec in _specs("dec("):
        slow = _outcome(_normalise_uncached, spec, raw)
        assert _outcome(_normalise, spec, raw) == slow
        assert _outcome(_normalise, spec, raw) == slow  # second call: from the cache


@settings(max_examples=300, deadline=None)
@given(raw=DATE_TEXT)
def test_date_fast_path_and_cache_agree(raw: str) -> None:
    for spec in _specs("date"):
        slow = _outcome(_normalise_uncached, spec, raw)
        assert _outcome(_normalise, spec, raw) == slow
        assert _outcome(_normalise, spec, raw) == slow


def test_cache_keeps_only_accepted_values() -> None:
    spec = next(iter(_specs("dec(")))
    assert _outcome(_normalise, spec, "12a")[0] == "invalid"
    assert _outcome(_normalise, spec, "12a")[0] == "invalid"
    assert _normalise(spec, " 015331.") == _normalise_uncached(spec, " 015331.")
