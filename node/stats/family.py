"""The family of a statistics answer, for disclosure control (`node.stats.disclosure`).

All answers that share an indicator, a period range and a region filter — every choice of
dimensions, region level and period grain — are one *family*: each total of one answer is a cell
of another. The family's finest request (every dimension of the indicator, county level, months)
is computed once, and every answer of the family is one table of the lattice summed from it.

* `Dimension`: one key with its hierarchy (`levels` from the finest up; `up` one step), e.g.
  region county → prefecture → province along `node.stats.regions`, period month → quarter →
  year (only when the range holds them whole) for flows; a stock's period is not additive;
* `Family`: the finest request, its dimensions, and where an answer sits in the lattice;
* `family_of(request, ...)`, `dimensions_for(request, ...)`.

Pure: no database, no network; what is hidden is decided in `node.stats.disclosure`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from node.stats.regions import RegionRollup

if TYPE_CHECKING:
    from node.stats.cells import Key
    from node.stats.request import StatsRequest

__all__ = ["TOTAL", "Dimension", "Family", "dimensions_for", "family_of"]

TOTAL = "*"  # the value of a dimension once it is summed over


@dataclass(frozen=True)
class Dimension:
    """One key of the answer. `levels` go from the answer's own level to the coarsest before
    the total; `up(value, i)` is the value at `levels[i + 1]` of a value at `levels[i]`.
    A non-additive dimension (a stock's period: the year is not the sum of its months) has no
    relations along it."""

    name: str
    levels: tuple[str, ...]
    up: Callable[[str, int], str] = lambda value, i: value
    additive: bool = True

    @property
    def top(self) -> int:
        return len(self.levels) if self.additive else 0


@dataclass(frozen=True)
class Family:
    """The answers that share an indicator, a period range and a region filter: every choice of
    dimensions, region level and period grain. `request` is the finest of them (every
    dimension, county level, months), `dims` its hierarchies; every answer of the family is one
    table of the lattice built from `request`'s cells, so they hide consistently."""

    request: StatsRequest
    dims: tuple[Dimension, ...]
    kind: str
    regions: RegionRollup

    def table_of(self, request: StatsRequest) -> tuple[int, ...]:
        """The lattice coordinates of an answer of this family."""
        out = []
        for dim in self.dims:
            if dim.name not in request.by:
                out.append(dim.top)
            elif dim.name == "region":
                out.append(dim.levels.index(request.region_level))
            elif dim.name == "period" and dim.additive:
                out.append(dim.levels.index(request.grain))
            else:
                out.append(0)
        return tuple(out)

    def key_of(self, request: StatsRequest, key: Key) -> Key:
        """An answer cell's key (in `request.by` order) as a key of its lattice table."""
        values = dict(zip(request.by, key, strict=True))
        out = []
        for dim in self.dims:
            if dim.name in values:
                out.append(values[dim.name])
            elif dim.additive:
                out.append(TOTAL)
            else:  # a stock's period left out: the answer is taken at the range's end
                out.append(self.request.periods[-1].key)
        return tuple(out)


def family_of(
    request: StatsRequest,
    dimension_names: Sequence[str],
    kind: str,
    yearly: bool,
    regions: RegionRollup,
) -> Family:
    """The family of `request` (see `Family`); `yearly`: the period field holds years only."""
    from node.stats.periods import parse_range
    from node.stats.request import StatsRequest

    periods = request.periods
    if kind == "flow" and not yearly and periods[0].grain != "month":
        last = periods[-1]
        end_month = last.first_month + last.months - 1
        periods = parse_range(f"{periods[0].start():%Y-%m}..{last.year:04d}-{end_month:02d}")
    elif kind != "flow" and "period" not in request.by:
        periods = periods[-1:]
    finest = StatsRequest(
        request.indicator, tuple(dimension_names), periods, request.region, "county"
    )
    return Family(finest, tuple(dimensions_for(finest, kind, regions)), kind, regions)


_REGION_LEVELS = ("county", "prefecture", "province")


def dimensions_for(request: StatsRequest, kind: str, regions: RegionRollup) -> list[Dimension]:
    """The dimensions of `request`'s keys, in `request.by` order, with their hierarchies:
    region up the GB/T 2260 tree (`regions`), period up to quarters and years when the range
    holds them whole (flows only), code dimensions straight to their total."""
    dims: list[Dimension] = []
    for name in request.by:
        if name == "region":
            levels = _REGION_LEVELS[_REGION_LEVELS.index(request.region_level) :]

            def region_up(
                value: str, i: int, levels: tuple[str, ...] = levels, r: RegionRollup = regions
            ) -> str:
                return r.key(value, levels[i + 1])

            dims.append(Dimension(name, levels, region_up))
        elif name == "period":
            dims.append(_period_dimension(request, additive=kind == "flow"))
        else:
            dims.append(Dimension(name, (name,)))
    return dims


def _period_dimension(request: StatsRequest, *, additive: bool) -> Dimension:
    first, last = request.periods[0], request.periods[-1]
    grain = first.grain
    levels = [grain]
    whole_quarters = first.first_month % 3 == 1 and (last.first_month + last.months - 1) % 3 == 0
    whole_years = first.first_month == 1 and last.first_month + last.months - 1 == 12
    if grain == "month" and whole_quarters:
        levels.append("quarter")
    if grain in ("month", "quarter") and whole_years:
        levels.append("year")

    def period_up(value: str, i: int) -> str:
        target = levels[i + 1]
        if target == "quarter":  # 2025-03 -> 2025Q1
            return f"{value[:4]}Q{(int(value[5:7]) + 2) // 3}"
        return value[:4]  # a month or a quarter -> its year

    return Dimension("period", tuple(levels), period_up, additive)
