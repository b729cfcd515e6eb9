"""Validate records against a standards release (with provincial extensions).

`validate_record(standards, obj)` checks and normalises one record and returns `Validated`: a
`node.records.ValidRecord` (record type, natural key, payload of strings, deleted) plus warnings;
it raises `node.records.RecordInvalid(field, reason)` on the first error, so callers of
`node.records.validate_record` keep working. Values are normalised by node.records' own
normalisers (private functions, imported on purpose), so payloads are byte-identical for the four
record types node.records knows. On top of that:

* code fields are checked against their table *date-aware*: against the record's business date
  (`schema.business_date_field`; a year-month counts as its first day, a timestamp as its day) —
  "on" that date for events, "since" that date for master data — or valid at any time when the
  record has no such date or is a tombstone;
* error-severity rules reject, warning-severity rules add an `Issue`.

The order of checks: unknown fields, then every field's format, then code tables, then rules.
`dry_run` validates a data set and counts outcomes per record type.

This module does not read files, store anything, or know the replication envelope.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol

from hierarchy_config.standards.model import CodeEntry, CodeTable, FieldDef, RecordSchema
from hierarchy_config.standards.rules import evaluate

# node.records' normalisers are private; they are imported on purpose so that payloads stay
# byte-identical with node.records.validate_record.
from node.records import (
    FieldSpec,
    RecordInvalid,
    ValidRecord,
    _Reject,
    _text,
    pick_schema,
    read_fields,
)
from node.records import _normalise_uncached as records_normalise

__all__ = [
    "DryRunReport",
    "Issue",
    "Problem",
    "Standards",
    "Validated",
    "dry_run",
    "validate_record",
]

_TS = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2}))?")
_PERIOD = re.compile(r"(\d{4})(?:Q([1-4]))?")
_LIST_AT_MOST = 12


class Standards(Protocol):
    """What validation needs: a `Release` or an `EffectiveStandards`."""

    @property
    def schemas(self) -> Mapping[str, RecordSchema]: ...

    def table(self, table_id: str) -> CodeTable | None: ...


@dataclass(frozen=True, slots=True)
class Issue:
    field: str
    rule_id: str
    message: str


@dataclass(frozen=True, slots=True)
class Validated:
    record: ValidRecord
    warnings: tuple[Issue, ...] = ()


# --- normalising ---


def _norm_ts(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None, microsecond=0).isoformat()
    match = _TS.fullmatch(_text(value))
    if match is None:
        raise _Reject("must be a date and time written YYYY-MM-DDTHH:MM:SS")
    y, mo, d, h, mi, s = (int(g or 0) for g in match.groups())
    try:
        return dt.datetime(y, mo, d, h, mi, s).isoformat()  # noqa: DTZ001 - local wall time
    except ValueError:
        raise _Reject("is not a real date and time") from None


def _norm_period(value: object) -> str:
    match = _PERIOD.fullmatch(_text(value).upper())
    if match is None:
        raise _Reject("must be a year (2024) or a quarter (2024Q1)")
    return match.group(0)


_OWN_TYPES = {"ts": _norm_ts, "period": _norm_period}


@cache
def _spec_of(f: FieldDef) -> FieldSpec:
    return FieldSpec(f.name, f.type, f.required, f.max_len)


# Per field definition (keyed by id; the definition is kept in the entry so its id is never
# reused): its node.records spec, and the text values already accepted with their normalised
# form. A value's verdict depends only on the definition and the value, so a value seen before
# is answered from here without hashing the (frozen, many-field) definition or re-running its
# normaliser; receivers re-validate records whose values repeat across a batch (issue 8).
# Bounded per definition; only accepted values are kept, so a refusal always comes from the
# full check.
_SEEN: dict[int, tuple[FieldDef, FieldSpec, dict[str, str]]] = {}
_SEEN_PER_FIELD = 4096


def _normalise(f: FieldDef, raw: object) -> str | None:
    entry = _SEEN.get(id(f))
    if entry is None:
        entry = _SEEN.setdefault(id(f), (f, _spec_of(f), {}))
    if type(raw) is str:
        seen = entry[2]
        hit = seen.get(raw)
        if hit is not None:
            return hit
        value = _normalise_uncached(f, entry[1], raw)
        if value is not None and len(seen) < _SEEN_PER_FIELD:
            seen[raw] = value
        return value
    return _normalise_uncached(f, entry[1], raw)


def _normalise_uncached(f: FieldDef, spec: FieldSpec, raw: object) -> str | None:
    own = _OWN_TYPES.get(f.type)
    if own is None:  # uncached: `_normalise` already keeps the accepted text values
        return records_normalise(spec, raw)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        value = own(raw)
    except _Reject as exc:
        raise RecordInvalid(f.name, str(exc)) from None
    if f.max_len is not None and len(value) > f.max_len:
        raise RecordInvalid(
            f.name, f"must be at most {f.max_len} characters (this one has {len(value)})"
        )
    return value


# --- code tables ---


def _business_date(schema: RecordSchema, payload: Mapping[str, str]) -> dt.date | None:
    name = schema.business_date_field
    value = payload.get(name) if name else None
    if value is None:
        return None
    if len(value) == 6:  # ym
        return dt.date(int(value[:4]), int(value[4:]), 1)
    return dt.date.fromisoformat(value[:10])


def _code_of(f: FieldDef, value: str) -> str:
    """The code to look up: an industry code is checked at division level (C13 of C1310)."""
    return value[:3] if f.type == "industry" else value


def _acceptable(entry: CodeEntry, on: dt.date | None, mode: str) -> bool:
    if on is None:
        return True
    if mode == "since":
        return entry.valid_to is None or entry.valid_to >= on
    return entry.valid_on(on)


# Codes found acceptable, per (table, code, business date, mode); the table is kept in the value
# so its id is never reused. Tables are immutable, so a verdict never changes. Bounded.
_CODE_OK: dict[tuple[int, str, dt.date | None, str], CodeTable] = {}
_CODE_OK_MAX = 65536


def _code_problem(
    table: CodeTable, code: str, on: dt.date | None, mode: str, date_field: str
) -> str | None:
    memo = (id(table), code, on, mode)
    if memo in _CODE_OK:
        return None
    problem = _code_problem_uncached(table, code, on, mode, date_field)
    if problem is None and len(_CODE_OK) < _CODE_OK_MAX:
        _CODE_OK[memo] = table
    return problem


def _code_problem_uncached(
    table: CodeTable, code: str, on: dt.date | None, mode: str, date_field: str
) -> str | None:
    versions = table.versions(code)
    if any(_acceptable(e, on, mode) for e in versions):
        return None
    if not versions:
        listed = [e.code for e in table.current()] if len(table.codes) <= _LIST_AT_MOST else []
        if listed:
            return "must be one of " + ", ".join(dict.fromkeys(listed))
        return f"is not a code of {table.id} ({table.name}, {table.standard})"
    assert on is not None
    ended = [e for e in versions if e.valid_to is not None and e.valid_to < on]
    if ended:
        last = max(ended, key=lambda e: e.valid_to or dt.date.min)
        reason = f"was retired after {last.valid_to} and is not valid on {date_field} {on}"
        if last.replacement:
            new = table.lookup(last.replacement, on)
            reason += f"; use {last.replacement}" + (f" ({new.name})" if new else "") + " instead"
        return reason
    first = min(e.valid_from or dt.date.min for e in versions)
    return f"is valid only from {first}, after {date_field} {on}"


# --- validation ---


def validate_record(standards: Standards, obj: Mapping[str, Any]) -> Validated:
    """Check and normalise one record; raise RecordInvalid naming the first bad field."""
    schema = pick_schema(standards.schemas, obj)
    deleted, specs, payload = read_fields(schema, obj, _normalise)
    on = None if deleted else _business_date(schema, payload)
    for spec in specs:
        if spec.code_table is None or spec.name not in payload:
            continue
        table = standards.table(spec.code_table)
        if table is None:  # cannot happen for a Release: it checks its references
            raise RecordInvalid(spec.name, f"code table {spec.code_table} is not available")
        problem = _code_problem(
            table,
            _code_of(spec, payload[spec.name]),
            on,
            schema.date_mode,
            schema.business_date_field or "",
        )
        if problem:
            raise RecordInvalid(spec.name, problem)
    warnings: list[Issue] = []
    if not deleted:
        for rule in schema.rules:
            failure = evaluate(rule, payload, standards.table)
            if failure is None:
                continue
            if rule.severity == "error":
                raise RecordInvalid(*failure)
            warnings.append(Issue(failure[0], rule.id, failure[1]))
    key = "|".join(payload.get(name, "") for name in schema.natural_key)
    return Validated(
        ValidRecord(schema.name, key, dict(sorted(payload.items())), deleted), tuple(warnings)
    )


# --- dry run ---


@dataclass(frozen=True, slots=True)
class Problem:
    index: int  # position of the record in the data set
    record_type: str
    severity: str  # "error" or "warning"
    field: str
    rule_id: str  # "" for format and code-table errors
    message: str


@dataclass(slots=True)
class DryRunReport:
    """Counts per record type (`ok`: no warnings) and the first problems found."""

    ok: dict[str, int] = field(default_factory=dict)
    warned: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def total_errors(self) -> int:
        return sum(self.errors.values())

    def render(self) -> str:
        kinds = sorted(set(self.ok) | set(self.warned) | set(self.errors))
        lines = [f"{'record type':<28}{'ok':>8}{'warnings':>10}{'errors':>8}"]
        for kind in kinds:
            lines.append(
                f"{kind:<28}{self.ok.get(kind, 0):>8}{self.warned.get(kind, 0):>10}"
                f"{self.errors.get(kind, 0):>8}"
            )
        for p in self.problems:
            rule = f" [{p.rule_id}]" if p.rule_id else ""
            lines.append(f"#{p.index} {p.record_type} {p.severity}{rule} {p.field}: {p.message}")
        return "\n".join(lines)


def dry_run(
    standards: Standards, objs: Iterable[Mapping[str, Any]], *, max_problems: int = 20
) -> DryRunReport:
    """Validate every record of a data set; nothing is stored."""
    report = DryRunReport()
    for index, obj in enumerate(objs):
        raw_type = obj.get("type") if isinstance(obj, Mapping) else None
        kind = raw_type if isinstance(raw_type, str) and raw_type in standards.schemas else "?"
        try:
            result = validate_record(standards, obj)
        except RecordInvalid as exc:
            report.errors[kind] = report.errors.get(kind, 0) + 1
            if len(report.problems) < max_problems:
                report.problems.append(Problem(index, kind, "error", exc.field, "", exc.reason))
            continue
        bucket = report.warned if result.warnings else report.ok
        bucket[kind] = bucket.get(kind, 0) + 1
        for issue in result.warnings:
            if len(report.problems) < max_problems:
                report.problems.append(
                    Problem(index, kind, "warning", issue.field, issue.rule_id, issue.message)
                )
    return report
