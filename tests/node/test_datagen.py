"""Unit tests for node.datagen: generated records are valid, distinct and deterministic."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from stdnum.cn import ric, uscc

from node.datagen import (
    generate_records,
    generate_tombstones,
    generate_updates,
    id_check_char,
    org_code_check_char,
    uscc_check_char,
)
from node.records import validate_record

ORDER = ("employer", "person", "insurance_enrollment", "contribution")


@pytest.fixture(scope="module")
def hangzhou() -> list[dict[str, object]]:
    return generate_records("330100", 2000, seed=7)


def test_check_characters_match_the_standard_vectors() -> None:
    assert id_check_char("11010519491231002") == "X"
    assert id_check_char("36042619910101007") == "1"
    assert org_code_check_char("60003734") == "1"
    assert uscc_check_char("91110000600037341") == "L"


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 17, 100])
def test_exactly_n(n: int) -> None:
    records = generate_records("330100", n)
    assert len(records) == n
    for record in records:
        validate_record(record)


def test_all_valid_distinct_and_json_able(hangzhou: list[dict[str, object]]) -> None:
    valid = [validate_record(r) for r in hangzhou]
    assert len({(v.record_type, v.key) for v in valid}) == len(hangzhou)
    assert json.loads(json.dumps(hangzhou)) == hangzhou
    assert not any(isinstance(v, float) for r in hangzhou for v in r.values())


def test_mix_and_dependency_order(hangzhou: list[dict[str, object]]) -> None:
    kinds = [str(r["type"]) for r in hangzhou]
    assert kinds == sorted(kinds, key=ORDER.index)
    counts = Counter(kinds)
    assert all(counts[k] > 0 for k in ORDER)
    assert counts["contribution"] > counts["insurance_enrollment"] > counts["person"]
    assert counts["person"] > counts["employer"]


def test_references_point_at_generated_records(hangzhou: list[dict[str, object]]) -> None:
    usccs = {r["uscc"] for r in hangzhou if r["type"] == "employer"}
    persons = {r["person_id"] for r in hangzhou if r["type"] == "person"}
    for r in hangzhou:
        if r["type"] in ("insurance_enrollment", "contribution"):
            assert r["person_id"] in persons
            assert r.get("uscc", next(iter(usccs))) in usccs
    types = {r["insurance_type"] for r in hangzhou if r["type"] == "insurance_enrollment"}
    assert len(types) >= 4


def test_ids_are_real_for_the_city(hangzhou: list[dict[str, object]]) -> None:
    for r in hangzhou:
        if r["type"] == "person":
            pid = str(r["person_id"])
            assert ric.is_valid(pid)  # includes stdnum's dated birthplace check
            assert pid.startswith("3301")
            assert 1960 <= int(pid[6:10]) <= 2003
            assert r["gender"] == ("1" if int(pid[16]) % 2 else "2")
        elif r["type"] == "employer":
            code = str(r["uscc"])
            assert uscc.is_valid(code)
            assert code[2:6] == "3301"
            assert org_code_check_char(code[8:16]) == code[16]


@pytest.mark.parametrize("city", ["110000", "110100", "440300", "469000", "650100"])
def test_other_cities(city: str) -> None:
    records = generate_records(city, 300, seed=1)
    for record in records:
        validate_record(record)
    ids = [str(r["person_id"]) for r in records if r["type"] == "person"]
    assert ids and all(ric.is_valid(pid) for pid in ids)


def test_deterministic() -> None:
    assert generate_records("330100", 500, seed=3) == generate_records("330100", 500, seed=3)
    assert generate_records("330100", 500, seed=3) != generate_records("330100", 500, seed=4)
    assert generate_records("330100", 500) != generate_records("330200", 500)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        generate_records("33010", 10)
    with pytest.raises(ValueError):
        generate_records("990100", 10)
    with pytest.raises(ValueError):
        generate_records("330100", -1)


def test_twenty_thousand() -> None:
    records = generate_records("330100", 20_000, seed=11)
    assert len(records) == 20_000
    keys = {(v.record_type, v.key) for v in map(validate_record, records)}
    assert len(keys) == 20_000


def test_updates(hangzhou: list[dict[str, object]]) -> None:
    updates = generate_updates(hangzhou, 300, seed=5)
    assert updates == generate_updates(hangzhou, 300, seed=5)
    originals = {(v.record_type, v.key): v for v in map(validate_record, hangzhou)}
    seen = set()
    for update in updates:
        new = validate_record(update)
        old = originals[(new.record_type, new.key)]
        assert new.payload != old.payload and not new.deleted
        seen.add(new.key)
    assert len(seen) == 300
    assert {u["type"] for u in updates} == set(ORDER)


def test_tombstones(hangzhou: list[dict[str, object]]) -> None:
    tombs = generate_tombstones(hangzhou, 200, seed=5)
    assert tombs == generate_tombstones(hangzhou, 200, seed=5)
    keys = {(v.record_type, v.key) for v in map(validate_record, hangzhou)}
    valid = [validate_record(t) for t in tombs]
    assert all(v.deleted for v in valid)
    assert {(v.record_type, v.key) for v in valid} <= keys
    assert len({v.key for v in valid}) == 200
    with pytest.raises(ValueError):
        generate_tombstones(hangzhou, len(hangzhou) + 1)
