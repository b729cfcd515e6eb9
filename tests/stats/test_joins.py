"""Indicators that read a second record type: injury recognitions (I5) by their employer's
industry section, joined on the employer's natural key (uscc). Known answers on SQLite and
PostgreSQL; the release keeps the link through its canonical bytes; bad links fail the build."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from hierarchy_config.standards import default_release
from hierarchy_config.standards.indicators import check_indicators, indicator_from_json
from hierarchy_config.standards.model import InvalidStandards, Release
from node.db import Database
from node.stats.compute import compute_part_txn, labels_for
from node.stats.request import StatsRequest
from tests.stats.helpers import Rows, person_id

RELEASE = default_release()
I5 = RELEASE.indicators["injury_recognitions"]


@pytest.fixture
def db(database_for: Callable[[str], str]) -> Iterator[Database]:
    database = Database(database_for("330000"))
    database.migrate()
    yield database
    database.close()


def employer(uscc: str, industry: str, region: str) -> dict[str, str]:
    return {"uscc": uscc, "name": uscc, "industry": industry, "region": region}


def injury(n: int, uscc: str, region: str, conclusion: str = "1") -> dict[str, str]:
    return {
        "decision_no": f"D{n}",
        "person_id": person_id(n),
        "uscc": uscc,
        "accident_date": "2025-01-02",
        "injury_kind": "1",
        "conclusion": conclusion,
        "decision_date": "2025-03-01",
        "region": region,
    }


def seed(db: Database) -> None:
    rows = Rows()
    rows.add("employer", "330100", "U1", employer("U1", "C1310", "330106"))  # manufacturing
    rows.add("employer", "330200", "U2", employer("U2", "F5110", "330203"))  # trade, elsewhere
    rows.add("employer", "330100", "U3", employer("U3", "C2610", "330106"))
    rows.add("employer", "330200", "U3", employer("U3", "C2610", "330106"))  # a second copy
    n = 0
    for uscc, count, region in (("U1", 3, "330106"), ("U2", 2, "330106"), ("U3", 1, "330203")):
        for _ in range(count):
            n += 1
            rows.add("injury_recognition", "330100", f"D{n}", injury(n, uscc, region))
    rows.add("injury_recognition", "330100", "D90", injury(90, "U9", "330106"))  # no employer
    rows.add("injury_recognition", "330100", "D91", injury(91, "U1", "330106", "3"))  # not 工伤
    rows.add("injury_recognition", "330100", "D92", injury(92, "U1", "330106"), deleted=True)
    rows.write(db)


def run(
    db: Database, by: str, level: str | None = None, owner: str | None = None
) -> dict[tuple[str, ...], int]:
    request = StatsRequest.parse("injury_recognitions", by, "2025", None, level)
    part = db.read_sync(compute_part_txn, RELEASE, I5, request, owner, False)
    return {k: c.n for k, c in part.cells.items()}


def test_injuries_by_employer_industry(db: Database) -> None:
    seed(db)
    # U3 is held twice (two owners): counted once; U9 has no employer here: industry "".
    assert run(db, "industry") == {("C",): 4, ("F",): 2, ("",): 1}
    assert run(db, "region,industry", "prefecture") == {
        ("330100", ""): 1,
        ("330100", "C"): 3,
        ("330100", "F"): 2,
        ("330200", "C"): 1,
    }
    assert run(db, "industry,injury_kind") == {("C", "1"): 4, ("F", "1"): 2, ("", "1"): 1}
    # a node's own part still finds a partner another node owns, if it holds a copy
    assert run(db, "industry", owner="330100") == {("C",): 4, ("F",): 2, ("",): 1}
    # without the linked dimension, no join (and the same total)
    assert run(db, "injury_kind") == {("1",): 7}
    labels = labels_for(RELEASE, I5, ("industry",), {("C",): None, ("F",): None})
    assert labels["industry"]["C"] == "制造业"


def test_the_link_survives_the_release_bytes_and_bad_links_fail() -> None:
    again = Release.from_bytes(RELEASE.to_bytes())
    assert again.indicators["injury_recognitions"] == I5
    assert I5.dimensions[1].via == "employer" and I5.dimensions[1].on == "uscc"
    doc = {
        "title": "t",
        "kind": "flow",
        "record_type": "injury_recognition",
        "measure": {"kind": "count"},
        "region_field": "region",
        "period_field": "decision_date",
        "dimensions": [{"name": "industry", "field": "industry", "via": "employer", "on": "x"}],
    }
    for via, on, why in (("employer", "x", "'x' is not a field"), ("nobody", "uscc", "'via'")):
        doc["dimensions"] = [{"name": "industry", "field": "industry", "via": via, "on": on}]
        bad = indicator_from_json("bad", doc, "bad")
        with pytest.raises(InvalidStandards, match=why):
            check_indicators({"bad": bad}, RELEASE.schemas, RELEASE.tables, {})
