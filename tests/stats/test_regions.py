"""Region roll-up exceptions of domain.md §1.2, taken from the release's CT_ADMIN_DIV table:
municipalities, county-level units administered by the province, development zones. Known
answers in Python, and the SQL roll-up agrees with the Python one for every code of the table
(SQLite and PostgreSQL)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Connection

from hierarchy_config.standards import default_release
from hierarchy_config.standards.model import CodeEntry, CodeTable
from node.db import Database
from node.stats.compute import compute_part_txn
from node.stats.query import build_query
from node.stats.regions import RegionRollup, rollup_for
from node.stats.request import StatsRequest
from tests.stats.helpers import Rows, person_id

RELEASE = default_release()
ROLLUP = rollup_for(RELEASE)


@pytest.mark.parametrize(
    ("code", "prefecture", "province"),
    [
        ("330106", "330100", "330000"),  # ordinary district
        ("110105", "110000", "110000"),  # Beijing district: the municipality, not 110100 市辖区
        ("110229", "110000", "110000"),  # former Beijing county (pseudo-prefecture 110200 县)
        ("500101", "500000", "500000"),  # Chongqing
        ("429004", "429004", "420000"),  # 仙桃市, administered by Hubei: no prefecture
        ("659001", "659001", "650000"),  # 石河子市, administered by Xinjiang
        ("460001", "460001", "460000"),  # Hainan 1988-2002: parent is the province itself
        ("130181", "130100", "130000"),  # county-level city (81-89): an ordinary unit
        ("130171", "130100", "130000"),  # NBS development zone: not in the table, its prefecture
        ("330000", "330000", "330000"),  # provincial bodies stay the province
    ],
)
def test_known_roll_ups(code: str, prefecture: str, province: str) -> None:
    assert ROLLUP.key(code, "county") == code
    assert ROLLUP.key(code, "prefecture") == prefecture
    assert ROLLUP.key(code, "province") == province


def test_exceptions_come_from_the_code_table() -> None:
    assert ROLLUP.municipalities == {"11", "12", "31", "50"}
    assert {"4190", "4290", "4690", "6590", "4600"} <= ROLLUP.direct_prefixes
    assert not any(p[:2] in ROLLUP.municipalities for p in ROLLUP.direct_prefixes)
    # A table that says otherwise is followed: no municipality, one directly administered group.
    table = CodeTable(
        "CT_ADMIN_DIV",
        "t",
        "GB/T 2260",
        False,
        (
            CodeEntry("110000", "北京市", None, 1),
            CodeEntry("110100", "北京市", "110000", 2),
            CodeEntry("110105", "朝阳区", "110100", 3),
            CodeEntry("420000", "湖北省", None, 1),
            CodeEntry("429000", "省直辖县级行政单位", "420000", 2),
            CodeEntry("429004", "仙桃市", "429000", 3),
        ),
    )
    other = RegionRollup.from_table(table)
    assert other.municipalities == frozenset() and other.direct_prefixes == {"4290"}
    assert other.key("110105", "prefecture") == "110100"


@pytest.fixture
def db(database_for: Callable[[str], str]) -> Iterator[Database]:
    database = Database(database_for("100000"))
    database.migrate()
    yield database
    database.close()


def test_sql_roll_up_matches_python_for_every_code(db: Database) -> None:
    table = RELEASE.table("CT_ADMIN_DIV")
    assert table is not None
    codes = sorted(table.codes | {"130171", "330171"})
    rows = Rows()
    for n, code in enumerate(codes):
        rows.add(
            "contribution",
            "100000",
            f"c{n}",
            {
                "person_id": person_id(n),
                "insurance_type": "110",
                "fee_month": "202501",
                "contribution_type": "10",
                "unit_amount": "1.00",
                "personal_amount": "0.00",
                "paid_date": "2025-01-15",
                "agency_region": code,
            },
        )
    rows.write(db)
    ind = RELEASE.indicators["contributions_collected"]
    for level in ("province", "prefecture", "county"):
        request = StatsRequest.parse("contributions_collected", "region", "2025-01", None, level)
        part = db.read_sync(compute_part_txn, RELEASE, ind, request, None, False)
        got = {k[0]: c.n for k, c in part.cells.items()}
        assert got == dict(Counter(ROLLUP.key(c, level) for c in codes)), level
    # The SQL CASE itself (used for distinct counts; counts and sums are grouped by county
    # and added up in Python), at the prefecture level, nationally and within Hubei.
    schema = RELEASE.schemas["contribution"]
    for scope in (None, "420000"):
        request = StatsRequest.parse(
            "contributions_collected", "region", "2025-01", scope, "prefecture"
        )

        def keys(conn: Connection, request: StatsRequest = request) -> Counter[str]:
            q = build_query(ind, schema, request, conn.dialect.name, regions=ROLLUP)
            return Counter({row[0]: row.n for row in conn.execute(q.statement)})

        inside = [c for c in codes if scope is None or c.startswith(scope[:2])]
        assert db.read_sync(keys) == Counter(ROLLUP.key(c, "prefecture") for c in inside)
    # Within one province (the CASE then only carries that province's exceptions).
    request = StatsRequest.parse("contributions_collected", "region", "2025-01", "420000", None)
    part = db.read_sync(compute_part_txn, RELEASE, ind, request, None, False)
    hubei = [c for c in codes if c.startswith("42")]
    assert {k[0]: c.n for k, c in part.cells.items()} == dict(
        Counter(ROLLUP.key(c, "prefecture") for c in hubei)
    )
