"""Statistical disclosure control of an answer: primary and secondary (complementary) suppression.

*Primary*: a cell built from fewer records (or persons) than the minimum cell size is hidden.
*Secondary*: a hidden cell must not be recoverable by subtraction. Every cell of an answer adds up
with its siblings to a *margin*: the total one level up along one dimension (the prefecture of a
county, the province of a prefecture, the quarter or year of complete months, the whole range of
periods, the total over a code dimension, and so on up to the grand total). The margins are not in
the answer, but each is the cell of another answer anyone allowed to ask can get (`--level
province`, `--by region` without `period`, ...). So the answers of one request family form a
lattice of tables (every combination of levels, one per dimension), and a cell is protected when
no relation `margin = sum of its children` has exactly one unknown term.

How (the hierarchical approach of statistical offices, e.g. tau-argus's HiTaS, with the simple
iterative "next-smallest cell" heuristic inside each table):

1. the family of an answer (`Family`: same indicator, period range and region filter; every
   dimension, county level, months) is computed once, and every table of its lattice is summed
   from the finest cells; the answer is one of those tables;
2. the tables are processed from the coarsest (the grand total) down to the finest;
3. in each table, primary suppression first; then every relation between a cell of the coarser
   table one step up one dimension and its children in this table is checked: with exactly one
   unknown term (the margin hidden in its own table, or one hidden child), the smallest published
   child is hidden as well (`secondary`), preferring children whose hiding does not leave a
   single-child relation open; repeated from a work list until nothing changes;
4. a relation a table cannot close (every other term is a margin, fixed above) forces that
   margin hidden in its own table, and the lattice is computed again (at most `MAX_ROUNDS`).
   Every answer of a family is read from the same final lattice, so they hide consistently.

What it does not do: it does not solve the linear system an attacker could build from many
relations at once (a suppressed cell can occasionally be pinned down by combining several
equations, or bounded to an interval), and it does not make answers over *different* period
ranges or region filters consistent with each other. Distinct counts are not additive across
cells; their margins here are the sums of the cells (an upper bound), which only makes the
suppression more cautious. A family larger than `FAMILY_LIMIT` finest cells is not built: the
answer is then protected on its own (its own lattice; `Protected.scope` = "answer"). `lone`
counts relations still open after the last round (0 in every test). Pure: no database, no network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from node.stats.cells import Cell, Key
from node.stats.family import TOTAL, Dimension, Family, dimensions_for

if TYPE_CHECKING:
    from node.stats.request import StatsRequest

__all__ = [
    "FAMILY_LIMIT",
    "PRIMARY",
    "SECONDARY",
    "WITHHELD",
    "Protected",
    "aggregate",
    "protect",
    "protect_in_family",
    "withhold",
]

PRIMARY = "primary"  # below the minimum cell size
SECONDARY = "secondary"  # hidden so that another hidden cell cannot be recovered by subtraction
WITHHELD = "withheld"  # blanked by the node that holds the records, before it left that node
# A withheld cell's records are in no margin this node can compute (the holder never sent
# them), so subtraction cannot recover it here: it needs no complement (the holder protected
# its own part before sending). Only primary and secondary cells are unknown terms.
_HIDING = frozenset({PRIMARY, SECONDARY})
MAX_ROUNDS = 20  # lattice recomputations when a relation forces a coarser margin hidden
FAMILY_LIMIT = 8_000  # finest cells above which an answer is protected on its own (~1 s)


@dataclass
class Protected:
    cells: dict[Key, Cell]
    lone: int = 0  # relations left with one unknown term after the last round (normally 0)
    tables: int = 0  # tables of the lattice processed
    scope: str = "family"  # "family" (consistent with every answer of it) or "answer"


class _Lattice:
    """The tables of one family, computed from its finest cells, coarsest first."""

    def __init__(self, fine: Mapping[Key, Cell], dims: Sequence[Dimension], min_cell: int):
        self.fine = fine
        self.dims = dims
        self.min_cell = min_cell
        self.chains: list[dict[str, list[str]]] = []
        self.steps: list[list[dict[str, str]]] = []  # [dim][level]: value -> value one level up
        self.memo: dict[tuple[int, ...], dict[Key, str]] = {}
        self.cells: dict[tuple[int, ...], dict[Key, Cell]] = {}
        self.structure: dict[
            tuple[int, ...],
            tuple[dict[tuple[int, Key], list[Key]], dict[Key, list[tuple[int, Key]]]],
        ] = {}
        self.forced: dict[tuple[int, ...], set[Key]] = {}  # margins hidden to close a relation
        self.lone: list[tuple[tuple[int, ...], Key]] = []
        for i, dim in enumerate(dims):
            chains: dict[str, list[str]] = {}
            for key in fine:
                value = key[i]
                if value in chains:
                    continue
                chain = [value]
                for level in range(dim.top):
                    last = level == len(dim.levels) - 1
                    chain.append(TOTAL if last else dim.up(chain[-1], level))
                chains[value] = chain
            self.chains.append(chains)
            steps: list[dict[str, str]] = [{} for _ in range(dim.top)]
            for chain in chains.values():
                for level in range(dim.top):
                    steps[level][chain[level]] = chain[level + 1]
            self.steps.append(steps)

    def solve(self, rounds: int = MAX_ROUNDS) -> None:
        """Every table's pattern. A relation that a table cannot close (its only published
        terms are margins, fixed in coarser tables) forces that margin hidden in its own table,
        and the lattice is computed again; at most `rounds` times."""
        finest = tuple(0 for _ in self.dims)
        for _ in range(rounds):
            self.memo.clear()
            self.lone = []
            self.pattern(finest)
            if not self.lone:
                return
            for table, key in self.lone:
                self.forced.setdefault(table, set()).add(key)

    def small(self, cell: Cell) -> str:
        if 0 < cell.n < self.min_cell or 0 < cell.distinct < self.min_cell:
            return PRIMARY
        if cell.n == 0 and cell.withheld > 0:
            return WITHHELD
        return ""

    def cells_at(self, table: tuple[int, ...]) -> dict[Key, Cell]:
        """The cells of `table`, summed from the table one step finer (cached: a table's
        cells do not change between rounds, only what is hidden)."""
        cached = self.cells.get(table)
        if cached is not None:
            return cached
        i = next((i for i, level in enumerate(table) if level), None)
        if i is None:
            out = dict(self.fine)
        else:
            finer = (*table[:i], table[i] - 1, *table[i + 1 :])
            step = self.steps[i][table[i] - 1]
            acc: dict[Key, list[int]] = {}
            for key, cell in self.cells_at(finer).items():
                a = acc.setdefault((*key[:i], step[key[i]], *key[i + 1 :]), [0, 0, 0, 0])
                a[0] += cell.n
                a[1] += cell.value
                a[2] += cell.distinct
                a[3] += cell.withheld
            out = {
                k: Cell(n=a[0], value=a[1], distinct=a[2], withheld=a[3]) for k, a in acc.items()
            }
        self.cells[table] = out
        return out

    def relations(
        self, table: tuple[int, ...]
    ) -> tuple[dict[tuple[int, Key], list[Key]], dict[Key, list[tuple[int, Key]]]]:
        """The relations of `table`: (dimension, key one step up) -> the children here, and
        for each cell the relations it is a child in (cached across rounds)."""
        cached = self.structure.get(table)
        if cached is not None:
            return cached
        cells = self.cells_at(table)
        relations: dict[tuple[int, Key], list[Key]] = {}
        member_of: dict[Key, list[tuple[int, Key]]] = {k: [] for k in cells}
        for i, dim in enumerate(self.dims):
            if table[i] >= dim.top:
                continue
            step = self.steps[i][table[i]]
            for key in cells:
                rel = (i, (*key[:i], step[key[i]], *key[i + 1 :]))
                relations.setdefault(rel, []).append(key)
                member_of[key].append(rel)
        self.structure[table] = (relations, member_of)
        return relations, member_of

    def pattern(self, table: tuple[int, ...]) -> dict[Key, str]:
        """Status of every cell of `table` (levels per dimension), coarser tables first."""
        done = self.memo.get(table)
        if done is not None:
            return done
        cells = self.cells_at(table)
        forced = self.forced.get(table, set())
        status = {
            k: self.small(c) or (SECONDARY if k in forced and c.n > 0 else "")
            for k, c in cells.items()
        }
        relations, member_of = self.relations(table)
        margins: dict[tuple[int, Key], bool] = {}
        for i, dim in enumerate(self.dims):
            if table[i] < dim.top:
                coarse_status = self.pattern((*table[:i], table[i] + 1, *table[i + 1 :]))
                hidden_above = {k for k, v in coarse_status.items() if v in _HIDING}
                for rel in relations:
                    if rel[0] == i:
                        margins[rel] = rel[1] in hidden_above

        def cost(m: Key, rel: tuple[int, Key]) -> tuple[int, int, int, Key]:
            # prefer a cell that is not the only child of a published margin along another
            # dimension: hiding that one would open a relation this table cannot close
            strands = any(
                other != rel and len(relations[other]) == 1 and not margins[other]
                for other in member_of[m]
            )
            return (int(strands), cells[m].n, abs(cells[m].value), m)

        # only relations with an unknown term can have exactly one
        todo = [rel for rel, hidden in margins.items() if hidden]
        todo += [rel for k, v in status.items() if v in _HIDING for rel in member_of[k]]
        todo.reverse()
        queued = set(todo)
        while todo:
            rel = todo.pop()
            queued.discard(rel)
            members = relations[rel]
            unknown = int(margins[rel]) + sum(1 for m in members if status[m] in _HIDING)
            if unknown != 1:
                continue
            candidates = [m for m in members if not status[m] and cells[m].n > 0]
            if not candidates:  # only the margin is left to hide: its table must do it
                i = rel[0]
                self.lone.append(((*table[:i], table[i] + 1, *table[i + 1 :]), rel[1]))
                continue
            chosen = min(candidates, key=lambda m, r=rel: cost(m, r))  # type: ignore[misc]
            status[chosen] = SECONDARY
            for other in member_of[chosen]:
                if other not in queued:
                    queued.add(other)
                    todo.append(other)
        self.memo[table] = status
        return status


def protect(
    cells: Mapping[Key, Cell],
    dims: Sequence[Dimension],
    min_cell: int,
) -> Protected:
    """`cells` with `suppressed` set, the answer being its own family (no other answer is
    taken into account): primary, secondary or withheld."""
    lattice = _Lattice(cells, dims, min_cell)
    lattice.solve()
    status = lattice.memo[tuple(0 for _ in dims)]
    out = {k: replace(c, suppressed=status.get(k, "")) for k, c in cells.items()}
    return Protected(out, len(lattice.lone), len(lattice.memo), "answer")


def protect_in_family(
    cells: Mapping[Key, Cell],
    request: StatsRequest,
    family: Family,
    family_cells: Mapping[Key, Cell],
    min_cell: int,
) -> Protected:
    """An answer's cells with `suppressed` set from its family's lattice, so that no answer of
    the family (other levels, grains, dimensions) lets a hidden cell be recovered. Above
    `FAMILY_LIMIT` finest cells the answer is protected on its own (`scope` "answer")."""
    if len(family_cells) > FAMILY_LIMIT:
        return protect(cells, dimensions_for(request, family.kind, family.regions), min_cell)
    lattice = _Lattice(family_cells, family.dims, min_cell)
    lattice.solve()
    table = family.table_of(request)
    status = lattice.memo.get(table) or lattice.pattern(table)
    out = {}
    for key, cell in cells.items():
        mine = status.get(family.key_of(request, key), "")
        # The answer's own cell decides primary and withheld (a distinct count is not the sum
        # of the family's, and a holder may send a whole total whose finer cells it withheld);
        # the family decides what is hidden to protect other cells.
        own = lattice.small(cell)
        out[key] = replace(cell, suppressed=own or (mine if mine in _HIDING else ""))
    return Protected(out, len(lattice.lone), len(lattice.memo), "family")


def aggregate(
    family: Family, family_cells: Mapping[Key, Cell], request: StatsRequest
) -> dict[Key, Cell]:
    """The cells of `request` summed from its family's finest cells (counts and sums only)."""
    lattice = _Lattice(family_cells, family.dims, 1)
    table = family.table_of(request)
    positions = [i for i, d in enumerate(family.dims) if d.name in request.by]
    order = [request.by.index(family.dims[i].name) for i in positions]
    out: dict[Key, Cell] = {}
    for key, cell in lattice.cells_at(table).items():
        values = [key[i] for i in positions]
        answer_key = tuple(v for _, v in sorted(zip(order, values, strict=True)))
        out[answer_key] = cell
    return dict(sorted(out.items()))


def withhold(cells: Mapping[Key, Cell], protected: Protected) -> dict[Key, Cell]:
    """Blank every cell that `protected` hides, before the cells leave the node holding the
    records (a small distinct-count sketch lists hashed identifiers: dropped with its cell)."""
    out = {}
    for key, cell in cells.items():
        if protected.cells[key].suppressed:
            out[key] = Cell(0, 0, 0, None, cell.estimated, cell.withheld + 1)
        else:
            out[key] = cell
    return out
