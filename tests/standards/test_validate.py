"""Record validation against a release: parity with node.records, dates, rules, dry run."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from hierarchy_config.standards import Release, dry_run, validate_record
from hierarchy_config.standards.model import Rule
from hierarchy_config.standards.rules import evaluate
from node import datagen, records
from node.records import RecordInvalid

PERSON = {
    "type": "person",
    "person_id": "11010519491231002X",
    "name": "张三",
    "gender": "2",
    "birth_date": "1949-12-31",
}


@pytest.mark.parametrize("city", ["330100", "110100", "429000"])
def test_generated_records_match_node_records(release: Release, city: str) -> None:
    objs = datagen.generate_records(city, 2000)
    objs += datagen.generate_updates(objs, 30) + datagen.generate_tombstones(objs, 30)
    for obj in objs:
        result = validate_record(release, obj)
        assert result.record == records.validate_record(obj)
        assert result.warnings == ()


def test_errors_match_node_records_for_bad_values(release: Release) -> None:
    cases: list[dict[str, Any]] = [
        {**PERSON, "person_id": "110105194912310021"},
        {**PERSON, "gender": "1"},
        {**PERSON, "birth_date": "1949-12-30"},
        {**PERSON, "education": "99"},
        {**PERSON, "nme": "x"},
        {**PERSON, "name": ""},
        {"type": "nobody"},
        {**PERSON, "deleted": "maybe"},
    ]
    for obj in cases:
        with pytest.raises(RecordInvalid) as new:
            validate_record(release, obj)
        with pytest.raises(RecordInvalid) as old:
            records.validate_record(obj)
        assert new.value.field == old.value.field, obj
        if obj.get("type") != "nobody":
            assert new.value.reason == old.value.reason or obj.get("education")


def contribution(fee_month: str, region: str) -> dict[str, Any]:
    return {
        "type": "contribution",
        "person_id": "11010519491231002X",
        "insurance_type": "110",
        "fee_month": fee_month,
        "contribution_type": "10",
        "unit_amount": "100",
        "personal_amount": "50.5",
        "agency_region": region,
    }


def test_codes_are_checked_against_the_business_date(release: Release) -> None:
    ok = validate_record(release, contribution("202012", "330103"))
    assert ok.record.payload["agency_region"] == "330103"
    with pytest.raises(RecordInvalid) as info:
        validate_record(release, contribution("202201", "330103"))
    assert info.value.field == "agency_region"
    assert "retired" in info.value.reason and "330105 (拱墅区)" in info.value.reason
    validate_record(release, contribution("202201", "330113"))
    with pytest.raises(RecordInvalid, match="valid only from 2021-01-01"):
        validate_record(release, contribution("202006", "330113"))
    with pytest.raises(RecordInvalid, match="not a code of CT_ADMIN_DIV"):
        validate_record(release, contribution("202006", "339999"))


def test_since_mode_and_no_business_date(release: Release) -> None:
    employer = {
        "type": "employer",
        "uscc": "91110000600037341L",
        "name": "测试有限公司",
        "region": "330112",  # 临安区, created 2017
        "reg_date": "1990-05-01",
    }
    validate_record(release, employer)  # still valid after the registration date
    with pytest.raises(RecordInvalid, match="retired"):
        validate_record(release, {**employer, "region": "330103", "reg_date": "2022-03-01"})
    validate_record(release, {**employer, "region": "330103", "reg_date": "2019-03-01"})
    validate_record(release, {**employer, "region": "330103", "reg_date": None})
    # a person has no business date: a retired code is acceptable (valid at some time)
    validate_record(release, {**PERSON, "hukou_region": "330103"})


def test_industry_and_occupation_codes(release: Release) -> None:
    employer = {"type": "employer", "uscc": "91110000600037341L", "name": "x", "region": "110105"}
    assert (
        validate_record(release, {**employer, "industry": "i6510"}).record.payload["industry"]
        == "I6510"
    )
    with pytest.raises(RecordInvalid):
        validate_record(release, {**employer, "industry": "C99"})
    cert = {
        "type": "skill_certificate",
        "cert_no": "C1",
        "person_id": "11010519491231002X",
        "occupation": "4-07-03-02",
        "skill_level": "3",
        "issue_date": "2024-05-01",
        "region": "330100",
        "theory_score": 88.5,
    }
    assert validate_record(release, cert).record.payload["theory_score"] == "88.5"
    with pytest.raises(RecordInvalid) as info:
        validate_record(release, {**cert, "occupation": "4-99-99-99"})
    assert info.value.field == "occupation" and "CT_OCCUPATION" in info.value.reason
    with pytest.raises(RecordInvalid, match="at most 100"):
        validate_record(release, {**cert, "theory_score": "100.5"})


def test_unknown_birthplace_is_a_warning(release: Release) -> None:
    body = "99010519491231002"
    check = datagen.id_check_char(body)
    obj = {**PERSON, "person_id": body + check}
    result = validate_record(release, obj)
    assert [(w.field, w.rule_id) for w in result.warnings] == [("person_id", "person.birthplace")]
    assert result.record == records.validate_record(obj)


def benefit(**changes: Any) -> dict[str, Any]:
    base = {
        "type": "unemployment_benefit",
        "person_id": "11010519491231002X",
        "benefit_month": "202403",
        "insurance_type": "210",
        "entitled_months": 12,
        "month_seq": 3,
        "amount": "1800",
        "agency_region": "330100",
    }
    return {**base, **changes}


def test_error_rules(release: Release) -> None:
    assert validate_record(release, benefit()).record.key == "11010519491231002X|202403"
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"month_seq": 13}, "month_seq", "entitled_months"),
        ({"entitled_months": 25, "month_seq": 1}, "entitled_months", "at most 24"),
        ({"insurance_type": "110"}, "insurance_type", "210"),
        ({"month_seq": 0}, "month_seq", "at least 1"),
    ]
    for changes, field, text in cases:
        with pytest.raises(RecordInvalid) as info:
            validate_record(release, benefit(**changes))
        assert info.value.field == field and text in info.value.reason
    payment = {
        "type": "pension_payment",
        "person_id": "11010519491231002X",
        "insurance_type": "110",
        "pay_month": "202401",
        "basic_pension": "1200.00",
        "account_pension": "800.50",
        "other_items": "100",
        "total": "2100.50",
        "agency_region": "330100",
    }
    validate_record(release, payment)
    with pytest.raises(RecordInvalid, match="basic_pension \\+ account_pension") as info:
        validate_record(release, {**payment, "total": "2100.49"})
    assert info.value.field == "total"
    account = {
        "type": "personal_account_year",
        "person_id": "11010519491231002X",
        "year": 2023,
        "opening_balance": "1000",
        "contributions_in": "500",
        "interest": "20",
        "transfer_out": "100",
        "closing_balance": "1420",
        "agency_region": "330100",
    }
    validate_record(release, account)
    with pytest.raises(RecordInvalid, match="- transfer_out"):
        validate_record(release, {**account, "closing_balance": "1620"})


def test_warning_rules(release: Release) -> None:
    settlement = {
        "type": "medical_settlement",
        "setl_id": "S1",
        "person_id": "11010519491231002X",
        "insurance_type": "310",
        "med_type": "21",
        "settle_time": "2024-03-01 10:15",
        "total_cost": "1000",
        "fund_paid": "700",
        "cash_paid": "200",
        "pool_region": "330100",
    }
    result = validate_record(release, settlement)
    assert result.record.payload["settle_time"] == "2024-03-01T10:15:00"
    assert [w.rule_id for w in result.warnings] == ["medical_settlement.cost_split"]
    assert validate_record(release, {**settlement, "account_paid": 100}).warnings == ()


def test_tombstone(release: Release) -> None:
    tomb = {
        "type": "contribution",
        **{
            k: v
            for k, v in contribution("202201", "x").items()
            if k in ("person_id", "insurance_type", "fee_month")
        },
        "contribution_type": "10",
        "deleted": True,
    }
    result = validate_record(release, tomb)
    assert result.record.deleted and result.record == records.validate_record(tomb)


def test_dry_run(release: Release) -> None:
    objs: list[dict[str, Any]] = datagen.generate_records("330100", 300)
    objs.append(contribution("202201", "330103"))
    body = "99010519491231002"
    objs.append({**PERSON, "person_id": body + datagen.id_check_char(body)})
    objs.append({"type": "payroll"})
    report = dry_run(release, objs, max_problems=2)
    assert report.errors == {"contribution": 1, "?": 1}
    assert report.warned == {"person": 1}
    assert sum(report.ok.values()) == 300
    assert len(report.problems) == 2 and report.problems[0].index == 300
    assert dataclasses.asdict(report.problems[1])["severity"] == "warning"
    text = report.render()
    assert "contribution" in text and "#300 contribution error agency_region" in text


# -- a rule that cannot be computed on a record fails by its severity, never with a crash -------


@pytest.mark.parametrize(
    ("kind", "params", "payload", "blamed", "error"),
    [
        # the release points id_gender at a field that is not an id number
        (
            "id_gender",
            {"gender_field": "g", "id_field": "n"},
            {"g": "1", "n": "x" * 18},
            "g",
            "ValueError",
        ),
        # a sum beyond the decimal range
        (
            "sum_equals",
            {"total": "t", "parts": ("a", "b")},
            {"t": "1", "a": "9e999999", "b": "9e999999"},
            "t",
            "Overflow",
        ),
        # a slice bound that is not a number
        (
            "code_slice",
            {"field": "f", "table": "t", "start": "x", "end": "2"},
            {"f": "11"},
            "f",
            "ValueError",
        ),
    ],
)
def test_a_rule_that_cannot_be_computed_fails_instead_of_crashing(
    kind: str, params: dict[str, Any], payload: dict[str, str], blamed: str, error: str
) -> None:
    rule = Rule("r.crafted", "warning", kind, params)
    assert evaluate(rule, payload, lambda _table: None) == (
        blamed,
        f"cannot be checked by rule r.crafted ({error})",
    )
