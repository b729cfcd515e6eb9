"""A receiver's fast re-check of records that arrive valid and already normalised (issue 8).

A receiver re-validates every record of every batch (ADR 0005) and wants to know one thing: is
this payload a valid record, already in normalised form, whose natural key is the one the change
claims? `RecheckPlan.accepts(key, payload)` answers *yes* for such a record without running the
full validator, when it can prove it:

* every field name is a field of the schema, and every required field is present;
* every value is a string already known to be accepted by its field's normaliser *and* to come
  out unchanged (`normalise(v) == v`). Such values are learnt from the very normaliser the full
  validator calls, per field, in bounded sets that start over when one is full; an unseen value
  is put through that normaliser directly (so a person_id's check digit is checked for every new
  id);
* the natural key joined from the payload equals `key`;
* the record-level check the plan was built with (code tables and rules of a standards release,
  the cross-field checks of the built-in schemas) passes.

`RecheckPlan.accepts_all(keys, payloads)` makes the same proof for the records of one type of a
batch at once, field by field over all of them, so that its loops run in C (`set(map(...))`):
each field's distinct values are compared with the known ones and only the unseen are put
through the normaliser; it says *yes* only if every record is proven.

It never refuses anything: `False` means "not proven", and the caller then runs the full
validator, which produces today's exact error codes and messages. Anything unexpected while
proving (an exception from a normaliser or a check) also gives `False`. A payload that passes is
exactly the record the full validator would return, so both paths give the same verdict.

This module does not know tombstones (callers send them down the full path), produces no
warnings, normalises nothing and reads no release: `hierarchy_config.standards.recheck` and
`node.validation` build the plans. The sets and memos are plain dicts and sets mutated under the
GIL; racing threads at worst learn a value twice or start a set over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import filterfalse
from operator import itemgetter, methodcaller
from typing import cast

__all__ = ["FieldRecheck", "RecheckPlan", "RecordCheck"]

# Values kept per field. When one field's set is full the plan starts over, so recent values (a
# person's records sit together in a batch) keep hitting while memory stays bounded.
KNOWN_PER_FIELD = 4096
_ONLY_STR = frozenset({str})
# What `accepts_all` reads for an optional field a payload does not have.
_ABSENT = object()
# Combinations kept per plan for the memoised record-level check; starts over when full.
MEMO_SIZE = 16384

RecordCheck = Callable[[Mapping[str, str]], bool]
"""True when a payload whose values are all accepted and canonical passes a record-level check;
False when not proven. Never raises."""


@dataclass(frozen=True, slots=True)
class FieldRecheck:
    """One field: its name, whether it is required, and the full validator's normaliser for it
    (None for an absent value, the normalised string, or an exception for a refused one)."""

    name: str
    required: bool
    normalise: Callable[[object], str | None]
    # Optional proof that a value is accepted as is (`node.records.canonical_check`): truthy
    # only when `normalise(v) == v`; tried before the normaliser.
    canonical: Callable[[str], object] | None = None


def _tuple_getter(names: Sequence[str]) -> Callable[[Mapping[str, str]], tuple[str, ...]]:
    """The values of `names` as a tuple, in C; KeyError when one is absent."""
    if len(names) >= 2:
        return itemgetter(*names)
    name = names[0]
    return lambda payload: (payload[name],)


class RecheckPlan:
    """The fast re-check of one record type; built once per (immutable) schema and reused.

    Accepted values are kept as (field name, value) pairs in one set, so the common case (every
    item of a payload known) is one subset test in C; `_known` counts them per field.

    `memo_names`/`memo_check`: a record-level check whose verdict depends only on the values of
    those fields (absent ones as None) is run once per combination and remembered when it
    passes. `record_check` runs on every record that got that far.
    """

    __slots__ = (
        "_canonical",
        "_check",
        "_columns",
        "_key_columns",
        "_key_getter",
        "_key_names",
        "_known",
        "_memo",
        "_memo_check",
        "_memo_columns",
        "_memo_getter",
        "_memo_names",
        "_names",
        "_normalisers",
        "_pairs",
        "_required",
    )

    def __init__(
        self,
        fields: Sequence[FieldRecheck],
        natural_key: Sequence[str],
        *,
        memo_names: Sequence[str] = (),
        memo_check: RecordCheck | None = None,
        record_check: RecordCheck | None = None,
    ) -> None:
        self._required = frozenset(f.name for f in fields if f.required)
        self._key_names = tuple(natural_key)
        self._key_getter = _tuple_getter(self._key_names)
        # Per key field, what reads it for `accepts_all`: "" when an optional one is absent.
        self._key_columns = tuple(
            itemgetter(name) if name in self._required else methodcaller("get", name, "")
            for name in self._key_names
        )
        self._normalisers = {f.name: f.normalise for f in fields}
        self._names = frozenset(self._normalisers)
        # Per field, what reads its value from a payload, in C: a required one must be there
        # (KeyError otherwise), an optional one reads as _ABSENT when it is not.
        self._columns = tuple(
            (f.name, itemgetter(f.name) if f.required else methodcaller("get", f.name, _ABSENT))
            for f in fields
        )
        self._canonical = {f.name: f.canonical for f in fields if f.canonical is not None}
        self._known: dict[str, set[str]] = {f.name: set() for f in fields}
        self._pairs: set[tuple[str, str]] = set()
        self._memo_names = tuple(memo_names) if memo_check is not None else ()
        self._memo_getter = _tuple_getter(self._memo_names) if self._memo_names else None
        # ... and for `accepts_all`, one reader per memo field (absent as None, as above)
        self._memo_columns = tuple(methodcaller("get", name) for name in self._memo_names)
        self._memo_check = memo_check
        self._memo: set[tuple[str | None, ...]] = set()
        self._check = record_check

    def accepts(self, key: str, payload: Mapping[str, str]) -> bool:
        """True only if the full validator would accept `payload` unchanged with key `key`."""
        try:
            if not payload.items() <= self._pairs and not self._learn_all(payload):
                return False
        except TypeError:  # an unhashable value: not text, so not proven
            return False
        if not payload.keys() >= self._required:
            return False
        try:
            joined = "|".join(self._key_getter(payload))
        except KeyError:  # a key field is absent: it counts as ""
            joined = "|".join([payload.get(name, "") for name in self._key_names])
        if joined != key:
            return False
        if self._memo_getter is not None:
            try:
                seen: tuple[str | None, ...] = self._memo_getter(payload)
            except KeyError:
                seen = tuple([payload.get(name) for name in self._memo_names])
            if seen not in self._memo:
                assert self._memo_check is not None
                if not self._memo_check(payload):
                    return False
                if len(self._memo) >= MEMO_SIZE:
                    self._memo.clear()
                self._memo.add(seen)
        return self._check is None or self._check(payload)

    def accepts_all(self, keys: Sequence[str], payloads: Sequence[Mapping[str, str]]) -> bool:
        """True only if `accepts(key, payload)` would be True for every pair of `keys` and
        `payloads` (the records of one type in one batch): the same proof, made column by
        column, so its loops over the records run in C. False proves nothing: the caller then
        asks `accepts` record by record, which finds the ones that are not proven."""
        try:
            if not self._names.issuperset(set().union(*payloads)):  # a field the schema lacks
                return False
            for name, column in self._columns:
                values = set(map(column, payloads))  # KeyError: a required field is absent
                values.discard(_ABSENT)
                if not values <= self._known[name] and not self._learn_column(name, values):
                    return False
            # The natural key joined from each payload (an absent field counts as "").
            parts = [map(getter, payloads) for getter in self._key_columns]
            if list(map("|".join, zip(*parts, strict=True))) != list(keys):
                return False
            if self._memo_names:
                assert self._memo_check is not None
                # Each combination of the memo fields' values (absent ones as None, as in
                # `accepts`) with one payload that has it: the check depends on nothing else.
                seen_all = zip(*[map(g, payloads) for g in self._memo_columns], strict=True)
                combos = dict(zip(seen_all, payloads, strict=True))
                for seen in combos.keys() - self._memo:
                    if not self._memo_check(combos[seen]):
                        return False
                    if len(self._memo) >= MEMO_SIZE:
                        self._memo.clear()
                    self._memo.add(seen)
        except (KeyError, TypeError):  # a required field absent, or a value that is not text
            return False
        return self._check is None or all(map(self._check, payloads))

    def _learn_column(self, name: str, values: set[object]) -> bool:
        """`_learn` for the unseen ones of `values` (one field of many records) at once; False if
        one is not proven accepted as is (then nothing of them is kept)."""
        known = self._known[name]
        unseen = values - known
        if not _ONLY_STR.issuperset(map(type, unseen)):
            return False
        new = cast(set[str], unseen)
        if not self._proven(name, new):
            return False
        if len(known) + len(new) > KNOWN_PER_FIELD:
            self._start_over()
            if len(new) > KNOWN_PER_FIELD:
                return True  # proven, but more than a field keeps
        # Only `known`: `accepts` learns its pairs again should it meet these values.
        known |= new
        return True

    def _learn_all(self, payload: Mapping[str, str]) -> bool:
        """Learn the unseen items of `payload`; False if one is not proven accepted as is."""
        normalisers = self._normalisers
        for name, value in payload.items():
            if name not in normalisers:  # not a field of the schema
                return False
            if (name, value) not in self._pairs and not self._learn(name, value):
                return False
        return True

    def _learn(self, name: str, value: object) -> bool:
        """Put an unseen value through its field's normaliser; keep it if it comes out as is."""
        if type(value) is not str or not self._proven(name, (value,)):
            return False
        known = self._known[name]
        if len(known) >= KNOWN_PER_FIELD:
            self._start_over()
        known.add(value)
        self._pairs.add((name, value))
        return True

    def _proven(self, name: str, values: Iterable[str]) -> bool:
        """Whether every one of `values` is accepted by field `name` exactly as it is: by its
        canonical proof when that says so, else by its normaliser."""
        canonical = self._canonical.get(name)
        unproven = values if canonical is None else filterfalse(canonical, values)
        normalise = self._normalisers[name]
        try:
            for value in unproven:
                if normalise(value) != value:  # None (blank) or not in normalised form
                    return False
        except Exception:  # refused (or worse): the full validator says how
            return False
        return True

    def _start_over(self) -> None:
        """Forget every learnt value of every field. Dropping only a full field's values meant
        rebuilding the shared pair set (~13 % of re-checking in a 100,000-record hop, where
        ids, amounts and dates fill their sets again and again); re-learning the few values of
        the other fields costs a cached normaliser call each."""
        for values in self._known.values():
            values.clear()
        self._pairs = set()
