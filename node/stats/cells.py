"""Partial aggregates and how they combine; minimum cell size; ratios.

A `Cell` is one group's partial aggregate: `n` (records, or persons for distinct measures, behind
it), `value` (a count, or a sum in minor units), and for distinct counts a mergeable HyperLogLog
sketch (Apache DataSketches, `datasketches`) of the identifiers with their exact local count.
Combining parts (a parent adding its children's answers to its own):

* counts and sums add up (exact, also across nodes);
* distinct counts are exact within one part; across parts the sketches are merged and the union
  estimated: the cell is marked `estimated` (a person enrolled in two cities counts once);
* duplicates (identifiers held by more than one node) are the parts' own duplicates plus
  `sum of parts' distinct counts - estimated union`: estimated as soon as two parts meet.

`withhold_small` blanks cells below the minimum cell size before they leave the node that holds
the micro-records and `suppress_small` marks them in an answer (primary suppression only; the
answers use `node.stats.disclosure`, which also hides the cells that would let a hidden one be
recovered by subtraction).
Pure, apart from the sketch library; no SQL, no network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

__all__ = ["LG_K", "Cell", "Partial", "combine", "new_sketch", "suppress_small", "withhold_small"]

LG_K = 14  # 2^14 registers: ~0.8 % standard error; exact (coupon list/set) for small counts
Key = tuple[str, ...]


def _datasketches() -> Any:
    """Imported when a distinct count is first made or merged, not with the node: it brings
    numpy and its BLAS threads (about 0.2 s and 25 MB in every node process that never
    computes a statistic, such as a city replicating records)."""
    import datasketches

    return datasketches


def new_sketch(ids: Iterable[str]) -> bytes:
    datasketches = _datasketches()
    sketch = datasketches.hll_sketch(LG_K)
    for value in ids:
        sketch.update(value)
    data: bytes = sketch.serialize_compact()
    return data


def _union_estimate(sketches: Iterable[bytes]) -> tuple[int, bytes]:
    datasketches = _datasketches()
    union = datasketches.hll_union(LG_K)
    for data in sketches:
        union.update(datasketches.hll_sketch.deserialize(data))
    result = union.get_result()
    merged: bytes = result.serialize_compact()
    return round(result.get_estimate()), merged


@dataclass(frozen=True, slots=True)
class Cell:
    n: int
    value: int
    distinct: int = 0  # duplicates measure: identifiers in this part (exact within one node)
    sketch: bytes | None = None
    estimated: bool = False
    withheld: int = 0  # parts that blanked this cell (minimum cell size) before sending it
    suppressed: str = ""  # "" or why it is hidden: primary, secondary, withheld (disclosure)

    def to_wire(self, key: Key) -> list[Any]:
        return [
            list(key),
            self.n,
            self.value,
            self.distinct,
            self.sketch,
            self.estimated,
            self.withheld,
        ]

    @classmethod
    def from_wire(cls, row: Any, width: int) -> tuple[Key, Cell]:
        ok = (
            isinstance(row, list)
            and len(row) == 7
            and isinstance(row[0], list)
            and len(row[0]) == width
            and all(isinstance(k, str) and len(k) <= 64 for k in row[0])
            and all(isinstance(x, int) and not isinstance(x, bool) for x in row[1:4])
            and (row[4] is None or (isinstance(row[4], bytes) and len(row[4]) <= 65536))
            and isinstance(row[5], bool)
            and isinstance(row[6], int)
        )
        if not ok:
            raise ValueError(
                "a cell must be [keys, n, value, distinct, sketch, estimated, withheld]"
            )
        return tuple(row[0]), cls(row[1], row[2], row[3], row[4], row[5], row[6])


@dataclass
class Partial:
    """One node's (or one subtree's) cells for one indicator and request."""

    measure: str
    scale: int
    cells: dict[Key, Cell] = field(default_factory=dict)


def _merge(measure: str, parts: list[Cell]) -> Cell:
    if len(parts) == 1:
        return parts[0]
    withheld = sum(c.withheld for c in parts)
    estimated = any(c.estimated for c in parts)
    if measure in ("count", "sum"):
        return Cell(
            n=sum(c.n for c in parts),
            value=sum(c.value for c in parts),
            estimated=estimated,
            withheld=withheld,
        )
    union, sketch = _union_estimate(c.sketch for c in parts if c.sketch is not None)
    if measure == "distinct":
        return Cell(n=union, value=union, sketch=sketch, estimated=True, withheld=withheld)
    extra = max(0, sum(c.distinct for c in parts) - union)
    value = sum(c.value for c in parts) + extra
    return Cell(value, value, union, sketch, estimated=True, withheld=withheld)


def combine(parts: Iterable[Partial]) -> Partial:
    """The partial of a subtree from its nodes' partials (same indicator and request)."""
    items = list(parts)
    if not items:
        raise ValueError("nothing to combine")
    grouped: dict[Key, list[Cell]] = {}
    for part in items:
        for key, cell in part.cells.items():
            grouped.setdefault(key, []).append(cell)
    first = items[0]
    return Partial(
        first.measure,
        first.scale,
        {k: _merge(first.measure, cells) for k, cells in sorted(grouped.items())},
    )


def withhold_small(part: Partial, min_cell: int) -> Partial:
    """Blank the cells that could identify a person before they leave this node (a small
    distinct-count sketch lists hashed identifiers, so it is dropped with its cell)."""
    out = {}
    for key, cell in part.cells.items():
        if 0 < cell.n < min_cell or 0 < cell.distinct < min_cell:
            out[key] = Cell(0, 0, 0, None, cell.estimated, cell.withheld + 1)
        else:
            out[key] = cell
    return Partial(part.measure, part.scale, out)


def suppress_small(cells: Mapping[Key, Cell], min_cell: int) -> dict[Key, Cell]:
    """Primary suppression only: mark the cells below the minimum cell size (`primary`) or made
    only of parts withheld below it (`withheld`). Answers use `node.stats.disclosure.protect`,
    which adds the secondary suppression."""
    return {
        k: replace(
            c,
            suppressed="primary"
            if 0 < c.n < min_cell
            else "withheld"
            if c.n == 0 and c.withheld > 0
            else "",
        )
        for k, c in cells.items()
    }


def decimal_value(value: int, scale: int) -> Decimal:
    return Decimal(value).scaleb(-scale) if scale else Decimal(value)
