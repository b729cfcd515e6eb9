"""Cross-field rules of record schemas, evaluated on a normalised payload.

Each rule kind of `model.RULE_KINDS` is one small function taking the rule, the payload (the
normalised strings of one record) and a table lookup, and returning None (passed) or
`(field, message)`. The caller decides what a failure means from the rule's severity: an error
rejects the record, a warning is reported with it. A rule whose fields are absent passes (the
`required` flag is the place to demand presence). Messages never echo personal data.

This module does not normalise values or check code fields (see `validate`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation

from hierarchy_config.standards.model import CodeTable, Rule

__all__ = ["Failure", "TableLookup", "evaluate"]

Failure = tuple[str, str] | None
TableLookup = Callable[[str], CodeTable | None]
_GENDER_WORDS = {"1": "male (1)", "2": "female (2)"}


def _number(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _id_gender(rule: Rule, payload: Mapping[str, str], _: TableLookup) -> Failure:
    target = rule.param_str("gender_field")
    gender, number = payload.get(target), payload.get(rule.param_str("id_field"))
    if gender not in ("1", "2") or number is None or len(number) != 18:
        return None
    implied = "1" if int(number[16]) % 2 else "2"
    if gender == implied:
        return None
    return (
        target,
        f"is {_GENDER_WORDS[gender]} but digit 17 of {rule.param_str('id_field')} means "
        f"{_GENDER_WORDS[implied]}; check both",
    )


def _id_birth_date(rule: Rule, payload: Mapping[str, str], _: TableLookup) -> Failure:
    target = rule.param_str("date_field")
    birth, number = payload.get(target), payload.get(rule.param_str("id_field"))
    if birth is None or number is None or birth.replace("-", "") == number[6:14]:
        return None
    return target, f"must equal the birth date in {rule.param_str('id_field')} (digits 7-14)"


def _id_birthplace(rule: Rule, payload: Mapping[str, str], tables: TableLookup) -> Failure:
    target = rule.param_str("id_field")
    number, table = payload.get(target), tables(rule.param_str("table"))
    if number is None or table is None or table.versions(number[:6]):
        return None
    return (
        target,
        "digits 1-6 (the birthplace) are not a known region code (GB/T 2260); "
        "the number may be mistyped or newer than the code table",
    )


def _sum_equals(rule: Rule, payload: Mapping[str, str], _: TableLookup) -> Failure:
    """total = sum of parts; a part written `-name` is subtracted. Absent parts count as 0."""
    target = rule.param_str("total")
    total = payload.get(target)
    actual = _number(total) if total is not None else None
    if actual is None:
        return None
    expected = Decimal(0)
    for part in rule.param_list("parts"):
        name = part.removeprefix("-")
        if name not in payload:
            continue
        value = _number(payload[name])
        if value is None:
            return None
        expected += -value if part.startswith("-") else value
    if actual == expected:
        return None
    formula = " ".join(
        ("- " + p[1:]) if p.startswith("-") else ("+ " + p) for p in rule.param_list("parts")
    )
    return target, "must equal " + formula.removeprefix("+ ")


def _bound(rule: Rule, payload: Mapping[str, str], name: str) -> Failure:
    target = rule.param_str("field")
    value, limit = payload.get(target), _number(rule.param_str(name))
    number = _number(value) if value is not None else None
    if number is None or limit is None:
        return None
    if (name == "max" and number > limit) or (name == "min" and number < limit):
        return target, f"must be at {'most' if name == 'max' else 'least'} {limit}"
    return None


def _max_value(rule: Rule, payload: Mapping[str, str], _: TableLookup) -> Failure:
    return _bound(rule, payload, "max")


def _min_value(rule: Rule, payload: Mapping[str, str], _: TableLookup) -> Failure:
    return _bound(rule, payload, "min")


def _field_lte(rule: Rule, payload: Mapping[str, str], _: TableLookup) -> Failure:
    left, right = rule.param_str("left"), rule.param_str("right")
    a, b = payload.get(left), payload.get(right)
    if a is None or b is None:
        return None
    x, y = _number(a), _number(b)
    ok = x <= y if x is not None and y is not None else a <= b
    return None if ok else (left, f"must not be later or greater than {right}")


def _one_of(rule: Rule, payload: Mapping[str, str], _: TableLookup) -> Failure:
    target = rule.param_str("field")
    value, allowed = payload.get(target), rule.param_list("values")
    if value is None or value in allowed:
        return None
    return target, "must be " + " or ".join(allowed) + " in this record type"


def _code_slice(rule: Rule, payload: Mapping[str, str], tables: TableLookup) -> Failure:
    target = rule.param_str("field")
    value, table = payload.get(target), tables(rule.param_str("table"))
    start, end = int(rule.param_str("start")), int(rule.param_str("end"))
    if value is None or table is None or table.versions(value[start:end]):
        return None
    return target, f"characters {start + 1}-{end} should be a code of {table.id}"


_KINDS: Mapping[str, Callable[[Rule, Mapping[str, str], TableLookup], Failure]] = {
    "id_gender": _id_gender,
    "id_birth_date": _id_birth_date,
    "id_birthplace": _id_birthplace,
    "sum_equals": _sum_equals,
    "max_value": _max_value,
    "min_value": _min_value,
    "field_lte": _field_lte,
    "one_of": _one_of,
    "code_slice": _code_slice,
}


# The field a rule blames when it cannot be computed at all, per kind.
_BLAMED = {
    "id_gender": "gender_field",
    "id_birth_date": "date_field",
    "id_birthplace": "id_field",
    "sum_equals": "total",
    "max_value": "field",
    "min_value": "field",
    "field_lte": "left",
    "one_of": "field",
    "code_slice": "field",
}


def evaluate(rule: Rule, payload: Mapping[str, str], tables: TableLookup) -> Failure:
    """None if `payload` passes `rule`, else (field to blame, message).

    A rule that cannot be computed on this record (a digit expected where the value has a
    letter, because the release points the rule at a field of another type; a sum beyond the
    decimal range; a parameter that is not a number) fails like any other rule, by its severity,
    instead of failing the validator: a crafted record must get a precise refusal, not an
    internal error."""
    try:
        return _KINDS[rule.kind](rule, payload, tables)
    except (ArithmeticError, ValueError, IndexError, TypeError, KeyError) as exc:
        try:
            field = rule.param_str(_BLAMED[rule.kind])
        except KeyError:
            field = "type"
        return field, f"cannot be checked by rule {rule.id} ({type(exc).__name__})"
