"""check_change's fast path (node.recheck) gives exactly the full validator's verdicts.

Many valid records and many mutated ones (bad and retired codes, check digits, values not in
normalised form, missing, empty and unknown fields, key mismatches, rule violations, tombstones)
go through `check_change` twice: with the validator as it is (fast path first) and with a wrapper
that only offers `validate` (the full path, as before the fast path existed). Accept/refuse, the
code and the message must be identical. Fixed seeds, no sleeps.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hierarchy_config.standards import (
    CodeEntry,
    EffectiveStandards,
    Extension,
    Issue,
    Release,
    default_release,
)
from hierarchy_config.standards import recheck as release_recheck
from node import datagen, recheck, validation
from node.records import RECORD_TYPES, ValidRecord, canonical_check
from node.records import _normalise_uncached as normalise_builtin
from node.records import validate_record as validate_builtin
from node.validation import BuiltinValidator, RecordValidator, ReleaseValidator
from sync.errors import BatchRejected
from sync.verify import check_change, unproven
from sync.wire import Change

Payload = dict[str, Any]
Mutation = Callable[[random.Random, str, Payload], tuple[str, Payload] | None]


class FullOnly:
    """The validator without its fast path: what check_change did before it."""

    def __init__(self, inner: RecordValidator) -> None:
        self.inner = inner
        self.standards_id = inner.standards_id

    def validate(self, obj: Mapping[str, Any]) -> tuple[ValidRecord, tuple[Issue, ...]]:
        return self.inner.validate(obj)

    def natural_key(self, record_type: str) -> tuple[str, ...] | None:
        return self.inner.natural_key(record_type)


def verdict(change: Change, rules: RecordValidator) -> tuple[str, str]:
    try:
        check_change(change, rules)
    except BatchRejected as exc:
        return exc.code.value, exc.message
    except Exception as exc:  # the same crash on both paths counts as the same verdict
        return type(exc).__name__, str(exc)
    return "ok", ""


def key_of(record_type: str, payload: Mapping[str, Any]) -> str:
    schema = RECORD_TYPES.get(record_type)
    names = schema.natural_key if schema else ()
    return "|".join(str(payload.get(n, "")) for n in names)


# --- mutations: each returns (what it did, new payload) or None when it does not apply ---------


def _pick(rng: random.Random, payload: Payload, names: tuple[str, ...]) -> str | None:
    present = [n for n in names if n in payload]
    return rng.choice(present) if present else None


_CODE_FIELDS = (
    "insurance_type",
    "contribution_type",
    "agency_region",
    "status",
    "person_category",
    "gender",
    "education",
    "ethnicity",
    "cert_type",
    "unit_type",
    "reg_type",
    "industry",
    "region",
    "hukou_region",
)
_DATES = ("birth_date", "paid_date", "enroll_date", "first_enroll_date", "status_date", "reg_date")
_DECIMALS = ("base", "unit_amount", "personal_amount", "to_account_amount", "contribution_base")


def bad_code(rng: random.Random, _t: str, p: Payload) -> tuple[str, Payload] | None:
    name = _pick(rng, p, _CODE_FIELDS)
    if name is None:
        return None
    wrong = {"industry": "C99", "region": "339999"}.get(name, rng.choice(["99", "999", "X", "0"]))
    return f"bad code {name}", {**p, name: wrong}


def retired_region(rng: random.Random, t: str, p: Payload) -> tuple[str, Payload] | None:
    # 330103 ended on 2021-12-31 (use 330105); 330114 starts on 2021-01-01.
    if t == "contribution":
        month, region = rng.choice(
            [("202406", "330103"), ("202101", "330103"), ("201506", "330114"), ("202106", "330114")]
        )
        return f"region {region} in {month}", {**p, "fee_month": month, "agency_region": region}
    if t == "insurance_enrollment":
        day, region = rng.choice([("2023-01-01", "330103"), ("2020-05-01", "330103")])
        return f"region {region} since {day}", {**p, "enroll_date": day, "agency_region": region}
    if t == "employer":
        return "employer region 330103", {**p, "region": "330103"}
    return None


def bad_check_digit(_rng: random.Random, _t: str, p: Payload) -> tuple[str, Payload] | None:
    name = "person_id" if "person_id" in p else "uscc" if "uscc" in p else None
    if name is None:
        return None
    value = p[name]
    last = "0" if value[-1] != "0" else "1"
    return f"check digit {name}", {**p, name: value[:-1] + last}


def lowercase(rng: random.Random, _t: str, p: Payload) -> tuple[str, Payload] | None:
    options = [n for n in ("person_id", "uscc", "industry", "nationality") if n in p]
    options = [n for n in options if p[n] != p[n].lower()]
    if not options:
        return None
    name = rng.choice(options)
    return f"lowercase {name}", {**p, name: p[name].lower()}


def whitespace(rng: random.Random, _t: str, p: Payload) -> tuple[str, Payload] | None:
    name = rng.choice(sorted(p))
    value = rng.choice([" " + p[name], p[name] + " ", p[name] + "\n", "\u3000" + p[name]])
    return f"whitespace {name}", {**p, name: value}


def date_form(rng: random.Random, _t: str, p: Payload) -> tuple[str, Payload] | None:
    name = _pick(rng, p, _DATES)
    if name is not None:
        y, m, d = p[name].split("-")
        value = rng.choice([f"{y}-{int(m)}-{int(d)}", f"{y}{m}{d}", f"{y}/{m}/{d}", f"{y}-02-30"])
        return f"date {name}", {**p, name: value}
    if "fee_month" in p:
        month = p["fee_month"]
        value = rng.choice([f"{month[:4]}-{month[4:]}", f"{month[:4]}13", month[:4] + "1"])
        return "ym fee_month", {**p, "fee_month": value}
    return None


def decimal_form(rng: random.Random, _t: str, p: Payload) -> tuple[str, Payload] | None:
    name = _pick(rng, p, _DECIMALS)
    if name is None:
        return None
    v = p[name]
    value = rng.choice([v[:-1], "0" + v, "+" + v, v + "0", v.split(".")[0], "-0.00", "1e3", "NaN"])
    return f"decimal {name}", {**p, name: value}


def int_form(rng: random.Random, _t: str, p: Payload) -> tuple[str, Payload] | None:
    if "injury_risk_class" not in p:
        return None
    value = rng.choice(["0" + p["injury_risk_class"], "+" + p["injury_risk_class"], "9", "1.0"])
    return "int injury_risk_class", {**p, "injury_risk_class": value}


def missing_field(rng: random.Random, _t: str, p: Payload) -> tuple[str, Payload] | None:
    name = rng.choice(sorted(p))
    return f"without {name}", {k: v for k, v in p.items() if k != name}


def empty_value(rng: random.Random, _t: str, p: Payload) -> tuple[str, Payload] | None:
    name = rng.choice(sorted(p))
    return f"empty {name}", {**p, name: rng.choice(["", "  "])}


def unknown_field(rng: random.Random, t: str, p: Payload) -> tuple[str, Payload] | None:
    extra = rng.choice(
        [
            ("nme", "x"),
            ("type", t),
            ("type", "person" if t != "person" else "employer"),
            ("deleted", "1"),
            ("deleted", "0"),
            ("deleted", "maybe"),
            ("person_id ", "x"),
        ]
    )
    return f"extra {extra[0]}={extra[1]}", {**p, extra[0]: extra[1]}


def rule_break(rng: random.Random, t: str, p: Payload) -> tuple[str, Payload] | None:
    if t != "person":
        return None
    if rng.random() < 0.5 and p.get("gender") in ("1", "2"):
        return "gender parity", {**p, "gender": "2" if p["gender"] == "1" else "1"}
    if "birth_date" in p:
        return "birth date", {**p, "birth_date": "2000-01-01"}
    return None


def too_long(_rng: random.Random, _t: str, p: Payload) -> tuple[str, Payload] | None:
    if "name" not in p:
        return None
    return "long name", {**p, "name": "长" * 120}


def not_text(rng: random.Random, _t: str, p: Payload) -> tuple[str, Payload] | None:
    name = rng.choice(sorted(p))
    value: Any = rng.choice([7, None, ["x"], True])
    return f"non-text {name}", {**p, name: value}


MUTATIONS: tuple[Mutation, ...] = (
    bad_code,
    retired_region,
    bad_check_digit,
    lowercase,
    whitespace,
    date_form,
    decimal_form,
    int_form,
    missing_field,
    empty_value,
    unknown_field,
    rule_break,
    too_long,
    not_text,
)


def corpus(seed: int, n: int = 1500) -> Iterator[tuple[str, Change]]:
    """Valid changes and, for about half of them, one or two mutants of each."""
    rng = random.Random(seed)
    objs = datagen.generate_records("330100", n, seed=seed)
    objs += datagen.generate_records("110100", n // 5, seed=seed + 1)
    tombstones = datagen.generate_tombstones(objs, 40, seed=seed)
    seq = 0

    def change(rtype: str, key: str, deleted: bool, payload: Payload) -> Change:
        nonlocal seq
        seq += 1
        return Change(seq, rtype, key, 1, deleted, payload, "std-1")

    for obj in objs:
        rec = validate_builtin(obj)
        rtype, payload = rec.record_type, dict(rec.payload)
        yield "valid", change(rtype, rec.key, False, payload)
        for _ in range(rng.choice([0, 0, 1, 2])):
            mutation = rng.choice(MUTATIONS)
            made = mutation(rng, rtype, payload)
            if made is None:
                continue
            what, mutated = made
            yield what, change(rtype, key_of(rtype, mutated), False, mutated)
        roll = rng.random()
        if roll < 0.03:
            yield "key mismatch", change(rtype, rec.key + "x", False, payload)
        elif roll < 0.05:
            yield "key of another type", change(rtype, rec.key.replace("|", ","), False, payload)
        elif roll < 0.07:
            yield "unknown type", change("nobody", rec.key, False, payload)
        elif roll < 0.09:
            yield "another type", change(rng.choice(sorted(RECORD_TYPES)), rec.key, False, payload)
        elif roll < 0.11:
            yield "full tombstone", change(rtype, rec.key, True, payload)
    for obj in tombstones:
        rec = validate_builtin(obj)
        yield "tombstone", change(rec.record_type, rec.key, True, dict(rec.payload))
        bad = {**rec.payload, next(iter(rec.payload)): "bad value"}
        yield "bad tombstone", change(rec.record_type, key_of(rec.record_type, bad), True, bad)


def assert_same_verdicts(
    rules: RecordValidator, changes: list[tuple[str, Change]], *, every_kind: bool = True
) -> None:
    full = FullOnly(rules)
    refused: dict[str, int] = {}
    for what, change in changes:
        if change.seq % 2:  # either path first: neither's caches may sway the other
            fast = verdict(change, rules)
            expected = verdict(change, full)
        else:
            expected = verdict(change, full)
            fast = verdict(change, rules)
        assert fast == expected, (what, change)
        if expected[0] != "ok":
            refused[what.split(" ")[0]] = refused.get(what.split(" ")[0], 0) + 1
    if not every_kind:
        return
    # The corpus is not trivially valid: every kind of mutation refused something.
    kinds = ["bad", "check", "lowercase", "whitespace", "date", "decimal", "int", "without"]
    kinds += ["empty", "extra", "gender", "birth", "long", "non-text", "key", "unknown", "full"]
    if not isinstance(rules, BuiltinValidator):  # the built-in schemas know no dates of codes
        kinds.append("region")
    for kind in kinds:
        assert refused.get(kind, 0) > 0, kind


@pytest.fixture(scope="module")
def release() -> Release:
    return default_release()


@pytest.fixture(autouse=True)
def fresh_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plans are shared per process; each test starts with none, so nothing learnt yet."""
    monkeypatch.setattr(release_recheck, "_PLANS", {})
    monkeypatch.setattr(validation, "_BUILTIN_PLANS", {})


@pytest.fixture
def release_validator(release: Release) -> ReleaseValidator:
    return ReleaseValidator(EffectiveStandards(release))


def test_fast_path_gives_the_full_verdicts_against_a_release(
    release_validator: ReleaseValidator,
) -> None:
    changes = list(corpus(seed=8))
    assert_same_verdicts(release_validator, changes)
    # once more, everything learnt, in another order
    random.Random(9).shuffle(changes)
    assert_same_verdicts(release_validator, changes)


def test_fast_path_gives_the_full_verdicts_of_the_builtin_schemas() -> None:
    changes = list(corpus(seed=18))
    assert_same_verdicts(BuiltinValidator(), changes)
    random.Random(19).shuffle(changes)
    assert_same_verdicts(BuiltinValidator(), changes)


def test_the_same_verdicts_while_the_known_values_start_over(
    release_validator: ReleaseValidator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recheck, "KNOWN_PER_FIELD", 8)
    monkeypatch.setattr(recheck, "MEMO_SIZE", 4)
    changes = list(corpus(seed=28, n=600))
    assert_same_verdicts(release_validator, changes, every_kind=False)
    plans = [plan for plan in release_validator._plans.values() if plan is not None]
    assert plans
    assert all(len(known) <= 8 for plan in plans for known in plan._known.values())
    assert all(len(plan._pairs) <= 8 * len(plan._known) for plan in plans)


def test_valid_records_take_the_fast_path(release_validator: ReleaseValidator) -> None:
    for obj in datagen.generate_records("330100", 3000, seed=3):
        rec = validate_builtin(obj)
        assert release_validator.accepts_normalised(
            rec.record_type, rec.key, rec.deleted, rec.payload
        ), rec
        assert not release_validator.accepts_normalised(
            rec.record_type, rec.key + "x", rec.deleted, rec.payload
        )
        assert not release_validator.accepts_normalised(rec.record_type, rec.key, True, rec.payload)


def test_a_code_retired_for_this_date_is_refused_after_being_learnt_valid(
    release_validator: ReleaseValidator,
) -> None:
    payload = {
        "person_id": "11010519491231002X",
        "insurance_type": "110",
        "fee_month": "202101",
        "contribution_type": "10",
        "unit_amount": "100.00",
        "personal_amount": "50.00",
        "agency_region": "330103",
    }
    ok = Change(1, "contribution", key_of("contribution", payload), 1, False, payload, "std-1")
    later = {**payload, "fee_month": "202406"}
    bad = Change(2, "contribution", key_of("contribution", later), 1, False, later, "std-1")
    assert verdict(ok, release_validator) == ("ok", "")
    code, message = verdict(bad, release_validator)
    assert code == "invalid_record"
    assert "retired after 2021-12-31" in message and "use 330105" in message


def test_local_codes_count_only_under_their_extension(release: Release) -> None:
    local = CodeEntry("X3301", "本地人员类别", valid_from=dt.date(2020, 1, 1))
    extension = Extension("330000", 1, release.version, {"CT_PERSON_CATEGORY": (local,)}, "")
    plain = ReleaseValidator(EffectiveStandards(release))
    extended = ReleaseValidator(EffectiveStandards(release, (extension,)))
    changes: list[tuple[str, Change]] = []
    for n, obj in enumerate(datagen.generate_records("330100", 400, seed=5)):
        rec = validate_builtin(obj)
        if rec.record_type == "insurance_enrollment":
            payload = {**rec.payload, "person_category": "X3301"}
            changes.append(
                ("local", Change(n + 1, rec.record_type, rec.key, 1, False, payload, ""))
            )
    assert changes
    for rules, expected in ((extended, "ok"), (plain, "invalid_record")):
        for what, change in changes:
            assert verdict(change, rules) == verdict(change, FullOnly(rules)), what
            assert verdict(change, rules)[0] == expected
    # what does not depend on the extended table is learnt once for both
    plans = (plain._plans, extended._plans)
    for rules in (plain, extended):
        rules.accepts_normalised("contribution", "k", False, {})
    assert plans[0]["contribution"] is plans[1]["contribution"]
    assert plans[0]["insurance_enrollment"] is not plans[1]["insurance_enrollment"]


# -- the batch proof (sync.verify.unproven, RecheckPlan.accepts_all): a batch's first refused
#    change, code and message are those of checking every change in full ----------------------


def batch_verdict(changes: list[Change], rules: RecordValidator) -> tuple[str, str]:
    """What verify_batch decides about these changes' records: the first refusal, if any."""
    for change in unproven(changes, rules):
        found = verdict(change, rules)
        if found[0] != "ok":
            return found
    return "ok", ""


def full_batch_verdict(changes: list[Change], rules: RecordValidator) -> tuple[str, str]:
    full = FullOnly(rules)
    for change in changes:
        found = verdict(change, full)
        if found[0] != "ok":
            return found
    return "ok", ""


def assert_same_batch_verdicts(
    rules: RecordValidator, changes: list[Change], size: int
) -> tuple[int, int]:
    """Both verdicts agree for every batch of `size` changes; (batches refused, batches whose
    every change was proven at once)."""
    refused = at_once = 0
    for i in range(0, len(changes), size):
        batch = changes[i : i + size]
        expected = full_batch_verdict(batch, rules)
        assert batch_verdict(batch, rules) == expected, batch
        refused += expected[0] != "ok"
        at_once += not unproven(batch, rules)
    return refused, at_once


@pytest.mark.parametrize("size", [1, 7, 40, 400])
def test_a_batch_proof_gives_the_full_verdicts_against_a_release(
    release_validator: ReleaseValidator, size: int
) -> None:
    changes = [c for _, c in corpus(seed=48)]
    refused, _ = assert_same_batch_verdicts(release_validator, changes, size)
    assert refused > 0  # the corpus is not trivially valid
    random.Random(49).shuffle(changes)
    assert_same_batch_verdicts(release_validator, changes, size)


@pytest.mark.parametrize("size", [7, 400])
def test_a_batch_proof_gives_the_full_verdicts_of_the_builtin_schemas(size: int) -> None:
    changes = [c for _, c in corpus(seed=58)]
    refused, _ = assert_same_batch_verdicts(BuiltinValidator(), changes, size)
    assert refused > 0


def test_a_batch_proof_while_the_known_values_start_over(
    release_validator: ReleaseValidator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches with more new values than a field keeps are still judged exactly."""
    monkeypatch.setattr(recheck, "KNOWN_PER_FIELD", 8)
    monkeypatch.setattr(recheck, "MEMO_SIZE", 4)
    changes = [c for _, c in corpus(seed=68, n=600)]
    assert_same_batch_verdicts(release_validator, changes, 5)
    assert_same_batch_verdicts(release_validator, changes, 60)
    plans = [plan for plan in release_validator._plans.values() if plan is not None]
    assert all(len(known) <= 8 for plan in plans for known in plan._known.values())


@pytest.mark.parametrize("rules", ["release", "builtin"])
def test_valid_batches_are_proven_at_once(rules: str, release_validator: ReleaseValidator) -> None:
    validator: RecordValidator = release_validator if rules == "release" else BuiltinValidator()
    valid = [
        Change(n + 1, rec.record_type, rec.key, 1, False, dict(rec.payload), "std-1")
        for n, rec in enumerate(
            validate_builtin(o) for o in datagen.generate_records("330100", 3000, seed=7)
        )
    ]
    for i in range(0, len(valid), 500):
        assert unproven(valid[i : i + 500], validator) == []
    # one bad change sends its record type, and only it, to be checked change by change
    at = next(i for i, c in enumerate(valid) if c.record_type == "contribution")
    bad = valid[at]
    wrong = "0" if bad.payload["person_id"][-1] != "0" else "1"
    changed = {**bad.payload, "person_id": bad.payload["person_id"][:-1] + wrong}
    batch = [*valid[:at], bad._replace(payload=changed), *valid[at + 1 : at + 500]]
    assert len({c.record_type for c in batch}) > 1
    rest = unproven(batch, validator)
    assert rest == [c for c in batch if c.record_type == bad.record_type]
    assert batch_verdict(batch, validator)[0] == "invalid_record"


# -- the canonical proofs (node.records.canonical_check) never accept what the normaliser would
#    change or refuse ----------------------------------------------------------------------------

_decimal_like = st.from_regex(r"[ +-]?0*[0-9]{0,16}(\.[0-9]{0,6})?[ ]?", fullmatch=True)
_date_like = st.one_of(
    st.dates(dt.date(1800, 1, 1), dt.date(2200, 12, 31)).map(dt.date.isoformat),
    st.from_regex(r"[ ]?[0-9٣]{4}-?[0-9]{2}-?[0-9]{2}[ ]?", fullmatch=True),
)


def _with_check_digit(body: str) -> str:
    from stdnum.cn import ric

    return body + ric.calc_check_digit(body + "0")


_id_like = st.one_of(
    st.from_regex(r"[0-9]{6}(18|19|20|21)[0-9]{2}[0-1][0-9][0-3][0-9][0-9]{3}", fullmatch=True).map(
        _with_check_digit
    ),
    st.from_regex(r"[ ]?[0-9٣]{17}[0-9Xx][ ]?", fullmatch=True),
)
_any_text = st.one_of(
    st.text(max_size=40),
    _decimal_like,
    _date_like,
    _id_like,
    st.sampled_from(["", " ", "0", "0.00"]),
)


def _release_specs() -> list[Any]:
    """The field specs a standards release's plans prove with (`standards.recheck._build`)."""
    from hierarchy_config.standards.validate import _OWN_TYPES, _spec_of

    release = default_release()
    return [
        _spec_of(f)
        for schema in release.schemas.values()
        for f in schema.fields
        if f.type not in _OWN_TYPES
    ]


_SPECS = [s for schema in RECORD_TYPES.values() for s in schema.fields] + _release_specs()


@settings(max_examples=400)
@given(st.data())
def test_canonical_proofs_are_sound(data: st.DataObject) -> None:
    spec = data.draw(st.sampled_from(_SPECS))
    check = canonical_check(spec)
    if check is None:
        return
    value = data.draw(_any_text)
    if check(value):
        assert normalise_builtin(spec, value) == value


def test_dates_and_person_ids_have_proofs_that_prove() -> None:
    """The proofs are not vacuous: valid canonical values pass, others do not."""
    kinds = {s.kind: s for s in _SPECS if s.codes is None}
    date, person_id = canonical_check(kinds["date"]), canonical_check(kinds["person_id"])
    assert date is not None and person_id is not None
    assert date("2024-02-29") and date("1850-01-01") and date("2099-12-31")
    assert not date("2023-02-29") and not date("1849-12-31") and not date("20240229")
    assert not date(" 2024-02-2") and not date("2024-02-29 ")
    assert person_id("11010519491231002X") and person_id(_with_check_digit("33010219900101123"))
    assert not person_id("11010519491231002x")  # normalised to upper case first
    assert not person_id("110105194912310020")  # check digit
    assert not person_id(_with_check_digit("11010519491331002"))  # month 13
    assert not person_id("١١٠١٠٥١٩٤٩١٢٣١٠٠٢X")  # not ASCII digits: the normaliser decides
