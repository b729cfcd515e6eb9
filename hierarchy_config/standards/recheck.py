"""The fast re-check (`node.recheck.RecheckPlan`) of one record type of a standards release.

`release_plan(standards, schema)` builds the plan a receiver uses to accept, without the full
`validate.validate_record`, a record that is valid, already normalised and keyed as claimed
(issue 8). It reuses the full validator's own pieces, so a value or code accepted here is
accepted there:

* each field's values are learnt from `validate._normalise_uncached`, the normaliser the full
  validator runs for a text value it has not cached (check digits, dates, decimals, `max_len`);
* code fields are checked with `validate._code_problem` against the record's business date
  (`_business_date`, the schema's "on"/"since" mode). A combination of business date and code
  values found acceptable is remembered per plan (bounded; it starts over when full): tables
  are immutable, and the business date is a function of the (normalised) date text;
* rules run per record in schema order: an error-severity rule that fails means "not proven".
  Warning-severity rules never change the verdict, so those whose kind cannot raise on text
  (`_HARMLESS_WARNINGS`) are skipped; the others still run, in case they raise, as the full
  validator would.

A plan holds the schema and the tables it uses, which are immutable, and is shared by every
`EffectiveStandards` whose tables for it are the same objects (`_PLANS`); a rule's table is
looked up among those tables, as `standards.table` would find it. This module does not
handle tombstones, produce warnings or error messages: whenever it cannot prove a record good,
the full validator decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from hierarchy_config.standards.model import CodeTable, FieldDef, RecordSchema, Rule
from hierarchy_config.standards.rules import TableLookup, evaluate
from hierarchy_config.standards.validate import (
    _OWN_TYPES,
    Standards,
    _business_date,
    _code_of,
    _code_problem,
    _normalise_uncached,
    _spec_of,
)
from node.recheck import FieldRecheck, RecheckPlan
from node.records import canonical_check

__all__ = ["release_plan"]

# Rule kinds whose evaluation cannot raise on a payload of strings (they compare, slice and
# look up only): as warnings they are skipped. id_gender (int() of a digit), sum_equals (decimal
# arithmetic can overflow) and code_slice (int() of its parameters) still run.
_HARMLESS_WARNINGS = frozenset(
    {"field_lte", "id_birth_date", "id_birthplace", "one_of", "max_value", "min_value"}
)

# Plans shared by every `EffectiveStandards` with the same schema and the same tables (province
# extensions replace only the tables they add codes to), so a ministry following many provinces
# learns each value once. Keyed by ids; the schema and tables are kept in the entry so their
# ids are never reused. Bounded: when full it starts over (validators keep the plans they use).
_PLANS: dict[tuple[int, ...], tuple[RecordSchema, tuple[CodeTable, ...], RecheckPlan]] = {}
_PLANS_MAX = 256


def _table_ids(schema: RecordSchema) -> tuple[str, ...]:
    """The tables a record of `schema` is checked against: its code fields' and its rules'."""
    ids = [f.code_table for f in schema.fields if f.code_table is not None]
    ids += [r.param_str("table") for r in schema.rules if "table" in r.params]
    return tuple(dict.fromkeys(ids))


def release_plan(standards: Standards, schema: RecordSchema) -> RecheckPlan | None:
    """The plan of `schema` under `standards`, or None when a table it names is missing (the
    full validator then explains)."""
    ids = _table_ids(schema)
    found = [standards.table(table_id) for table_id in ids]
    tables = tuple(t for t in found if t is not None)
    if len(tables) != len(ids):
        return None
    memo = (id(schema), *map(id, tables))
    entry = _PLANS.get(memo)
    if entry is None:
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()
        plan = _build(schema, dict(zip(ids, tables, strict=True)))
        entry = _PLANS.setdefault(memo, (schema, tables, plan))
    return entry[2]


def _build(schema: RecordSchema, tables: Mapping[str, CodeTable]) -> RecheckPlan:
    codes = tuple((f, tables[f.code_table]) for f in schema.fields if f.code_table is not None)
    fields = [
        FieldRecheck(
            f.name,
            f.required,
            partial(_normalise_uncached, f, _spec_of(f)),
            # node.records' own proof, for the types it normalises (not ts/period)
            None if f.type in _OWN_TYPES else canonical_check(_spec_of(f)),
        )
        for f in schema.fields
    ]
    rules = tuple(
        r for r in schema.rules if r.severity == "error" or r.kind not in _HARMLESS_WARNINGS
    )
    date_field = schema.business_date_field
    memo_names = ((date_field,) if date_field else ()) + tuple(f.name for f, _ in codes)
    return RecheckPlan(
        fields,
        schema.natural_key,
        memo_names=memo_names if codes else (),
        memo_check=partial(_codes_ok, schema, codes) if codes else None,
        record_check=partial(_rules_ok, tables.get, rules) if rules else None,
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


def _rules_ok(tables: TableLookup, rules: tuple[Rule, ...], payload: Mapping[str, str]) -> bool:
    """No error-severity rule fails, and no rule raises."""
    for rule in rules:
        try:
            failure = evaluate(rule, payload, tables)
        except Exception:  # the full validator raises it (or an earlier error)
            return False
        if failure is not None and rule.severity == "error":
            return False
    return True
