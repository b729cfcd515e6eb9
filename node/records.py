"""Validation of incoming business records: person, employer, insurance_enrollment, contribution.

`validate_record` turns one loosely typed mapping (a parsed JSON object or a CSV row) into a
`ValidRecord` — record type, natural key, and a payload of normalised strings — or raises
`RecordInvalid` naming the field and saying what is expected, in words a city data clerk can act
on. The schema is data (`RECORD_TYPES` of `FieldSpec`s, `CODE_TABLES`), not code branches, so a
fuller standards-driven model can replace it later (domain.md §3.S and §3.2).

Payload values are strings only, never floats: decimals with exactly their scale ("8000.00"),
dates "YYYY-MM-DD", year-months "YYYYMM", integers in decimal, booleans "1"/"0".

This module does not touch a database or the network, does not check references between records
(an enrollment's person may be registered elsewhere), knows nothing of the replication envelope
(rid, owner, version), and checks region codes by format and province prefix only — not against a
dated GB/T 2260 release. Error messages never echo the rejected value (they may be personal data).
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache, lru_cache
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from stdnum.cn import ric
from stdnum.cn import uscc as stdnum_uscc
from stdnum.exceptions import InvalidChecksum, InvalidLength, ValidationError

__all__ = [
    "CODE_TABLES",
    "INDUSTRY_SECTIONS",
    "PROVINCE_PREFIXES",
    "RECORD_TYPES",
    "CodeTable",
    "FieldSpec",
    "RecordInvalid",
    "RecordSchema",
    "ValidRecord",
    "validate_record",
]


class RecordInvalid(ValueError):
    """A record was rejected; `field` names the offending field, `reason` says what is expected."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"field '{field}': {reason}")
        self.field = field
        self.reason = reason

    def __reduce__(self) -> tuple[type[RecordInvalid], tuple[str, str]]:
        return (type(self), (self.field, self.reason))


@dataclass(frozen=True, slots=True)
class CodeTable:
    """A small closed code table: (code, name) entries in display order."""

    name: str
    entries: tuple[tuple[str, str], ...]
    hint: str = ""  # what to tell the clerk when the table is too long to list
    codes: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", frozenset(code for code, _ in self.entries))

    def expectation(self) -> str:
        return self.hint or "must be one of " + ", ".join(code for code, _ in self.entries)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field: `kind` is str, date, ym, int, bool, dec(p,s), person_id, uscc, region, industry
    or country; `codes` restricts the normalised value; `table` names its entry in CODE_TABLES."""

    name: str
    kind: str
    required: bool = False
    max_len: int | None = None
    codes: frozenset[str] | None = None
    table: str | None = None


Check = Callable[[Mapping[str, str]], None]


@dataclass(frozen=True, slots=True)
class RecordSchema:
    """A record type: its fields, natural key and cross-field checks."""

    name: str
    fields: tuple[FieldSpec, ...]
    natural_key: tuple[str, ...]
    checks: tuple[Check, ...] = ()
    by_name: Mapping[str, FieldSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {spec.name: spec for spec in self.fields}
        if len(by_name) != len(self.fields) or not set(self.natural_key) <= set(by_name):
            raise ValueError(f"record schema {self.name!r} is inconsistent")
        for spec in self.fields:
            _normaliser(spec.kind)  # fail at import on an unknown kind
        object.__setattr__(self, "by_name", MappingProxyType(by_name))


@dataclass(frozen=True, slots=True)
class ValidRecord:
    record_type: str
    key: str
    payload: dict[str, str]
    deleted: bool


# --- code tables ----------------------------------------------------------------------------------


def _table(name: str, entries: str, hint: str = "") -> CodeTable:
    pairs = [item.strip().partition(" ") for item in entries.split(";")]
    return CodeTable(name, tuple((code, label.strip()) for code, _, label in pairs), hint)


_ETHNICITY = (
    *((f"{i:02d}", "") for i in range(1, 57)),
    ("97", "其他"),
    ("98", "外国血统中国籍人士"),
)

CODE_TABLES: Mapping[str, CodeTable] = MappingProxyType(
    {
        t.name: t
        for t in (
            # GB/T 2261.1-2003 [official]; 5/6 (changed sex) are left out on purpose.
            _table("CT_GENDER", "1 男性;2 女性;0 未知的性别;9 未说明的性别"),
            # MOHRSS AAC058 / NHSA psn_cert_type [seed]
            _table(
                "CT_CERT_TYPE",
                "01 居民身份证(户口簿);02 中国人民解放军军官证;"
                "03 中国人民武装警察警官证;04 港澳居民来往内地通行证;06 台湾居民来往大陆通行证;"
                "07 外国人永久居留身份证;"
                "08 外国人护照;90 社会保障卡;99 其他身份证件",
            ),
            # GB 3304-1991 [official]
            CodeTable(
                "CT_ETHNICITY",
                _ETHNICITY,
                "must be a 2-digit ethnicity code from GB 3304: 01 to 56 (01 汉族), 97 or 98",
            ),
            # GB/T 4658-2006 [official]
            _table(
                "CT_EDUCATION",
                "10 研究生教育;11 博士研究生毕业;12 博士研究生结业;13 博士研究生肄业;"
                "14 硕士研究生毕业;15 硕士研究生结业;16 硕士研究生肄业;17 研究生班毕业;18 研究生班结业;"
                "19 研究生班肄业;20 大学本科教育;21 大学本科毕业;22 大学本科结业;23 大学本科肄业;"
                "28 大学普通班毕业;30 大学专科教育;31 大学专科毕业;32 大学专科结业;33 大学专科肄业;"
                "40 中等职业教育;41 中等专科毕业;42 中等专科结业;43 中等专科肄业;44 职业高中毕业;"
                "45 职业高中结业;46 职业高中肄业;47 技工学校毕业;48 技工学校结业;49 技工学校肄业;"
                "60 普通高级中学教育;61 普通高中毕业;62 普通高中结业;63 普通高中肄业;70 初级中学教育;"
                "71 初中毕业;73 初中肄业;80 小学教育;81 小学毕业;83 小学肄业;90 其他",
                "must be a 2-digit education code from GB/T 4658, e.g. 20 大学本科教育, "
                "30 大学专科教育, 60 普通高级中学教育, 90 其他",
            ),
            # MOHRSS AAE140
            _table(
                "CT_INSURANCE_TYPE",
                "110 企业职工基本养老保险;120 机关事业单位养老保险;"
                "170 城乡居民基本养老保险;210 失业保险;310 职工基本医疗保险;320 公务员医疗补助;"
                "330 大额医疗费用补助;390 城乡居民基本医疗保险;410 工伤保险;510 生育保险",
            ),
            _table("CT_PERSON_CATEGORY", "11 在职;21 退休;31 灵活就业;41 城乡居民"),  # [seed]
            _table("CT_ENROLL_STATUS", "1 参保缴费;2 暂停缴费;3 终止缴费"),  # AAC031
            _table("CT_CONTRIB_TYPE", "10 正常应缴;21 补缴;31 退费"),  # [seed]
            # AAB019-like [seed]
            _table(
                "CT_UNIT_TYPE",
                "10 企业;20 机关;30 事业单位;40 社会团体;50 民办非企业单位;60 个体工商户;90 其他",
            ),
            # modelled on the NBS 登记注册类型 (2011) [seed]
            _table(
                "CT_REG_TYPE",
                "110 国有企业;120 集体企业;130 股份合作企业;141 国有联营企业;"
                "142 集体联营企业;143 国有与集体联营企业;149 其他联营企业;151 国有独资公司;"
                "159 其他有限责任公司;160 股份有限公司;171 私营独资企业;172 私营合伙企业;"
                "173 私营有限责任公司;174 私营股份有限公司;190 其他企业;210 合资经营企业(港或澳、台资);"
                "220 合作经营企业(港或澳、台资);230 港、澳、台商独资经营企业;"
                "240 港、澳、台商投资股份有限公司;290 其他港、澳、台商投资企业;310 中外合资经营企业;"
                "320 中外合作经营企业;330 外资企业;340 外商投资股份有限公司;390 其他外商投资企业;"
                "410 个体户;420 个人合伙",
                "must be a 3-digit registration type (NBS 登记注册类型), e.g. 110 国有企业, "
                "173 私营有限责任公司, 330 外资企业, 410 个体户",
            ),
            _table("CT_EMP_STATUS", "1 正常;2 注销;3 暂停"),  # [seed]
            _table("CT_INJURY_RISK", ";".join(f"{i} {i}类" for i in range(1, 9))),
        )
    }
)

# GB/T 2260 province-level prefixes (31 mainland units plus 71 台湾, 81 香港, 82 澳门).
PROVINCE_PREFIXES: frozenset[str] = frozenset(
    {
        "11",
        "12",
        "13",
        "14",
        "15",
        "21",
        "22",
        "23",
        "31",
        "32",
        "33",
        "34",
        "35",
        "36",
        "37",
        "41",
        "42",
        "43",
        "44",
        "45",
        "46",
        "50",
        "51",
        "52",
        "53",
        "54",
        "61",
        "62",
        "63",
        "64",
        "65",
        "71",
        "81",
        "82",
    }
)

# GB/T 4754-2017: section letter -> range of its 2-digit divisions [official].
INDUSTRY_SECTIONS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {
        "A": (1, 5),
        "B": (6, 12),
        "C": (13, 43),
        "D": (44, 46),
        "E": (47, 50),
        "F": (51, 52),
        "G": (53, 60),
        "H": (61, 62),
        "I": (63, 65),
        "J": (66, 69),
        "K": (70, 70),
        "L": (71, 72),
        "M": (73, 75),
        "N": (76, 79),
        "O": (80, 82),
        "P": (83, 83),
        "Q": (84, 85),
        "R": (86, 90),
        "S": (91, 96),
        "T": (97, 97),
    }
)


# --- normalising one value ------------------------------------------------------------------------


class _Reject(Exception):
    """A value failed its kind; carries the reason only (the caller knows the field)."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DEC_TEXT = re.compile(r"([+-]?)(\d+)(?:\.(\d*))?")
_INT_TEXT = re.compile(r"[+-]?\d{1,18}")
_DATE_TEXT = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")
_YM_TEXT = re.compile(r"(\d{4})-?(\d{2})")
_INDUSTRY = re.compile(r"([A-Z])(\d{2,4})?")
_COUNTRY = re.compile(r"[A-Z]{3}")
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})
_YEARS = (1850, 2099)


def _text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Reject("must be text")
    text = str(value).strip()
    if _CONTROL.search(text):
        raise _Reject("must not contain line breaks, tabs or other control characters")
    return text


@cache
def _canonical_dec(precision: int, scale: int) -> re.Pattern[str]:
    """Text already in normal form: no sign, no leading zero, exactly `scale` decimals."""
    digits = precision - scale  # allowed before the decimal point; "0" alone when none
    whole = f"(?:0|[1-9]\\d{{0,{digits - 1}}})" if digits > 0 else "0"
    return re.compile(whole + (f"\\.\\d{{{scale}}}" if scale else ""))


def _norm_dec(value: object, precision: int, scale: int) -> str:
    if type(value) is str and _canonical_dec(precision, scale).fullmatch(value):
        return value  # the common case at a receiver: already normalised
    return _norm_dec_full(value, precision, scale)


def _norm_dec_full(value: object, precision: int, scale: int) -> str:
    if isinstance(value, bool):
        raise _Reject("must be a number, not true/false")
    if isinstance(value, float | Decimal):
        exact = Decimal(repr(value)) if isinstance(value, float) else value
        if not exact.is_finite():
            raise _Reject("must be a number, not NaN or infinity")
        text = format(exact, "f")
    elif isinstance(value, int | str):
        text = str(value).strip()
    else:
        raise _Reject("must be a number")
    match = _DEC_TEXT.fullmatch(text)
    if match is None:
        raise _Reject(f"must be a number with at most {scale} decimals, like 8000.00")
    sign, whole, frac = match.group(1), match.group(2).lstrip("0"), match.group(3) or ""
    if len(whole) > precision - scale:
        raise _Reject(f"has too many digits: at most {precision - scale} before the decimal point")
    if len(frac.rstrip("0")) > scale:
        raise _Reject(f"has more than {scale} decimal places")
    frac = frac[:scale].ljust(scale, "0")
    if sign == "+" or not (whole or frac.strip("0")):
        sign = ""
    return f"{sign}{whole or '0'}" + (f".{frac}" if scale else "")


def _norm_int(value: object) -> str:
    if isinstance(value, bool):
        raise _Reject("must be a whole number, not true/false")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip() if isinstance(value, int | str) else ""
    if not _INT_TEXT.fullmatch(text):
        raise _Reject("must be a whole number")
    return str(int(text))


def _norm_bool(value: object) -> str:
    if value is True or value is False:
        return "1" if value else "0"
    text = str(value).strip().lower() if isinstance(value, int | str) else ""
    if text in _TRUE:
        return "1"
    if text in _FALSE:
        return "0"
    raise _Reject("must be true or false (1 or 0)")


def _check_year(year: int) -> None:
    if not _YEARS[0] <= year <= _YEARS[1]:
        raise _Reject(f"year must be between {_YEARS[0]} and {_YEARS[1]}")


def _iso_date(text: str) -> dt.date | None:
    """The day `text` names if it is written exactly YYYY-MM-DD (the common case at a
    receiver), else None."""
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def _norm_date(value: object) -> str:
    if type(value) is str:
        day = _iso_date(value)
        if day is not None:
            _check_year(day.year)
            return value
    return _norm_date_full(value)


def _norm_date_full(value: object) -> str:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        _check_year(value.year)
        return value.isoformat()
    match = _DATE_TEXT.fullmatch(_text(value)) if isinstance(value, str) else None
    if match is None:
        raise _Reject("must be a date written YYYY-MM-DD, like 2024-03-01")
    try:
        day = dt.date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        raise _Reject("is not a real calendar date") from None
    _check_year(day.year)
    return day.isoformat()


def _norm_ym(value: object) -> str:
    match = _YM_TEXT.fullmatch(_text(value))
    if match is None:
        raise _Reject("must be a year and month written YYYYMM, like 202403")
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12:
        raise _Reject("month must be 01 to 12")
    _check_year(year)
    return f"{year:04d}{month:02d}"


def _norm_person_id(value: object) -> str:
    return _checked_person_id(_text(value).upper())


@lru_cache(maxsize=1 << 16)  # ids repeat across a person's enrollments and contributions
def _checked_person_id(number: str) -> str:
    if len(number) != 18:
        raise _Reject("must be the 18-character citizen ID number (GB 11643)")
    if not number[:17].isdigit() or not (number[17].isdigit() or number[17] == "X"):
        raise _Reject("must be 17 digits followed by a digit or X")
    if number[17] != ric.calc_check_digit(number):
        raise _Reject("check digit does not match; the number was probably mistyped")
    if not _birth_date_ok(number):
        raise _Reject("digits 7-14 must be a real birth date (YYYYMMDD)")
    # The address code (digits 1-6) is deliberately not looked up: stdnum lacks codes created
    # since 2021 (e.g. 330113), and an unknown birthplace is a warning, not a rejection.
    return number


_PERSON_ID_ASCII = re.compile(r"[0-9]{17}[0-9X]")


def _birth_date_ok(number: str) -> bool:
    """Digits 7-14 of an 18-character id are a real date: `ric.get_birth_date` without its
    clean-up pass (it would change nothing here), as a receiver checks every new id (issue 8)."""
    try:
        dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    return True


def _canonical_person_id(v: str) -> bool:
    """`_checked_person_id(v) == v` for a value already in canonical form (18 ASCII characters,
    so `_text` and `upper` change nothing), without its cache and its messages."""
    return (
        _PERSON_ID_ASCII.fullmatch(v) is not None
        and v[17] == ric.calc_check_digit(v)
        and _birth_date_ok(v)
    )


def _norm_uscc(value: object) -> str:
    return _checked_uscc(_text(value).upper())


@lru_cache(maxsize=1 << 14)
def _checked_uscc(code: str) -> str:
    try:
        stdnum_uscc.validate(code)
    except InvalidLength:
        raise _Reject("must be the 18-character unified social credit code (GB 32100)") from None
    except InvalidChecksum:
        raise _Reject("check character does not match; the code was probably mistyped") from None
    except ValidationError:
        raise _Reject(
            "must be 8 digits followed by 10 digits or capital letters (not I, O, S, V or Z)"
        ) from None
    if code[2:4] not in PROVINCE_PREFIXES and code[2:4] != "10":
        raise _Reject("characters 3-8 must be the registering region code (GB/T 2260)")
    return code


def _norm_region(value: object) -> str:
    code = _text(value)
    if len(code) != 6 or not code.isdigit() or code[:2] not in PROVINCE_PREFIXES:
        raise _Reject("must be a 6-digit region code (GB/T 2260), like 330100")
    return code


def _norm_industry(value: object) -> str:
    code = _text(value).upper()
    match = _INDUSTRY.fullmatch(code)
    span = INDUSTRY_SECTIONS.get(match.group(1)) if match else None
    if (
        match is None
        or span is None
        or (match.group(2) and not span[0] <= int(match.group(2)[:2]) <= span[1])
    ):
        raise _Reject(
            "must be a GB/T 4754 industry code: a section letter A-T, optionally "
            "followed by 2-4 digits of that section, like C or C13 or I6510"
        )
    return code


def _norm_country(value: object) -> str:
    code = _text(value).upper()
    if not _COUNTRY.fullmatch(code):
        raise _Reject("must be a 3-letter country code (ISO 3166-1), like CHN")
    return code


_SIMPLE_KINDS: Mapping[str, Callable[[object], str]] = MappingProxyType(
    {
        "str": _text,
        "int": _norm_int,
        "bool": _norm_bool,
        "date": _norm_date,
        "ym": _norm_ym,
        "person_id": _norm_person_id,
        "uscc": _norm_uscc,
        "region": _norm_region,
        "industry": _norm_industry,
        "country": _norm_country,
    }
)
_DEC_KIND = re.compile(r"dec\((\d+),(\d+)\)")


@cache
def _normaliser(kind: str) -> Callable[[object], str]:
    simple = _SIMPLE_KINDS.get(kind)
    if simple is not None:
        return simple
    match = _DEC_KIND.fullmatch(kind)
    if match is None or int(match.group(2)) > int(match.group(1)):
        raise ValueError(f"unknown field kind {kind!r}")
    precision, scale = int(match.group(1)), int(match.group(2))
    return lambda value: _norm_dec(value, precision, scale)


def canonical_check(spec: FieldSpec) -> Callable[[str], object] | None:
    """For a receiver's re-check (`node.recheck`): a quick proof that a text value is accepted by
    `spec` and already in normal form — truthy only when `_normalise_uncached(spec, v) == v`.
    A falsy answer proves nothing (the normaliser then decides). None for the kinds that have
    no such proof (code fields, other ids, years and months: their normalisers run)."""
    if spec.codes is not None:
        return None
    limit = spec.max_len
    if spec.kind == "date":
        if limit is not None and limit < 10:
            return None
        first, last = _YEARS

        def date(v: str) -> bool:  # `_norm_date`'s own fast path
            day = _iso_date(v)
            return day is not None and first <= day.year <= last

        return date
    if spec.kind == "person_id":
        if limit is not None and limit < 18:
            return None
        return _canonical_person_id
    if spec.kind == "str":
        control = _CONTROL.search

        def text(v: str) -> bool:
            return (
                bool(v)
                and v == v.strip()
                and (limit is None or len(v) <= limit)
                and control(v) is None
            )

        return text
    match = _DEC_KIND.fullmatch(spec.kind)
    if match is None or int(match.group(2)) > int(match.group(1)):
        return None
    fullmatch = _canonical_dec(int(match.group(1)), int(match.group(2))).fullmatch
    if limit is None:
        return fullmatch

    def dec(v: str) -> object:
        return len(v) <= limit and fullmatch(v)

    return dec


# --- cross-field checks -------------------------------------------------------------------------


def _gender_matches_id(payload: Mapping[str, str]) -> None:
    gender, person_id = payload.get("gender"), payload["person_id"]
    if gender in ("1", "2"):
        implied = "1" if int(person_id[16]) % 2 else "2"
        if gender != implied:
            words = {"1": "male (1)", "2": "female (2)"}
            raise RecordInvalid(
                "gender",
                f"is {words[gender]} but digit 17 of person_id means {words[implied]}; check both",
            )


def _birth_date_matches_id(payload: Mapping[str, str]) -> None:
    birth, person_id = payload.get("birth_date"), payload["person_id"]
    if birth is not None and birth.replace("-", "") != person_id[6:14]:
        raise RecordInvalid("birth_date", "must equal the birth date in person_id (digits 7-14)")


# --- schemas --------------------------------------------------------------------------------------


def _f(name: str, kind: str, max_len: int | None = None, *, req: bool = False) -> FieldSpec:
    return FieldSpec(name, kind, req, max_len)


def _c(name: str, table: str, max_len: int, *, req: bool = False, kind: str = "str") -> FieldSpec:
    return FieldSpec(name, kind, req, max_len, CODE_TABLES[table].codes, table)


_SCHEMAS = (
    RecordSchema(
        "person",
        (
            _f("person_id", "person_id", 18, req=True),
            _c("cert_type", "CT_CERT_TYPE", 2),
            _f("name", "str", 50, req=True),
            _c("gender", "CT_GENDER", 1),
            _f("birth_date", "date"),
            _c("ethnicity", "CT_ETHNICITY", 2),
            _f("nationality", "country", 3),
            _c("education", "CT_EDUCATION", 2),
            _f("hukou_region", "region", 6),
            _f("residence_region", "region", 6),
            _f("work_start_date", "date"),
            _f("phone", "str", 20),
        ),
        ("person_id",),
        (_gender_matches_id, _birth_date_matches_id),
    ),
    RecordSchema(
        "employer",
        (
            _f("uscc", "uscc", 18, req=True),
            _f("local_emp_no", "str", 20),
            _f("name", "str", 100, req=True),
            _c("unit_type", "CT_UNIT_TYPE", 2),
            _c("reg_type", "CT_REG_TYPE", 3),
            _f("industry", "industry", 5),
            _c("injury_risk_class", "CT_INJURY_RISK", 1, kind="int"),
            _f("region", "region", 6, req=True),
            _c("status", "CT_EMP_STATUS", 1),
            _f("reg_date", "date"),
        ),
        ("uscc",),
    ),
    RecordSchema(
        "insurance_enrollment",
        (
            _f("person_id", "person_id", 18, req=True),
            _c("insurance_type", "CT_INSURANCE_TYPE", 3, req=True),
            _f("uscc", "uscc", 18),  # absent for flexible employment and residents' schemes
            _f("agency_region", "region", 6, req=True),
            _c("person_category", "CT_PERSON_CATEGORY", 2),
            _f("first_enroll_date", "date"),
            _f("enroll_date", "date", req=True),
            _c("status", "CT_ENROLL_STATUS", 1, req=True),
            _f("status_date", "date"),
            _f("contribution_base", "dec(14,2)"),
        ),
        ("person_id", "insurance_type", "agency_region"),
    ),
    RecordSchema(
        "contribution",
        (
            _f("person_id", "person_id", 18, req=True),
            _c("insurance_type", "CT_INSURANCE_TYPE", 3, req=True),
            _f("uscc", "uscc", 18),  # absent = individual payer; "" in the natural key
            _f("fee_month", "ym", req=True),
            _c("contribution_type", "CT_CONTRIB_TYPE", 2, req=True),
            _f("base", "dec(14,2)"),
            _f("unit_amount", "dec(12,2)", req=True),
            _f("personal_amount", "dec(12,2)", req=True),
            _f("to_account_amount", "dec(12,2)"),
            _f("paid_date", "date"),
            _f("agency_region", "region", 6),
        ),
        ("person_id", "insurance_type", "fee_month", "uscc", "contribution_type"),
    ),
)

RECORD_TYPES: Mapping[str, RecordSchema] = MappingProxyType({s.name: s for s in _SCHEMAS})
_RESERVED = frozenset({"type", "deleted"})


# --- validation -----------------------------------------------------------------------------------


# Normalised text values already accepted, per field spec (keyed by id(spec); the spec itself is
# kept in the entry so its id is never reused). A value's verdict depends only on its spec and
# the value, so a value seen before is accepted without re-running its normaliser: receivers
# re-validate records whose code fields, dates and ids repeat across a whole batch. Bounded per
# spec; once full it stops learning (high-cardinality fields then simply miss).
_ACCEPTED: dict[int, tuple[FieldSpec, dict[str, str]]] = {}
_ACCEPTED_PER_SPEC = 4096


def _normalise(spec: FieldSpec, raw: object) -> str | None:
    """The normalised value, or None when the field is absent (missing, null or blank)."""
    entry = _ACCEPTED.get(id(spec))
    if entry is None:
        entry = _ACCEPTED.setdefault(id(spec), (spec, {}))
    seen = entry[1]
    if type(raw) is str:
        hit = seen.get(raw)
        if hit is not None:
            return hit
        value = _normalise_uncached(spec, raw)
        if value is not None and len(seen) < _ACCEPTED_PER_SPEC:
            seen[raw] = value
        return value
    return _normalise_uncached(spec, raw)


def _normalise_uncached(spec: FieldSpec, raw: object) -> str | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        value = _normaliser(spec.kind)(raw)
    except _Reject as exc:
        raise RecordInvalid(spec.name, str(exc)) from None
    if spec.max_len is not None and len(value) > spec.max_len:
        raise RecordInvalid(
            spec.name, f"must be at most {spec.max_len} characters (this one has {len(value)})"
        )
    if spec.codes is not None and value not in spec.codes:
        table = CODE_TABLES.get(spec.table) if spec.table else None
        raise RecordInvalid(
            spec.name,
            table.expectation() if table else "must be one of " + ", ".join(sorted(spec.codes)),
        )
    return value


class _SpecShape(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def required(self) -> bool: ...


SpecT = TypeVar("SpecT", bound=_SpecShape, covariant=True)


class _SchemaShape(Protocol[SpecT]):
    """What both record-schema models offer (these built-in ones and standards releases')."""

    @property
    def name(self) -> str: ...

    @property
    def natural_key(self) -> tuple[str, ...]: ...

    @property
    def fields(self) -> tuple[SpecT, ...]: ...

    @property
    def by_name(self) -> Mapping[str, SpecT]: ...


SchemaT = TypeVar("SchemaT")


def pick_schema(schemas: Mapping[str, SchemaT], obj: object) -> SchemaT:
    """The schema named by the record's "type"; RecordInvalid on the 'type' field otherwise."""
    if not isinstance(obj, Mapping):
        raise RecordInvalid("type", "a record must be an object with a 'type' field")
    rtype = obj.get("type")
    schema = schemas.get(rtype) if isinstance(rtype, str) else None
    if schema is None:
        raise RecordInvalid(
            "type",
            ("is missing; it " if rtype is None else "") + "must be one of " + ", ".join(schemas),
        )
    return schema


def read_fields(
    schema: _SchemaShape[SpecT],
    obj: Mapping[str, Any],
    normalise: Callable[[SpecT, object], str | None],
) -> tuple[bool, Sequence[SpecT], dict[str, str]]:
    """The tombstone flag, the fields that apply, and their normalised values.

    Unknown fields are refused (with a spelling hint); a tombstone needs and keeps only its
    natural-key fields; a required field that is missing or blank is refused."""
    try:
        flag = obj.get("deleted")
        deleted = flag not in (None, "") and _norm_bool(flag) == "1"
    except _Reject as exc:
        raise RecordInvalid("deleted", str(exc)) from None
    by_name = schema.by_name
    # One set difference in C first; the loop (for the first unknown name, in the record's
    # order) runs only when there is one.
    for name in obj if obj.keys() - by_name.keys() - _RESERVED else ():
        if name not in by_name and name not in _RESERVED:
            reason = f"is not a field of a {schema.name} record"
            close = difflib.get_close_matches(str(name), list(schema.by_name), n=1)
            raise RecordInvalid(
                str(name), reason + (f"; did you mean '{close[0]}'?" if close else "")
            )
    specs = [schema.by_name[k] for k in schema.natural_key] if deleted else list(schema.fields)
    payload: dict[str, str] = {}
    for spec in specs:
        value = normalise(spec, obj.get(spec.name))
        if value is not None:
            payload[spec.name] = value
        elif spec.required:
            raise RecordInvalid(
                spec.name, f"is required in a {schema.name} record but is missing or empty"
            )
    return deleted, specs, payload


def validate_record(obj: Mapping[str, Any]) -> ValidRecord:
    """Check and normalise one record; raise RecordInvalid naming the first bad field.

    A tombstone (`"deleted": true`) needs and keeps only its natural-key fields; other known
    fields on it are ignored, unknown ones are still rejected.
    """
    schema = pick_schema(RECORD_TYPES, obj)
    deleted, _specs, payload = read_fields(schema, obj, _normalise)
    if not deleted:
        for check in schema.checks:
            check(payload)
    key = "|".join(payload.get(name, "") for name in schema.natural_key)
    return ValidRecord(schema.name, key, dict(sorted(payload.items())), deleted)
