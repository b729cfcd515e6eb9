"""The fast re-check (`node.recheck.RecheckPlan`) of one record type of a standards release.

`release_plan(standards, schema)` builds the plan a receiver uses to accept, without the full
`validate.validate_record`, a record that is valid, already normalised and keyed as claimed
(issue 8). It reuses the full validator's own pieces, so a value or code accepted here is
accepted there:

* each field's values are learnt from `validate._normalise` (the same normaliser, with its check
  digits, date and decimal checks, and `max_len`);
* code fields are checked with `validate._code_problem` against the record's business date
  (`_business_date`, the schema's "on"/"since" mode). A combination of business date and code
  values found acceptable is remembered per plan (bounded; it starts over when full): tables
  are immutable, and the business date is a function of the (normalised) date text;
* rules run per record in schema order: an error-severity rule that fails means "not proven".
  Warning-severity rules never change the verdict, so those whose kind cannot raise on text
  (`_HARMLESS_WARNINGS`) are skipped; the others still run, in case they raise, as the full
  validator would.

A plan holds its standards' tables and schema, which are immutable; callers keep one plan per
record type per `EffectiveStandards` (`node.validation.ReleaseValidator`). This module does not
handle tombstones, produce warnings or error messages: whenever it cannot prove a record good,
the full validator decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from hierarchy_config.standards.model import CodeTable, FieldDef, RecordSchema, Rule
from hierarchy_config.standards.rules import evaluate
from hierarchy_config.standards.validate import (
    Standards,
    _business_date,
    _code_of,
    _code_problem,
    _normalise,
)
from node.recheck import FieldRecheck, RecheckPlan

__all__ = ["release_plan"]

# Rule kinds whose evaluation cannot raise on a payload of strings (they compare, slice and
# look up only): as warnings they are skipped. id_gender (int() of a digit), sum_equals (decimal
# arithmetic can overflow) and code_slice (int() of its parameters) still run.
_HARMLESS_WARNINGS = frozenset(
    {"field_lte", "id_birth_date", "id_birthplace", "one_of", "max_value", "min_value"}
)
_CODES_KNOWN = 65536


def release_plan(standards: Standards, schema: RecordSchema) -> RecheckPlan | None:
    """The plan of `schema` under `standards`, or None when a code table it names is missing
    (the full validator then explains)."""
    codes: list[tuple[FieldDef, CodeTable]] = []
    for f in schema.fields:
        if f.code_table is None:
            continue
        table = standards.table(f.code_table)
        if table is None:
            return None
        codes.append((f, table))
    fields = [FieldRecheck(f.name, f.required, partial(_normalise, f)) for f in schema.fields]
    rules = tuple(
        r for r in schema.rules if r.severity == "error" or r.kind not in _HARMLESS_WARNINGS
    )
    date_field = schema.business_date_field
    memo_names = ((date_field,) if date_field else ()) + tuple(f.name for f, _ in codes)
    return RecheckPlan(
        fields,
        schema.natural_key,
        memo_names=memo_names if codes else (),
        memo_check=partial(_codes_ok, schema, tuple(codes)) if codes else None,
        record_check=partial(_rules_ok, standards, rules) if rules else None,
    )


def _codes_ok(
    schema: RecordSchema, codes: tuple[tuple[FieldDef, CodeTable], ...], payload: Mapping[str, str]
) -> bool:
    """Every code field present is acceptable for the record's business date. Depends only on
    the values of the business-date field and the code fields."""
    try:
        on = _business_date(schema, payload)
    except Exception:  # cannot happen for a normalised date; the full validator decides
        return False
    mode, date_field = schema.date_mode, schema.business_date_field or ""
    for f, table in codes:
        value = payload.get(f.name)
        if value is not None and _code_problem(table, _code_of(f, value), on, mode, date_field):
            return False
    return True


def _rules_ok(standards: Standards, rules: tuple[Rule, ...], payload: Mapping[str, str]) -> bool:
    """No error-severity rule fails, and no rule raises."""
    for rule in rules:
        try:
            failure = evaluate(rule, payload, standards.table)
        except Exception:  # the full validator raises it (or an earlier error)
            return False
        if failure is not None and rule.severity == "error":
            return False
    return True
