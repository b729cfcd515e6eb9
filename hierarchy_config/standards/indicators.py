"""Statistical indicators and per-record-type replication policies of a standards release.

An `Indicator` says what to count or sum over which record type: a filter, a measure (count,
distinct count, duplicates across owners, sum of decimal fields), dimensions (region at any
GB/T 2260 level, period month/quarter/year, code-table fields), and its kind:

* `flow` (从年初累计): records whose `period_field` falls in the period; sums across regions AND
  time;
* `stock` (期末时点数): records in force at the period end (`start_field` <= end, and not ended:
  `end_field` empty, after the end, or `end_when` does not match); sums across regions, the last
  value over time;
* `ratio`: a numerator indicator over a denominator indicator, recomputed from the summed parts.

A `RecordPolicy` says, per record type, whether records replicate upward (`replicate`, the
planning document's resource-library modes 1/2) or stay where they were written (`local`, mode 3:
the parent gets statistics only, through federated queries), and the minimum cell size below
which a statistic is suppressed because it could identify a person.

`check_indicators` validates indicators against the release's schemas and code tables (unknown
record types, fields or codes are errors). JSON (de)coding for the release codec is here too.
This module does no I/O and runs no SQL (`node.stats` turns an indicator into a query).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from hierarchy_config.standards.model import InvalidStandards, RecordSchema

if TYPE_CHECKING:
    from hierarchy_config.standards.model import CodeTable

__all__ = [
    "DEFAULT_POLICY",
    "Dimension",
    "Filter",
    "Indicator",
    "Measure",
    "RecordPolicy",
    "check_indicators",
    "indicator_from_json",
    "indicator_to_json",
    "policy_from_json",
    "policy_to_json",
]

Kind = Literal["flow", "stock", "ratio"]
MeasureKind = Literal["count", "distinct", "duplicates", "sum"]
Mode = Literal["replicate", "local"]
KINDS: frozenset[str] = frozenset({"flow", "stock", "ratio"})
MEASURES: frozenset[str] = frozenset({"count", "distinct", "duplicates", "sum"})
MODES: frozenset[str] = frozenset({"replicate", "local"})
_NAME = re.compile(r"[a-z][a-z0-9_]{0,40}")
_DATE_TYPES = frozenset({"date", "ts", "ym", "period"})
_SUM_TYPE = re.compile(r"dec\(\d{1,2},(\d{1,2})\)|int")
RESERVED_DIMENSIONS = frozenset({"region", "period"})


@dataclass(frozen=True, slots=True)
class RecordPolicy:
    """How one record type replicates, and the smallest cell a statistic may show."""

    mode: Mode = "replicate"
    min_cell: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidStandards("replication.mode", "must be 'replicate' or 'local'")
        if not 1 <= self.min_cell <= 1000:
            raise InvalidStandards("replication.min_cell", "must be a whole number 1 to 1000")


DEFAULT_POLICY = RecordPolicy()


@dataclass(frozen=True, slots=True)
class Filter:
    """`field` must (or, with `negate`, must not) hold one of `values`; no values = non-empty."""

    field: str
    values: tuple[str, ...] = ()
    negate: bool = False


@dataclass(frozen=True, slots=True)
class Measure:
    kind: MeasureKind
    field: str | None = None  # distinct / duplicates: the person (or other) identifier
    fields: tuple[str, ...] = ()  # sum: the decimal or integer fields added up per record


@dataclass(frozen=True, slots=True)
class Dimension:
    """A code-table field to group by; `length` keeps a prefix (industry section = 1).

    With `via`, the field is read from another record: the record of type `via` whose natural
    key (a single field) equals this record's field `on` (injuries by their employer's industry:
    `via = "employer"`, `on = "uscc"`, `field = "industry"`). A record whose partner is not held
    where the indicator is computed is grouped under an empty value."""

    name: str
    field: str
    length: int | None = None
    via: str | None = None
    on: str | None = None


@dataclass(frozen=True, slots=True)
class Indicator:
    name: str
    title: str
    kind: Kind
    ref: str = ""  # the report row it stands for, e.g. "I1"
    unit: str = ""
    record_type: str | None = None
    measure: Measure | None = None
    filters: tuple[Filter, ...] = ()
    region_field: str | None = None
    period_field: str | None = None  # flow
    start_field: str | None = None  # stock
    end_field: str | None = None  # stock
    end_when: tuple[Filter, ...] = ()  # stock: end_field ends the record only when these match
    dimensions: tuple[Dimension, ...] = ()
    numerator: str | None = None  # ratio
    denominator: str | None = None  # ratio
    factor: int = 1  # ratio: value = factor * numerator / denominator

    def __post_init__(self) -> None:
        path = f"indicators.{self.name}"
        if not _NAME.fullmatch(self.name):
            raise InvalidStandards(path, "indicator name must be lower_snake_case")
        if self.kind not in KINDS:
            raise InvalidStandards(path + ".kind", "must be flow, stock or ratio")
        if not self.title.strip():
            raise InvalidStandards(path + ".title", "must not be empty")
        if self.kind == "ratio":
            if not (self.numerator and self.denominator) or self.record_type or self.measure:
                raise InvalidStandards(
                    path, "a ratio names a numerator and a denominator indicator and nothing else"
                )
            return
        if self.record_type is None or self.measure is None or self.region_field is None:
            raise InvalidStandards(path, "needs record_type, measure and region_field")
        if self.measure.kind not in MEASURES:
            raise InvalidStandards(path + ".measure.kind", "must be " + ", ".join(sorted(MEASURES)))
        if self.kind == "flow" and (self.period_field is None or self.start_field is not None):
            raise InvalidStandards(path, "a flow needs period_field (and no start_field)")
        if self.kind == "stock" and (self.start_field is None or self.period_field is not None):
            raise InvalidStandards(path, "a stock needs start_field (and no period_field)")
        names = [d.name for d in self.dimensions]
        if len(set(names)) != len(names) or RESERVED_DIMENSIONS & set(names):
            raise InvalidStandards(
                path + ".dimensions", "names must be unique and not 'region' or 'period'"
            )

    @property
    def dimension_names(self) -> tuple[str, ...]:
        return ("region", "period", *(d.name for d in self.dimensions))


def _field(schema: RecordSchema, name: str | None, path: str, types: frozenset[str] | None) -> None:
    if name is None:
        return
    spec = schema.by_name.get(name)
    if spec is None:
        raise InvalidStandards(path, f"{name!r} is not a field of record type {schema.name!r}")
    if types is not None and spec.type not in types:
        raise InvalidStandards(path, f"field {name!r} must be of type " + ", ".join(sorted(types)))


def _check_filter(
    f: Filter, schema: RecordSchema, tables: Mapping[str, CodeTable], path: str
) -> None:
    _field(schema, f.field, path, None)
    table_id = schema.by_name[f.field].code_table
    table = tables.get(table_id) if table_id else None
    for value in f.values:
        if table is not None and table.lookup(value) is None:
            raise InvalidStandards(path, f"{value!r} is not a code of {table_id}")


def check_indicators(
    indicators: Mapping[str, Indicator],
    schemas: Mapping[str, RecordSchema],
    tables: Mapping[str, CodeTable],
    policies: Mapping[str, RecordPolicy],
) -> None:
    """Raise InvalidStandards unless every indicator and policy fits the release."""
    for name in policies:
        if name not in schemas:
            raise InvalidStandards(f"replication.{name}", "is not a record type of this release")
    for key, ind in indicators.items():
        path = f"indicators.{key}"
        if key != ind.name:
            raise InvalidStandards(path, f"holds indicator {ind.name!r}")
        if ind.kind == "ratio":
            for part in (ind.numerator, ind.denominator):
                other = indicators.get(part or "")
                if other is None or other.kind == "ratio":
                    raise InvalidStandards(path, f"{part!r} is not a flow or stock indicator")
            continue
        assert ind.record_type is not None and ind.measure is not None
        schema = schemas.get(ind.record_type)
        if schema is None:
            raise InvalidStandards(path + ".record_type", f"unknown type {ind.record_type!r}")
        _field(schema, ind.region_field, path + ".region_field", frozenset({"region"}))
        _field(schema, ind.period_field, path + ".period_field", _DATE_TYPES)
        _field(schema, ind.start_field, path + ".start_field", frozenset({"date", "ts", "ym"}))
        _field(schema, ind.end_field, path + ".end_field", frozenset({"date", "ts", "ym"}))
        m = ind.measure
        if m.kind in ("distinct", "duplicates") and (m.field is None or m.fields):
            raise InvalidStandards(path + ".measure", f"{m.kind} needs one 'field'")
        if m.kind == "sum" and (not m.fields or m.field is not None):
            raise InvalidStandards(path + ".measure", "sum needs 'fields'")
        if m.kind == "count" and (m.fields or m.field is not None):
            raise InvalidStandards(path + ".measure", "count takes no fields")
        _field(schema, m.field, path + ".measure.field", None)
        for name in m.fields:
            _field(schema, name, path + ".measure.fields", None)
            if not _SUM_TYPE.fullmatch(schema.by_name[name].type):
                raise InvalidStandards(path + ".measure.fields", f"{name!r} is not dec(p,s)/int")
        for n, f in enumerate(ind.filters):
            _check_filter(f, schema, tables, f"{path}.filters[{n}]")
        for n, f in enumerate(ind.end_when):
            _check_filter(f, schema, tables, f"{path}.end_when[{n}]")
        for d in ind.dimensions:
            where = f"{path}.dimensions.{d.name}"
            source = schema
            if d.via is not None or d.on is not None:
                source = _partner(d, schema, schemas, where)
            _field(source, d.field, where, None)
            if source.by_name[d.field].code_table is None:
                raise InvalidStandards(where, f"field {d.field!r} has no code table")
            if d.length is not None and not 1 <= d.length <= 20:
                raise InvalidStandards(where + ".length", "must be 1 to 20")


def _partner(
    d: Dimension, schema: RecordSchema, schemas: Mapping[str, RecordSchema], where: str
) -> RecordSchema:
    """The schema a `via` dimension reads from, checked: it exists, its natural key is one
    field, and `on` is a field of the indicator's own record type."""
    partner = schemas.get(d.via or "")
    if partner is None or d.on is None:
        raise InvalidStandards(where, "'via' names a record type and 'on' the field that links")
    if len(partner.natural_key) != 1:
        raise InvalidStandards(where + ".via", f"{d.via!r} must have a one-field natural key")
    _field(schema, d.on, where + ".on", None)
    return partner


def sum_scale(schema: RecordSchema, name: str) -> int:
    """Decimal places of a summed field (0 for int)."""
    match = _SUM_TYPE.fullmatch(schema.by_name[name].type)
    return int(match.group(1)) if match and match.group(1) else 0


# --- JSON form (canonical: the codec sorts keys) ---


def _filter_json(f: Filter) -> dict[str, Any]:
    return {"field": f.field, "values": list(f.values), "negate": f.negate}


def indicator_to_json(ind: Indicator) -> dict[str, Any]:
    m = ind.measure
    return {
        "title": ind.title,
        "kind": ind.kind,
        "ref": ind.ref,
        "unit": ind.unit,
        "record_type": ind.record_type,
        "measure": None
        if m is None
        else {"kind": m.kind, "field": m.field, "fields": list(m.fields)},
        "filters": [_filter_json(f) for f in ind.filters],
        "region_field": ind.region_field,
        "period_field": ind.period_field,
        "start_field": ind.start_field,
        "end_field": ind.end_field,
        "end_when": [_filter_json(f) for f in ind.end_when],
        "dimensions": [_dimension_json(d) for d in ind.dimensions],
        "numerator": ind.numerator,
        "denominator": ind.denominator,
        "factor": ind.factor,
    }


def _dimension_json(d: Dimension) -> dict[str, Any]:
    out: dict[str, Any] = {"name": d.name, "field": d.field, "length": d.length}
    if d.via is not None:  # only when set: releases without joins keep their bytes
        out.update(via=d.via, on=d.on)
    return out


def policy_to_json(p: RecordPolicy) -> dict[str, Any]:
    return {"mode": p.mode, "min_cell": p.min_cell}


class _Reader:
    """Strict typed access for decoding; raises InvalidStandards at `path`."""

    def __init__(self, doc: Any, path: str, keys: frozenset[str]) -> None:
        if not isinstance(doc, dict):
            raise InvalidStandards(path, "must be an object")
        extra = sorted(set(doc) - keys)
        if extra:
            raise InvalidStandards(path, f"unknown keys {extra}")
        self.doc, self.path = doc, path

    def get(self, key: str, kind: type, default: Any = None, *, optional: bool = True) -> Any:
        value = self.doc.get(key, default)
        if value is None and optional:
            return None
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise InvalidStandards(f"{self.path}.{key}", f"must be {kind.__name__}")
        return value

    def strs(self, key: str) -> tuple[str, ...]:
        items = self.get(key, list, [], optional=False)
        if not all(isinstance(v, str) for v in items):
            raise InvalidStandards(f"{self.path}.{key}", "must be a list of strings")
        return tuple(items)


_FILTER_KEYS = frozenset({"field", "values", "negate"})
_MEASURE_KEYS = frozenset({"kind", "field", "fields"})
_DIM_KEYS = frozenset({"name", "field", "length", "via", "on"})
INDICATOR_KEYS = frozenset(
    {"title", "kind", "ref", "unit", "record_type", "measure", "filters", "region_field"}
    | {"period_field", "start_field", "end_field", "end_when", "dimensions", "numerator"}
    | {"denominator", "factor"}
)


def _filters(items: Any, path: str) -> tuple[Filter, ...]:
    if not isinstance(items, list):
        raise InvalidStandards(path, "must be a list")
    out = []
    for n, item in enumerate(items):
        r = _Reader(item, f"{path}[{n}]", _FILTER_KEYS)
        out.append(
            Filter(
                field=r.get("field", str, optional=False),
                values=r.strs("values"),
                negate=r.get("negate", bool, False, optional=False),
            )
        )
    return tuple(out)


def indicator_from_json(name: str, doc: Any, path: str) -> Indicator:
    """An indicator from its JSON (or TOML) form; missing optional keys take their defaults."""
    r = _Reader(doc, path, INDICATOR_KEYS)
    measure = None
    if r.doc.get("measure") is not None:
        m = _Reader(r.doc["measure"], path + ".measure", _MEASURE_KEYS)
        measure = Measure(
            kind=m.get("kind", str, optional=False),
            field=m.get("field", str),
            fields=m.strs("fields"),
        )
    dims = []
    for n, item in enumerate(r.get("dimensions", list, [], optional=False)):
        d = _Reader(item, f"{path}.dimensions[{n}]", _DIM_KEYS)
        dims.append(
            Dimension(
                name=d.get("name", str, optional=False),
                field=d.get("field", str, optional=False),
                length=d.get("length", int),
                via=d.get("via", str),
                on=d.get("on", str),
            )
        )
    return Indicator(
        name=name,
        title=r.get("title", str, "", optional=False),
        kind=r.get("kind", str, optional=False),
        ref=r.get("ref", str, "", optional=False),
        unit=r.get("unit", str, "", optional=False),
        record_type=r.get("record_type", str),
        measure=measure,
        filters=_filters(r.doc.get("filters", []), path + ".filters"),
        region_field=r.get("region_field", str),
        period_field=r.get("period_field", str),
        start_field=r.get("start_field", str),
        end_field=r.get("end_field", str),
        end_when=_filters(r.doc.get("end_when", []), path + ".end_when"),
        dimensions=tuple(dims),
        numerator=r.get("numerator", str),
        denominator=r.get("denominator", str),
        factor=r.get("factor", int, 1, optional=False),
    )


def policy_from_json(doc: Any, path: str) -> RecordPolicy:
    r = _Reader(doc, path, frozenset({"mode", "min_cell"}))
    try:
        return RecordPolicy(
            mode=r.get("mode", str, "replicate", optional=False),
            min_cell=r.get("min_cell", int, 1, optional=False),
        )
    except InvalidStandards as exc:
        raise InvalidStandards(f"{path}.{exc.path.rsplit('.', 1)[-1]}", exc.reason) from None
