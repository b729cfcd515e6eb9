"""Secondary (complementary) suppression: a hidden cell can never be recovered by one subtraction.

Unit cases with known patterns, then an attacker: on SQLite and PostgreSQL, contributions with
planted small cells (a county with 3 records, a prefecture with one small county, a directly
administered county, a municipality, single months and insurance types) are asked for in every
combination of dimensions, region levels and period grains a user can ask for; the attacker
then tries every single-subtraction attack (a published margin minus its published children, or
a hidden margin from its published children) across every pair of answers one step apart. With
primary suppression only, attacks succeed (the test is able to find them); with disclosure
control, none does."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from itertools import product
from typing import Any

import pytest

from hierarchy_config.standards import default_release
from node.db import Database
from node.stats.cells import Cell, suppress_small
from node.stats.compute import compute_part_txn, compute_with_family_txn
from node.stats.disclosure import protect, protect_in_family, withhold
from node.stats.family import Dimension, dimensions_for, family_of
from node.stats.regions import rollup_for
from node.stats.request import StatsRequest
from tests.stats.helpers import Rows, person_id

RELEASE = default_release()
ROLLUP = rollup_for(RELEASE)
MIN = 5


def flat(values: dict[str, int]) -> dict[tuple[str, ...], Cell]:
    return {(k,): Cell(n, n * 10) for k, n in values.items()}


def statuses(cells: dict[tuple[str, ...], Cell]) -> dict[str, str]:
    return {k[0]: c.suppressed for k, c in cells.items() if c.suppressed}


def test_one_small_cell_takes_the_next_smallest_with_it() -> None:
    dim = [Dimension("insurance_type", ("insurance_type",))]
    out = protect(flat({"110": 3, "210": 20, "310": 9, "410": 40}), dim, MIN)
    assert statuses(out.cells) == {"110": "primary", "310": "secondary"}
    assert out.lone == 0
    # two small cells protect each other; no small cell: nothing hidden
    assert statuses(protect(flat({"a": 3, "b": 2, "c": 50}), dim, MIN).cells) == {
        "a": "primary",
        "b": "primary",
    }
    assert statuses(protect(flat({"a": 30, "b": 20}), dim, MIN).cells) == {}
    # a total below the minimum is itself hidden, so its only small child needs no partner
    assert statuses(protect(flat({"a": 3}), dim, MIN).cells) == {"a": "primary"}


def test_region_tree_counties_within_prefectures() -> None:
    request = StatsRequest.parse("contributions_collected", "region", "2025", "330000", "county")
    dims = dimensions_for(request, "flow", ROLLUP)
    cells = flat({"330102": 3, "330105": 30, "330106": 40, "330203": 50, "330205": 60})
    got = statuses(protect(cells, dims, MIN).cells)
    # Hangzhou: 330102 is small; its next-smallest sibling goes too. Ningbo is untouched
    # (the prefecture totals are both published, so no relation at the province level opens).
    assert got == {"330102": "primary", "330105": "secondary"}


def test_lone_county_in_its_prefecture_hides_a_neighbouring_prefecture() -> None:
    # 330302 is the only county of 330300 in the answer and is small, so the prefecture 330300
    # is small too: at the prefecture level it needs a partner (330100, the smaller neighbour),
    # and at the county level 330100's counties must not add up to it, so its smallest county
    # is hidden as well (330100 = 330102 + 330105 then has two unknown terms).
    request = StatsRequest.parse("contributions_collected", "region", "2025", "330000", "county")
    dims = dimensions_for(request, "flow", ROLLUP)
    cells = flat({"330302": 2, "330102": 30, "330105": 40, "330203": 50, "330205": 60})
    got = statuses(protect(cells, dims, MIN).cells)
    assert got == {"330302": "primary", "330102": "secondary"}


def test_municipality_and_directly_administered_counties() -> None:
    request = StatsRequest.parse("contributions_collected", "region", "2025", None, "prefecture")
    dims = dimensions_for(request, "flow", ROLLUP)
    # Hubei: 420100 (a prefecture) and two county-level units it administers directly.
    cells = flat({"420100": 50, "429004": 3, "429005": 20, "110000": 80, "330100": 90})
    got = statuses(protect(cells, dims, MIN).cells)
    assert got == {"429004": "primary", "429005": "secondary"}


def test_stock_periods_are_not_added_up() -> None:
    request = StatsRequest.parse("insured_persons", "period", "2025-01..2025-03", None, None)
    dims = dimensions_for(request, "stock", ROLLUP)
    cells = flat({"2025-01": 3, "2025-02": 30, "2025-03": 40})
    assert statuses(protect(cells, dims, MIN).cells) == {"2025-01": "primary"}
    flow = dimensions_for(request, "flow", ROLLUP)
    assert statuses(protect(cells, flow, MIN).cells) == {
        "2025-01": "primary",
        "2025-02": "secondary",
    }


def test_withheld_cells_are_blanked_with_their_complements() -> None:
    dim = [Dimension("insurance_type", ("insurance_type",))]
    cells = flat({"110": 3, "210": 20, "310": 9})
    out = withhold(cells, protect(cells, dim, MIN))
    assert out[("110",)] == Cell(0, 0, withheld=1) and out[("310",)] == Cell(0, 0, withheld=1)
    assert out[("210",)].n == 20 and not out[("210",)].suppressed
    # at the querying node a withheld cell is in no margin: it needs no complement there
    assert statuses(protect(out, dim, MIN).cells) == {"110": "withheld", "310": "withheld"}


def test_a_family_too_large_is_protected_answer_by_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    import node.stats.disclosure as disclosure

    request = StatsRequest.parse("contributions_collected", "region", "2025", "330000", "county")
    ind = RELEASE.indicators["contributions_collected"]
    family = family_of(request, ind.dimension_names, ind.kind, False, ROLLUP)
    cells = flat({"330102": 3, "330105": 30, "330106": 40})
    fine = {(k[0], "2025-01", "110", "10"): c for k, c in cells.items()}
    whole = protect_in_family(cells, request, family, fine, MIN)
    assert whole.scope == "family" and statuses(whole.cells) == {
        "330102": "primary",
        "330105": "secondary",
    }
    monkeypatch.setattr(disclosure, "FAMILY_LIMIT", 2)
    alone = protect_in_family(cells, request, family, fine, MIN)
    assert alone.scope == "answer" and statuses(alone.cells) == statuses(whole.cells)


# --- the attacker, on a real database -------------------------------------------------------

COUNTIES = (
    "330102",
    "330105",
    "330106",
    "330203",
    "330205",
    "330302",  # the only county of 330300 here
    "110101",
    "110105",  # Beijing districts: the municipality is the prefecture-level unit
    "420102",
    "429004",
    "429005",  # Hubei: one prefecture and two directly administered county-level units
)
TYPES = ("110", "210")
MONTHS = tuple(f"2025-{m:02d}" for m in range(1, 13))
DIMS = ("region", "period", "insurance_type")
LEVELS = ("county", "prefecture", "province")
GRAINS = {"month": "2025-01..2025-12", "quarter": "2025Q1..2025Q4", "year": "2025"}


@pytest.fixture
def db(database_for: Callable[[str], str]) -> Iterator[Database]:
    database = Database(database_for("100000"))
    database.migrate()
    yield database
    database.close()


def seed(db: Database, seed: int = 7) -> None:
    rng = random.Random(seed)
    rows = Rows()
    n = 0
    for county, itype, month in product(COUNTIES, TYPES, MONTHS):
        if county == "330302":  # 3 records in the whole year: small at every level
            count = 1 if month in ("2025-02", "2025-07", "2025-11") and itype == "110" else 0
        else:
            count = rng.choice((0, 1, 2, 4, 5, 6, 8, 9, 12))
        for _ in range(count):
            n += 1
            rows.add(
                "contribution",
                "100000",
                f"c{n}",
                {
                    "person_id": person_id(n),
                    "insurance_type": itype,
                    "fee_month": month.replace("-", ""),
                    "contribution_type": "10",
                    "unit_amount": f"{100 + rng.randrange(900)}.{rng.randrange(100):02d}",
                    "personal_amount": "20.00",
                    "paid_date": f"{month}-{1 + rng.randrange(28):02d}",
                    "agency_region": county,
                },
            )
    rows.write(db)


Answer = dict[tuple[tuple[str, str], ...], tuple[str, int, int]]  # canonical key -> (status, n, v)


def ask(db: Database, by: tuple[str, ...], level: str, grain: str, secondary: bool) -> Answer:
    period = GRAINS[grain] if "period" in by else "2025"
    request = StatsRequest.parse("contributions_collected", by, period, None, level)
    ind = RELEASE.indicators["contributions_collected"]
    if secondary:  # what `StatsService.run` does with every answer
        family = family_of(request, ind.dimension_names, ind.kind, False, ROLLUP)
        part, fam = db.read_sync(
            compute_with_family_txn, RELEASE, ind, request, family, None, False
        )
        direct = db.read_sync(compute_part_txn, RELEASE, ind, request, None, False)
        same = {k: (c.n, c.value) for k, c in direct.cells.items()}
        assert {k: (c.n, c.value) for k, c in part.cells.items()} == same  # summed = SQL
        protected = protect_in_family(part.cells, request, family, fam.cells, MIN)
        assert protected.lone == 0 and protected.scope == "family"
        cells = protected.cells
    else:
        cells = suppress_small(
            db.read_sync(compute_part_txn, RELEASE, ind, request, None, False).cells, MIN
        )
    return {
        tuple(zip(by, key, strict=True)): (c.suppressed, c.n, c.value) for key, c in cells.items()
    }


def up(dim: str, value: str, level: str) -> str | None:
    """One step up: the coarser value, or None when the step drops the dimension."""
    if dim == "region":
        return None if level == "province" else ROLLUP.key(value, LEVELS[LEVELS.index(level) + 1])
    if dim == "period":
        if level == "month":
            return f"{value[:4]}Q{(int(value[5:7]) + 2) // 3}"
        return None if level == "year" else value[:4]
    return None


def attacks(db: Database, secondary: bool) -> list[str]:
    """Every single-subtraction attack that recovers a hidden cell; empty if none works."""
    answers: dict[tuple[tuple[str, ...], str, str], Answer] = {}
    for r in range(len(DIMS) + 1):
        for by in (tuple(d for d in DIMS if d in c) for c in _subsets(r)):
            for level in LEVELS if "region" in by else ("province",):
                for grain in GRAINS if "period" in by else ("year",):
                    answers[(by, level, grain)] = ask(db, by, level, grain, secondary)
    found: list[str] = []
    for (by, level, grain), fine in answers.items():
        for dim in by:
            at = level if dim == "region" else grain if dim == "period" else ""
            coarse_by, coarse_level, coarse_grain = by, level, grain
            if up(dim, "330102" if dim == "region" else "2025-01", at) is None:
                coarse_by = tuple(d for d in by if d != dim)
                coarse_level = level if "region" in coarse_by else "province"
                coarse_grain = grain if "period" in coarse_by else "year"
            elif dim == "region":
                coarse_level = LEVELS[LEVELS.index(level) + 1]
            else:
                coarse_grain = "quarter" if grain == "month" else "year"
            coarse = answers[(coarse_by, coarse_level, coarse_grain)]
            children: dict[tuple[tuple[str, str], ...], list[Any]] = {}
            for key, cell in fine.items():
                parent = tuple(
                    (d, v if d != dim else str(up(d, v, at))) for d, v in key if d in coarse_by
                )
                children.setdefault(parent, []).append((key, cell))
            for parent, kids in children.items():
                total = coarse[parent]
                hidden = [k for k, c in kids if c[0] in ("primary", "secondary")]
                if total[0]:
                    if not hidden:  # a hidden margin = the sum of its published children
                        found.append(f"{parent} from its children in {by}/{level}/{grain}")
                elif len(hidden) == 1:  # a hidden child = the margin minus the others
                    value = total[2] - sum(c[2] for k, c in kids if k != hidden[0])
                    assert value == fine[hidden[0]][2]  # the attack really recovers it
                    found.append(f"{hidden[0]} = {parent} - siblings in {by}/{level}/{grain}")
    return found


def _subsets(r: int) -> list[tuple[str, ...]]:
    from itertools import combinations

    return list(combinations(DIMS, r))


@pytest.mark.parametrize("data_seed", [7, 23, 42])
def test_no_single_subtraction_recovers_a_hidden_cell(db: Database, data_seed: int) -> None:
    seed(db, data_seed)
    assert attacks(db, secondary=False), "primary suppression alone should be attackable"
    assert attacks(db, secondary=True) == []
