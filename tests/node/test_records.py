"""Unit tests for node.records: schema-driven validation and normalisation of business records."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.cn import ric, uscc
from stdnum.exceptions import ValidationError

from node.records import (
    CODE_TABLES,
    RECORD_TYPES,
    RecordInvalid,
    ValidRecord,
    _checked_person_id,
    _Reject,
    validate_record,
)

STD_ID = "11010519491231002X"  # GB 11643's own example: female, born 1949-12-31
MALE_ID = "360426199101010071"
USCC = "91110000600037341L"


def _with_check(body17: str) -> str:
    return body17 + ric.calc_check_digit(body17 + "0")


def person(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "type": "person",
        "person_id": STD_ID,
        "cert_type": "01",
        "name": "王秀英",
        "gender": "2",
        "birth_date": "1949-12-31",
        "ethnicity": "01",
        "nationality": "CHN",
        "education": "20",
        "hukou_region": "110105",
        "residence_region": "330106",
        "work_start_date": "1968-09-01",
        "phone": "13800000000",
    }
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not None}


def employer(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "type": "employer",
        "uscc": USCC,
        "local_emp_no": "1100000001",
        "name": "北京某某有限公司",
        "unit_type": "10",
        "reg_type": "173",
        "industry": "I65",
        "injury_risk_class": 1,
        "region": "110105",
        "status": "1",
        "reg_date": "2001-05-20",
    }
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not None}


def enrollment(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "type": "insurance_enrollment",
        "person_id": MALE_ID,
        "insurance_type": "110",
        "uscc": USCC,
        "agency_region": "330100",
        "person_category": "11",
        "first_enroll_date": "2013-07-01",
        "enroll_date": "2018-03-01",
        "status": "1",
        "status_date": "2018-03-01",
        "contribution_base": "8000",
    }
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not None}


def contribution(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "type": "contribution",
        "person_id": MALE_ID,
        "insurance_type": "110",
        "uscc": USCC,
        "fee_month": "202403",
        "contribution_type": "10",
        "base": 8000,
        "unit_amount": 1280,
        "personal_amount": 640.0,
        "to_account_amount": "640.00",
        "paid_date": "2024-04-15",
        "agency_region": "330100",
    }
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not None}


def rejects(obj: dict[str, Any]) -> RecordInvalid:
    with pytest.raises(RecordInvalid) as info:
        validate_record(obj)
    return info.value


# --- valid records -------------------------------------------------------------------------------


def test_person_is_normalised() -> None:
    rec = validate_record(person(person_id=" 11010519491231002x ", nationality="chn"))
    assert rec == ValidRecord("person", STD_ID, rec.payload, False)
    assert rec.payload["person_id"] == STD_ID
    assert rec.payload["nationality"] == "CHN"
    assert list(rec.payload) == sorted(rec.payload)
    assert "type" not in rec.payload


def test_employer() -> None:
    rec = validate_record(employer(uscc=" 91110000600037341l", industry="c1311"))
    assert rec.key == USCC
    assert rec.payload["industry"] == "C1311"
    assert rec.payload["injury_risk_class"] == "1"


def test_enrollment_key_and_decimal() -> None:
    rec = validate_record(enrollment())
    assert rec.key == f"{MALE_ID}|110|330100"
    assert rec.payload["contribution_base"] == "8000.00"


def test_contribution_key_and_amounts() -> None:
    rec = validate_record(contribution(fee_month="2024-03"))
    assert rec.key == f"{MALE_ID}|110|202403|{USCC}|10"
    assert rec.payload["base"] == "8000.00"
    assert rec.payload["unit_amount"] == "1280.00"
    assert rec.payload["personal_amount"] == "640.00"
    assert all(isinstance(v, str) for v in rec.payload.values())


def test_contribution_without_uscc_has_empty_key_part() -> None:
    rec = validate_record(contribution(uscc=None))
    assert rec.key == f"{MALE_ID}|110|202403||10"
    assert "uscc" not in rec.payload


def test_absent_optional_fields_are_omitted() -> None:
    rec = validate_record(
        {"type": "person", "person_id": MALE_ID, "name": "李强", "phone": "  ", "education": None}
    )
    assert rec.payload == {"name": "李强", "person_id": MALE_ID}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("8000", "8000.00"),
        ("8000.5", "8000.50"),
        (8000.5, "8000.50"),
        ("8000.500", "8000.50"),
        (0, "0.00"),
        ("-12.3", "-12.30"),
        ("+7", "7.00"),
        ("-0", "0.00"),
        ("007.10", "7.10"),
        (1e11, "100000000000.00"),
        (123456789012.34, "123456789012.34"),
    ],
)
def test_decimals_are_normalised(raw: object, expected: str) -> None:
    payload = validate_record(enrollment(contribution_base=raw)).payload
    assert payload["contribution_base"] == expected


def test_whole_numbers_are_accepted_for_codes() -> None:
    assert validate_record(enrollment(insurance_type=110)).payload["insurance_type"] == "110"


def test_dates_and_months_are_normalised() -> None:
    rec = validate_record(contribution(paid_date="20240415", fee_month=202403))
    assert rec.payload["paid_date"] == "2024-04-15"
    assert rec.payload["fee_month"] == "202403"


def test_new_2021_county_code_in_id_is_accepted() -> None:
    pid = _with_check("33011319900307001")  # 临平区, created in 2021, missing from stdnum
    # stdnum does not know the code: validate() fails (python-stdnum 2.2 even with a KeyError)
    with pytest.raises((ValidationError, KeyError)):
        ric.validate(pid)
    assert validate_record(person(person_id=pid, gender="1", birth_date="1990-03-07")).key == pid


def test_gender_9_and_0_need_no_parity() -> None:
    assert validate_record(person(gender="9")).payload["gender"] == "9"
    assert validate_record(person(gender="0")).payload["gender"] == "0"


def test_industry_section_only() -> None:
    assert validate_record(employer(industry="F")).payload["industry"] == "F"


# --- rejected records ----------------------------------------------------------------------------


def test_standard_id_vectors_agree_with_stdnum() -> None:
    assert ric.is_valid(STD_ID) and uscc.is_valid(USCC)
    assert validate_record(person()).key == STD_ID
    assert validate_record(employer()).key == USCC


def test_wrong_id_check_digit() -> None:
    err = rejects(person(person_id="110105194912310021"))
    assert err.field == "person_id"
    assert "check digit" in err.reason


@pytest.mark.parametrize(
    "pid", ["11010519491231002", "1101051949123100XX", "11010519491331002X", "A1010519491231002X"]
)
def test_malformed_ids(pid: str) -> None:
    assert rejects(person(person_id=pid, birth_date=None)).field == "person_id"


def test_bad_date_inside_id() -> None:
    pid = _with_check("11010519490230002")
    assert "birth date" in rejects(person(person_id=pid, birth_date=None)).reason


def test_wrong_uscc_check_char() -> None:
    err = rejects(employer(uscc="91110000600037341M"))
    assert err.field == "uscc" and "check character" in err.reason


@pytest.mark.parametrize("code", ["9111000060003734", "91110000600037341I", "9111000O600037341L"])
def test_malformed_uscc(code: str) -> None:
    assert rejects(employer(uscc=code)).field == "uscc"


def test_gender_must_match_id_parity() -> None:
    err = rejects(person(gender="1"))
    assert err.field == "gender"
    assert "digit 17" in err.reason


def test_birth_date_must_match_id() -> None:
    err = rejects(person(birth_date="1949-12-30"))
    assert err.field == "birth_date"
    assert "digits 7-14" in err.reason


def test_gender_code_message() -> None:
    err = rejects(person(gender="3"))
    assert str(err) == "field 'gender': must be one of 1, 2, 0, 9"
    assert (err.field, err.reason) == ("gender", "must be one of 1, 2, 0, 9")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cert_type", "1"),
        ("ethnicity", "57"),
        ("ethnicity", "1"),
        ("education", "25"),
        ("nationality", "CN"),
        ("hukou_region", "990100"),
        ("residence_region", "33010"),
        ("birth_date", "1949-13-31"),
        ("birth_date", "31/12/1949"),
        ("work_start_date", "0202-01-01"),
        ("name", "x" * 51),
        ("name", "王\n五"),
        ("phone", 3.5),
        ("phone", True),
        ("name", ["a"]),
    ],
)
def test_person_field_errors(field: str, value: object) -> None:
    assert rejects(person(**{field: value})).field == field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("unit_type", "11"),
        ("reg_type", "999"),
        ("industry", "U"),
        ("industry", "C1"),
        ("industry", "A13"),
        ("industry", "C123456"),
        ("injury_risk_class", 9),
        ("injury_risk_class", "two"),
        ("injury_risk_class", True),
        ("injury_risk_class", 1.5),
        ("status", "9"),
        ("region", "000000"),
        ("reg_date", "2001-02-29"),
    ],
)
def test_employer_field_errors(field: str, value: object) -> None:
    assert rejects(employer(**{field: value})).field == field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("insurance_type", "111"),
        ("insurance_type", 110.0),
        ("person_category", "99"),
        ("status", "4"),
        ("agency_region", "33010a"),
        ("contribution_base", "8,000"),
        ("contribution_base", "1e3"),
        ("contribution_base", "123456789012345"),
        ("contribution_base", "1.234"),
        ("contribution_base", float("inf")),
        ("uscc", "123"),
    ],
)
def test_enrollment_field_errors(field: str, value: object) -> None:
    assert rejects(enrollment(**{field: value})).field == field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fee_month", "202413"),
        ("fee_month", "2024"),
        ("contribution_type", "99"),
        ("unit_amount", float("nan")),
        ("unit_amount", "NaN"),
        ("personal_amount", "Infinity"),
        ("unit_amount", 12345678901.0),
        ("personal_amount", 0.1 + 0.2),
        ("base", True),
    ],
)
def test_contribution_field_errors(field: str, value: object) -> None:
    assert rejects(contribution(**{field: value})).field == field


def test_nan_message_is_plain() -> None:
    assert rejects(contribution(unit_amount=float("nan"))).reason == (
        "must be a number, not NaN or infinity"
    )


@pytest.mark.parametrize(
    ("maker", "field"),
    [
        (person, "person_id"),
        (person, "name"),
        (employer, "uscc"),
        (employer, "region"),
        (enrollment, "agency_region"),
        (enrollment, "status"),
        (contribution, "fee_month"),
        (contribution, "unit_amount"),
    ],
)
def test_required_fields(maker: Any, field: str) -> None:
    err = rejects(maker(**{field: None}))
    assert err.field == field and "required" in err.reason
    assert rejects(maker(**{field: ""})).field == field


def test_unknown_type() -> None:
    assert rejects({"type": "pensioner", "person_id": MALE_ID}).field == "type"
    assert rejects({"person_id": MALE_ID}).field == "type"
    assert rejects({"type": 3}).field == "type"


def test_unknown_field_suggests_a_name() -> None:
    err = rejects(person(birthdate="1949-12-31"))
    assert err.field == "birthdate"
    assert "birth_date" in err.reason


def test_not_a_mapping() -> None:
    assert rejects(["person"]).field == "type"  # type: ignore[arg-type]


def test_error_does_not_echo_the_value() -> None:
    assert "110105194912310021" not in str(rejects(person(person_id="110105194912310021")))


def test_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(rejects(person(gender="3"))))
    assert isinstance(err, RecordInvalid)
    assert (err.field, err.reason) == ("gender", "must be one of 1, 2, 0, 9")


# --- tombstones ----------------------------------------------------------------------------------


def test_tombstone_keeps_only_the_key() -> None:
    rec = validate_record(
        {
            "type": "contribution",
            "person_id": MALE_ID,
            "insurance_type": "110",
            "fee_month": "2024-03",
            "contribution_type": "10",
            "uscc": USCC,
            "deleted": True,
        }
    )
    assert rec.deleted
    assert rec.key == f"{MALE_ID}|110|202403|{USCC}|10"
    assert set(rec.payload) == {
        "person_id",
        "insurance_type",
        "fee_month",
        "uscc",
        "contribution_type",
    }


def test_tombstone_of_full_record_ignores_other_fields() -> None:
    rec = validate_record(person(deleted=True, gender="1", phone="x" * 99))
    assert rec.deleted and rec.payload == {"person_id": STD_ID}


def test_tombstone_still_validates_key_and_rejects_unknown_fields() -> None:
    assert (
        rejects({"type": "person", "person_id": "110105194912310021", "deleted": True}).field
        == "person_id"
    )
    assert rejects({"type": "employer", "deleted": True}).field == "uscc"
    assert rejects({"type": "employer", "uscc": USCC, "deleted": True, "x": 1}).field == "x"


def test_deleted_flag_values() -> None:
    assert not validate_record(employer(deleted=False)).deleted
    assert validate_record({"type": "employer", "uscc": USCC, "deleted": "1"}).deleted
    assert rejects(employer(deleted="maybe")).field == "deleted"


def test_every_schema_names_its_code_tables() -> None:
    for schema in RECORD_TYPES.values():
        for spec in schema.fields:
            if spec.table is not None:
                assert spec.codes == CODE_TABLES[spec.table].codes


@given(st.from_regex(r"[0-9]{17}", fullmatch=True))
def test_person_id_birth_date_check_agrees_with_stdnum(first17: str) -> None:
    """The receiver's birth-date check (stdnum's, without its clean-up pass) gives the same
    verdict as `ric.get_birth_date` for every 18-character number with a right check digit."""
    number = _with_check(first17)
    try:
        ric.get_birth_date(number)
        stdnum_ok = True
    except ValidationError:
        stdnum_ok = False
    try:
        _checked_person_id.__wrapped__(number)
        ours = True
    except _Reject:
        ours = False
    assert ours == stdnum_ok
