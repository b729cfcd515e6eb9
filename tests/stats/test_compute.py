"""Indicators computed in the database on hand-made data with known answers (SQLite and
PostgreSQL): flows, stocks at period end, tombstones, region levels, distinct counts,
duplicates across owners, sums in exact minor units, ratios, minimum cell size."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest

from hierarchy_config.standards import default_release
from node.db import Database
from node.stats.cells import Partial, suppress_small
from node.stats.compute import compute_part_txn, ratio_cells
from node.stats.request import StatsError, StatsRequest
from tests.stats.helpers import Rows, person_id

RELEASE = default_release()


@pytest.fixture
def db(database_for: Callable[[str], str]) -> Iterator[Database]:
    database = Database(database_for("330000"))
    database.migrate()
    yield database
    database.close()


def run(
    db: Database,
    indicator: str,
    by: str,
    period: str,
    region: str | None = None,
    level: str | None = None,
    owner: str | None = None,
    sketch: bool = False,
) -> Partial:
    request = StatsRequest.parse(indicator, by, period, region, level)
    ind = RELEASE.indicators[indicator]
    return db.read_sync(compute_part_txn, RELEASE, ind, request, owner, sketch)


def contribution(
    n: int, region: str, paid: str, unit: str, personal: str, itype: str = "110"
) -> dict[str, str]:
    return {
        "person_id": person_id(n),
        "insurance_type": itype,
        "fee_month": paid[:4] + paid[5:7],
        "contribution_type": "10",
        "unit_amount": unit,
        "personal_amount": personal,
        "paid_date": paid,
        "agency_region": region,
    }


def seed_contributions(db: Database) -> None:
    rows = Rows()
    for i in range(6):  # Hangzhou, January: 6 x 120.75
        rows.add(
            "contribution",
            "330100",
            f"c1-{i}",
            contribution(i, "330106", "2025-01-15", "100.50", "20.25"),
        )
    for i in range(5):  # Hangzhou, February: 5 x 10.01
        rows.add(
            "contribution",
            "330100",
            f"c2-{i}",
            contribution(i, "330102", "2025-02-03", "10.00", "0.01"),
        )
    rows.add(  # a refund (negative) in January
        "contribution",
        "330100",
        "c-refund",
        contribution(9, "330106", "2025-01-20", "-0.75", "0.00"),
    )
    rows.add(  # tombstone: never counted
        "contribution",
        "330100",
        "c-dead",
        contribution(8, "330106", "2025-01-16", "999.00", "1.00"),
        deleted=True,
    )
    rows.add(  # outside the range
        "contribution", "330100", "c-old", contribution(7, "330106", "2024-12-31", "5.00", "5.00")
    )
    for i in range(3):  # Ningbo (replicated copy held here), January: 3 x 1.00
        rows.add(
            "contribution",
            "330200",
            f"n-{i}",
            contribution(i, "330203", "2025-01-02", "1.00", "0.00"),
        )
    rows.write(db)


def test_flow_sum_by_region_and_period(db: Database) -> None:
    seed_contributions(db)
    part = run(
        db, "contributions_collected", "region,period", "2025-01..2025-02", level="prefecture"
    )
    assert part.scale == 2
    assert {k: (c.n, c.value) for k, c in part.cells.items()} == {
        ("330100", "2025-01"): (7, 6 * 12075 - 75),
        ("330100", "2025-02"): (5, 5 * 1001),
        ("330200", "2025-01"): (3, 300),
    }
    total = run(db, "contributions_collected", "", "2025-01..2025-02")
    assert {k: c.value for k, c in total.cells.items()} == {(): 6 * 12075 - 75 + 5 * 1001 + 300}


def test_quarter_and_year_grains_and_region_filter(db: Database) -> None:
    seed_contributions(db)
    q = run(db, "contributions_collected", "period", "2025Q1")
    assert {k: c.n for k, c in q.cells.items()} == {("2025Q1",): 15}
    y = run(
        db,
        "contributions_collected",
        "region,period",
        "2024..2025",
        region="330100",
        level="county",
    )
    assert {k: c.n for k, c in y.cells.items()} == {
        ("330106", "2024"): 1,
        ("330106", "2025"): 7,
        ("330102", "2025"): 5,
    }
    owned = run(db, "contributions_collected", "", "2025", owner="330200")
    assert {k: c.value for k, c in owned.cells.items()} == {(): 300}


def enrollment(
    n: int, region: str, enrolled: str, status: str = "1", status_date: str | None = None
) -> dict[str, str]:
    out = {
        "person_id": person_id(n),
        "insurance_type": "110",
        "agency_region": region,
        "enroll_date": enrolled,
        "status": status,
    }
    if status_date:
        out["status_date"] = status_date
    return out


def seed_enrollments(db: Database) -> None:
    rows = Rows()
    for i in range(10):  # Hangzhou: persons 0-9 enrolled in 2024
        rows.add("insurance_enrollment", "330100", f"h{i}", enrollment(i, "330106", "2024-03-01"))
    # person 10 enrolled in Hangzhou in March 2025 only
    rows.add("insurance_enrollment", "330100", "h10", enrollment(10, "330106", "2025-03-10"))
    # person 11 stopped (status 3) on 2025-02-10: insured at January's end, not at February's
    rows.add(
        "insurance_enrollment",
        "330100",
        "h11",
        enrollment(11, "330106", "2024-01-01", "3", "2025-02-10"),
    )
    # persons 0-5 ALSO enrolled in Ningbo (duplicate enrolment), 6 persons
    for i in range(6):
        rows.add("insurance_enrollment", "330200", f"n{i}", enrollment(i, "330203", "2024-06-01"))
    rows.add(
        "insurance_enrollment",
        "330200",
        "gone",
        enrollment(30, "330203", "2024-06-01"),
        deleted=True,
    )
    rows.write(db)


def test_stock_taken_at_each_period_end(db: Database) -> None:
    seed_enrollments(db)
    part = run(db, "insured_persons", "region,period", "2025-01..2025-03", level="prefecture")
    assert {k: c.value for k, c in part.cells.items()} == {
        ("330100", "2025-01"): 11,
        ("330100", "2025-02"): 10,
        ("330100", "2025-03"): 11,
        ("330200", "2025-01"): 6,
        ("330200", "2025-02"): 6,
        ("330200", "2025-03"): 6,
    }
    # without a time axis a stock is its value at the end of the range (not a sum over time)
    whole = run(db, "insured_persons", "", "2025-01..2025-02")
    assert {k: c.value for k, c in whole.cells.items()} == {(): 10}  # persons, not 16 enrolments


def test_duplicate_enrolment_across_owners(db: Database) -> None:
    seed_enrollments(db)
    part = run(db, "duplicate_enrolment", "insurance_type", "2025-03")
    assert {k: c.value for k, c in part.cells.items()} == {("110",): 6}
    by_city = run(db, "duplicate_enrolment", "region", "2025-03", level="prefecture")
    assert by_city.cells == {}  # within one city nobody is enrolled twice
    sketched = run(db, "insured_persons", "", "2025-03", owner="330200", sketch=True)
    cell = sketched.cells[()]
    assert (cell.value, cell.distinct) == (6, 6) and cell.sketch


def test_min_cell_suppression(db: Database) -> None:
    seed_contributions(db)
    part = run(db, "contributions_collected", "region", "2025-01", level="prefecture")
    shown = suppress_small(part.cells, 5)
    assert not shown[("330100",)].suppressed
    assert shown[("330200",)].suppressed  # 3 records < 5


def test_ratio_from_summed_parts(db: Database) -> None:
    rows = Rows()
    reports = [
        ("330106", "C", "600000.00", "10"),
        ("330102", "C", "150000.00", "5"),
        ("330203", "I", "90000.00", "1"),
    ]
    for n, (region, industry, wages, employees) in enumerate(reports):
        rows.add(
            "employer_wage_report",
            "330100",
            f"w{n}",
            {
                "uscc": f"u{n}",
                "period": "2025",
                "industry": industry,
                "region": region,
                "avg_employees": employees,
                "wage_total": wages,
            },
        )
    rows.write(db)
    num = run(db, "wage_total", "region", "2025", level="prefecture")
    den = run(db, "wage_employees", "region", "2025", level="prefecture")
    ratio = ratio_cells(num.cells, den.cells, (num.scale, den.scale), 1)
    # (600000 + 150000) / (10 + 5) = 50000, not the mean of 60000 and 30000
    assert ratio[("330100",)][0] == Decimal("50000.00")
    assert ratio[("330200",)][0] == Decimal("90000.00")
    with pytest.raises(StatsError, match="per year"):
        run(db, "wage_total", "period", "2025-01")


def test_bad_requests() -> None:
    with pytest.raises(StatsError, match="not a period"):
        StatsRequest.parse("x", "", "January", None, None)
    with pytest.raises(StatsError, match="before it starts"):
        StatsRequest.parse("x", "", "2025-03..2025-01", None, None)
    with pytest.raises(StatsError, match="6-digit"):
        StatsRequest.parse("x", "", "2025", "33", None)
    assert StatsRequest.parse("x", "region", "2025", "330000", None).region_level == "prefecture"
