"""Run an indicator's query on the node's resource database and shape the answer.

`compute_part` runs the GROUP BY of `node.stats.query` in one read transaction and returns a
`Partial` (plus, when asked, one distinct-count sketch per cell, built from the cell's distinct
identifiers). `result_document` turns combined cells into the JSON answer (also what charts
read): one row per cell with its keys, value, `n`, and flags `suppressed` / `estimated`, plus
labels (code-table names) for every key. Ratios are computed here from their summed parts.

This module does not decide whom to ask (that is `node.stats.service`) and does no network I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import Connection

from hierarchy_config.standards.indicators import Indicator
from hierarchy_config.standards.model import Release
from node.stats.cells import Cell, Key, Partial, decimal_value, new_sketch
from node.stats.disclosure import aggregate
from node.stats.family import Family
from node.stats.query import build_query
from node.stats.regions import rollup_for
from node.stats.request import StatsRequest

__all__ = [
    "compute_part_txn",
    "compute_with_family_txn",
    "labels_for",
    "ratio_cells",
    "result_document",
]


def compute_part_txn(
    conn: Connection,
    release: Release,
    indicator: Indicator,
    request: StatsRequest,
    owner: str | None,
    with_sketch: bool,
) -> Partial:
    """The cells of a flow or stock indicator over this database (one read transaction).

    Counts and sums at the prefecture level are grouped by county in the database and the
    (few) county cells added up to prefecture-level units here: the roll-up exceptions then
    cost nothing per record (a CASE per record costs SQLite a second JSON extraction)."""
    assert indicator.record_type is not None and indicator.measure is not None
    rollup = rollup_for(release)
    if (
        indicator.measure.kind in ("count", "sum")
        and request.region_level == "prefecture"
        and "region" in request.by
    ):
        county = dataclasses.replace(request, region_level="county")
        part = compute_part_txn(conn, release, indicator, county, owner, with_sketch)
        at = request.by.index("region")
        folded: dict[Key, list[int]] = {}
        for key, cell in part.cells.items():
            up = (*key[:at], rollup.key(key[at], "prefecture"), *key[at + 1 :])
            acc = folded.setdefault(up, [0, 0])
            acc[0] += cell.n
            acc[1] += cell.value
        summed = {k: Cell(n=a[0], value=a[1]) for k, a in sorted(folded.items())}
        return Partial(part.measure, part.scale, summed)
    schema = release.schemas[indicator.record_type]
    q = build_query(
        indicator,
        schema,
        request,
        conn.dialect.name,
        owner,
        with_sketch=with_sketch,
        regions=rollup,
    )
    width = len(q.keys)
    cells: dict[Key, Cell] = {}
    for row in conn.execute(q.statement):
        key = tuple(str(row[i]) if row[i] is not None else "" for i in range(width))
        cells[key] = Cell(n=int(row.n), value=int(row.value or 0))
    if q.sketch_statement is not None:
        ids: dict[Key, list[str]] = {}
        for row in conn.execute(q.sketch_statement):
            key = tuple(str(row[i]) if row[i] is not None else "" for i in range(width))
            ids.setdefault(key, []).append(row.who)
        for key, values in ids.items():
            cell = cells.get(key, Cell(0, 0))
            cells[key] = Cell(cell.n, cell.value, len(values), new_sketch(values))
    return Partial(indicator.measure.kind, q.scale, dict(sorted(cells.items())))


def compute_with_family_txn(
    conn: Connection,
    release: Release,
    indicator: Indicator,
    request: StatsRequest,
    family: Family,
    owner: str | None,
    with_sketch: bool,
) -> tuple[Partial, Partial]:
    """The answer's cells and its disclosure family's finest cells, from one snapshot. Counts
    and sums are added up from the family's cells (one scan); distinct counts need their own."""
    assert indicator.measure is not None
    fam = compute_part_txn(conn, release, indicator, family.request, owner, False)
    if family.request == request and not with_sketch:
        return fam, fam
    if indicator.measure.kind in ("count", "sum") and not with_sketch:
        return Partial(fam.measure, fam.scale, aggregate(family, fam.cells, request)), fam
    return compute_part_txn(conn, release, indicator, request, owner, with_sketch), fam


def labels_for(
    release: Release, indicator: Indicator, keys: tuple[str, ...], cells: Mapping[Key, Any]
) -> dict[str, dict[str, str]]:
    """Code-table names of every key value in the answer (for tables and chart axes)."""
    tables: dict[str, str | None] = {"region": "CT_ADMIN_DIV", "period": None}
    schema = release.schemas.get(indicator.record_type or "")
    for d in indicator.dimensions:
        source = release.schemas.get(d.via) if d.via else schema
        spec = source.by_name.get(d.field) if source else None
        tables[d.name] = spec.code_table if spec else None
    out: dict[str, dict[str, str]] = {}
    for i, name in enumerate(keys):
        table = release.table(tables.get(name) or "")
        if table is None:
            continue
        names: dict[str, str] = {}
        for key in cells:
            entry = table.lookup(key[i])
            if entry is not None:
                names[key[i]] = entry.name
        out[name] = names
    return out


def ratio_cells(
    numerator: Mapping[Key, Cell],
    denominator: Mapping[Key, Cell],
    scales: tuple[int, int],
    factor: int,
) -> dict[Key, tuple[Decimal | None, Cell]]:
    """factor x SUM(numerator) / SUM(denominator) per cell; None where undefined or hidden."""
    out: dict[Key, tuple[Decimal | None, Cell]] = {}
    for key in sorted(set(numerator) | set(denominator)):
        num, den = numerator.get(key, Cell(0, 0)), denominator.get(key, Cell(0, 0))
        hidden = next(
            (
                s
                for s in ("primary", "withheld", "secondary")
                if s in (num.suppressed, den.suppressed)
            ),
            "",
        )
        info = Cell(
            n=min(num.n, den.n),
            value=0,
            estimated=num.estimated or den.estimated,
            withheld=num.withheld + den.withheld,
            suppressed=hidden,
        )
        d = decimal_value(den.value, scales[1])
        if hidden or d == 0:
            out[key] = (None, info)
            continue
        value = factor * decimal_value(num.value, scales[0]) / d
        out[key] = (value.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN), info)
    return out


def _number(value: Decimal | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


def result_document(
    release: Release,
    indicator: Indicator,
    request: StatsRequest,
    rows: Mapping[Key, tuple[Decimal | None, Cell]],
    *,
    node: str,
    min_cell: int,
    federated: bool,
    answered: list[str],
    missing: list[dict[str, str]],
    label_indicator: Indicator | None = None,
    unresolved: int = 0,
    scope: str = "family",
) -> dict[str, Any]:
    """The JSON answer of a run. `value` is a number (null when suppressed or undefined);
    `value_text` keeps sums exact; `estimated` marks distinct counts merged across nodes;
    `suppressed` is false or why the cell is hidden: `primary` (below the minimum cell size),
    `secondary` (hidden so that another hidden cell cannot be recovered by subtraction) or
    `withheld` (blanked by the node holding the records). `disclosure.unresolved` counts
    relations that disclosure control could not close inside this answer (normally 0)."""
    cells = []
    for key, (value, cell) in rows.items():
        entry: dict[str, Any] = dict(zip(request.by, key, strict=True))
        shown = None if cell.suppressed else value
        entry.update(
            value=_number(shown),
            value_text=None if shown is None else str(shown),
            n=None if cell.suppressed else cell.n,
            suppressed=cell.suppressed or False,
            estimated=cell.estimated,
            withheld_parts=cell.withheld,
        )
        cells.append(entry)
    return {
        "indicator": indicator.name,
        "ref": indicator.ref,
        "title": indicator.title,
        "unit": indicator.unit,
        "kind": indicator.kind,
        "measure": indicator.measure.kind if indicator.measure else "ratio",
        "node": node,
        "by": list(request.by),
        "period": request.period_text,
        "grain": request.grain,
        "periods": [p.key for p in request.periods],
        "region": request.region,
        "region_level": request.region_level,
        "federated": federated,
        "complete": not missing and not any(c["withheld_parts"] for c in cells),
        "answered": sorted(answered),
        "missing": missing,
        "estimated": any(c["estimated"] for c in cells),
        "min_cell": min_cell,
        "suppressed_cells": sum(1 for c in cells if c["suppressed"]),
        "disclosure": {
            "primary": sum(1 for c in cells if c["suppressed"] == "primary"),
            "secondary": sum(1 for c in cells if c["suppressed"] == "secondary"),
            "withheld": sum(1 for c in cells if c["suppressed"] == "withheld"),
            "unresolved": unresolved,
            "scope": scope,
        },
        "cells": cells,
        "labels": labels_for(release, label_indicator or indicator, request.by, rows),
        "standards": f"std-{release.version}",
    }
