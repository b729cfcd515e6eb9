"""An indicator as one SQL statement: SELECT <keys>, n, value FROM records ... GROUP BY <keys>.

Record fields live in the JSON text column `records.payload`; they are read with
`json_extract(payload, '$.f')` on SQLite and `CAST(payload AS json) ->> 'f'` on PostgreSQL
(`field_text`). All grouping, filtering, counting and summing happen in the database:

* region keys cut the 6-digit code to the asked level (`330106` → `330000` / `330100`), with
  the exceptions of `node.stats.regions` (municipalities, county-level units administered by
  the province) as one CASE on the code's prefix, emitted only when the request's scope contains
  such codes; on SQLite the code is extracted once per row (a scalar subquery), as SQLite
  would otherwise extract it again for every branch of the CASE;
* flow periods are cut from the period field (`2025-03-14` → `2025-03`, `2025Q1`, `2025`);
* stocks are evaluated at each period end by joining a small derived table of period bounds
  (`start < next_start AND NOT ended-before-next_start`): one statement for all periods;
* sums add decimal fields as integers in minor units (the stored text has exactly the schema's
  scale, so removing the '.' is exact on both databases);
* distinct counts are `COUNT(DISTINCT ...)`; duplicates are identifiers held by more than one
  owner (`HAVING COUNT(DISTINCT owner) > 1`).

A dimension read from a linked record (`via`, e.g. the employer's industry of an injury) joins
a derived table of those records (one value per natural key, whoever owns it here) on the
linking field; records without a partner here group under an empty value.

Tombstones (`deleted`) are always excluded. `owner` restricts a run to one node's own records
(the node's part of a federated query). This module builds statements; it does not run them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Integer,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement

from hierarchy_config.standards.indicators import Dimension, Filter, Indicator, sum_scale
from hierarchy_config.standards.model import RecordSchema
from node.schema import records
from node.stats.periods import Period
from node.stats.regions import FALLBACK, RegionRollup
from node.stats.request import LEVELS, StatsError, StatsRequest, region_prefix

__all__ = ["CellQuery", "build_query", "field_text", "region_key"]

Expr = ColumnElement[Any]


def field_text(dialect: str, name: str, table: Any = records) -> Expr:
    """The text of payload field `name` (NULL when absent) in the given SQL dialect."""
    expr: Expr
    if dialect == "postgresql":
        expr = cast(table.c.payload, JSON)[name].as_string()
    else:
        expr = func.json_extract(table.c.payload, f'$."{name}"')
    return expr


def _partner(dialect: str, n: int, d: Dimension, on: Expr) -> tuple[Any, Expr]:
    """A `via` dimension: the linked records (type `d.via`, not deleted; any owner held here,
    one value per natural key) as a derived table, its join condition and the value column."""
    linked = records.alias(f"via{n}")
    table = (
        select(linked.c.key.label("k"), func.min(field_text(dialect, d.field, linked)).label("v"))
        .where(linked.c.record_type == d.via, linked.c.deleted.is_(False))
        .group_by(linked.c.key)
        .subquery(f"linked{n}")
    )
    return table, table.c.k == on


@dataclass(frozen=True)
class CellQuery:
    """The statement, its key column names (in `request.by` order) and the value's scale."""

    statement: Any
    keys: tuple[str, ...]
    scale: int
    sketch_statement: Any | None  # (keys..., identifier) DISTINCT rows, for distinct sketches


def _bound(kind: str, day: Any) -> str:
    return f"{day.year:04d}{day.month:02d}" if kind == "ym" else day.isoformat()


def _period_key(kind: str, f: Expr, grain: str, indicator: str) -> Expr:
    if kind == "period":
        if grain != "year":
            raise StatsError("bad_request", f"{indicator} is reported per year; ask for years")
        return func.substr(f, 1, 4)
    month = func.substr(f, 5, 2) if kind == "ym" else func.substr(f, 6, 2)
    year = func.substr(f, 1, 4)
    if grain == "year":
        return year
    if grain == "quarter":
        quarter = (cast(month, Integer) + 2) // 3
        return year + literal("Q") + cast(quarter, String)
    return year + literal("-") + month


def region_key(
    region: Expr, level: str, rollup: RegionRollup, dialect: str, scope: str | None
) -> Expr:
    """The group key of the region column at `level` (see `node.stats.regions`)."""
    digits = LEVELS[level]
    if digits == 6:
        return region
    if digits == 2:
        return func.substr(region, 1, 2) + literal("0000")
    within = region_prefix(scope)[:4] if scope else ""
    munis = sorted(m for m in rollup.municipalities if m.startswith(within[:2]))
    direct = sorted(d for d in rollup.direct_prefixes if d.startswith(within))
    if not munis and not direct:
        return func.substr(region, 1, 4) + literal("00")
    code: Expr = region
    if dialect == "sqlite":
        code = select(region.label("x")).correlate(records).subquery("rk").c.x
    branches: list[tuple[Expr, Expr]] = []
    if munis:
        branches.append((func.substr(code, 1, 2).in_(munis), func.substr(code, 1, 2) + "0000"))
    if direct:
        branches.append(
            (and_(func.substr(code, 3, 4) != "0000", func.substr(code, 1, 4).in_(direct)), code)
        )
    expr: Expr = case(*branches, else_=func.substr(code, 1, 4) + literal("00"))
    if dialect == "sqlite":
        expr = select(expr).scalar_subquery()
    return expr


def _filter(f: Filter, text: Callable[[str], Expr]) -> Expr:
    col = text(f.field)
    if not f.values:
        cond = and_(col.is_not(None), col != "")
        return not_(cond) if f.negate else cond
    if f.negate:
        return or_(col.is_(None), col.not_in(f.values))
    return col.in_(f.values)


def build_query(
    indicator: Indicator,
    schema: RecordSchema,
    request: StatsRequest,
    dialect: str,
    owner: str | None = None,
    *,
    with_sketch: bool = False,
    regions: RegionRollup = FALLBACK,
) -> CellQuery:
    """The GROUP BY statement of a flow or stock indicator (not a ratio) for `request`;
    `regions` is the roll-up of the release's region table (`node.stats.regions.rollup_for`)."""
    assert indicator.measure is not None and indicator.region_field is not None

    def text(name: str) -> Expr:
        return field_text(dialect, name)

    kinds = {f.name: f.type for f in schema.fields}
    where: list[Expr] = [
        records.c.record_type == schema.name,
        records.c.deleted.is_(False),
    ]
    if owner is not None:
        where.append(records.c.owner == owner)
    region = text(indicator.region_field)
    if request.region is not None:
        where.append(region.startswith(region_prefix(request.region), autoescape=True))
    where.extend(_filter(f, text) for f in indicator.filters)
    keys: dict[str, Expr] = {}
    keys["region"] = region_key(region, request.region_level, regions, dialect, request.region)
    periods: Sequence[Period] = request.periods
    if indicator.kind == "flow":
        assert indicator.period_field is not None
        kind = kinds[indicator.period_field]
        pf = text(indicator.period_field)
        keys["period"] = _period_key(kind, pf, request.grain, indicator.name)
        if kind == "period":
            where += [
                func.substr(pf, 1, 4) >= periods[0].key[:4],
                func.substr(pf, 1, 4) <= periods[-1].key[:4],
            ]
        else:
            where += [
                pf >= _bound(kind, periods[0].start()),
                pf < _bound(kind, periods[-1].next_start()),
            ]
    else:
        assert indicator.start_field is not None
        if "period" not in request.by:
            periods = periods[-1:]  # a stock without a time axis: its value at the range's end
        bounds = union_all(
            *[
                select(
                    literal(p.key).label("period"),
                    literal(_bound("date", p.next_start())).label("nxt_date"),
                    literal(_bound("ym", p.next_start())).label("nxt_ym"),
                )
                for p in periods
            ]
        ).subquery("periods")

        def nxt(field: str) -> Expr:
            return bounds.c.nxt_ym if kinds[field] == "ym" else bounds.c.nxt_date

        start = text(indicator.start_field)
        where.append(start < nxt(indicator.start_field))
        if indicator.end_field is not None:
            end = text(indicator.end_field)
            ended = [end.is_not(None), end != "", end < nxt(indicator.end_field)]
            ended.extend(_filter(f, text) for f in indicator.end_when)
            where.append(not_(and_(*ended)))
        keys["period"] = bounds.c.period
    source: Any = records
    for n, d in enumerate(indicator.dimensions):
        if d.via is not None and d.on is not None and d.name in request.by:
            table, on = _partner(dialect, n, d, text(d.on))
            source = source.outerjoin(table, on)
            col = table.c.v
        else:
            col = text(d.field)
        keys[d.name] = func.substr(col, 1, d.length) if d.length else col
    chosen = [keys[name].label(f"k{i}") for i, name in enumerate(request.by)]
    # SQLite groups by the output names (each key computed once per row); PostgreSQL by the
    # expressions themselves.
    group: list[Expr] = [
        literal_column(f"k{i}") if dialect == "sqlite" else keys[name]
        for i, name in enumerate(request.by)
    ]
    measure = indicator.measure
    scale = 0
    sketch = None
    if measure.kind in ("count", "sum"):
        if measure.kind == "sum":
            scale = max(sum_scale(schema, f) for f in measure.fields)
            parts = [
                cast(func.replace(func.coalesce(text(f), "0"), ".", ""), BigInteger)
                * (10 ** (scale - sum_scale(schema, f)))
                for f in measure.fields
            ]
            total = parts[0]
            for part in parts[1:]:
                total = total + part
            value: Expr = func.sum(total)
        else:
            value = func.count()
        stmt = select(*chosen, func.count().label("n"), value.label("value")).select_from(source)
        stmt = stmt.where(*where)
        stmt = stmt.group_by(*group) if group else stmt
    else:
        assert measure.field is not None
        who = text(measure.field)
        if measure.kind == "distinct":
            distinct = func.count(who.distinct())
            stmt = select(*chosen, distinct.label("n"), distinct.label("value"))
            stmt = stmt.select_from(source).where(*where, who.is_not(None))
            stmt = stmt.group_by(*group) if group else stmt
        else:  # duplicates: identifiers held by more than one owner within the cell
            inner = (
                select(*chosen, who.label("who"))
                .select_from(source)
                .where(*where, who.is_not(None))
                .group_by(*group, who)
                .having(func.count(records.c.owner.distinct()) > 1)
                .subquery("dups")
            )
            outer_keys = [inner.c[f"k{i}"] for i in range(len(chosen))]
            stmt = select(*outer_keys, func.count().label("n"), func.count().label("value"))
            stmt = stmt.group_by(*outer_keys) if outer_keys else stmt
        if with_sketch:
            sketch = (
                select(*chosen, who.label("who"))
                .select_from(source)
                .where(*where, who.is_not(None))
                .distinct()
            )
    return CellQuery(stmt, request.by, scale, sketch)
