"""Realistic, deterministic test records for a city: employers, persons, enrollments, contributions.

`generate_records(city_id, n, seed=...)` returns exactly n JSON-able objects, each valid under
`node.records.validate_record` and each with its own natural key, in dependency order (employers,
then persons, their insurance enrollments, then monthly contributions). Person ids are valid
GB 11643 numbers whose address code is a county of the city that existed in the birth year (read
from python-stdnum's `cn/loc.dat`); USCCs are valid GB 32100 codes registered in the city.
`generate_updates` and `generate_tombstones` derive changed and deleted versions of such records.
The same arguments always give the same output (no global random state, no `hash()`, no clock).

This module does not validate its input records, write files, touch a database, or aim at
statistical realism beyond plausible shapes; amounts and rates are illustrative [seed].
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import stdnum

from node.records import INDUSTRY_SECTIONS, PROVINCE_PREFIXES, RECORD_TYPES

__all__ = ["generate_records", "generate_tombstones", "generate_updates"]

FIRST_BIRTH_YEAR, LAST_BIRTH_YEAR = 1960, 2003
LAST_FEE_MONTH = (2024, 12)  # contributions count back from here; fixed so output is stable
_LAST_DAY = dt.date(2024, 6, 30)  # no generated event (work start, enrollment) is later

_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡"
    "余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史"
)
_GIVEN = (
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国文辉力斌宇浩凯鹏飞波"
    "海峰晨阳玉兰红梅志强俊婷雪琳欣怡子轩梓涵一诺浩然思远佳琪嘉欣宏伟晓东春燕丹凤亮"
)
_FIRMS = (
    "恒达",
    "华信",
    "鑫源",
    "宏远",
    "瑞丰",
    "天成",
    "永泰",
    "金诚",
    "广汇",
    "中联",
    "新锐",
    "博远",
    "盛世",
    "东方",
    "锦程",
    "和信",
    "德润",
    "安泰",
    "汇通",
    "正元",
)
_BUREAUS = (
    "人力资源和社会保障局",
    "市场监督管理局",
    "交通运输局",
    "教育局",
    "统计局",
    "卫生健康委员会",
    "生态环境局",
    "住房和城乡建设局",
)
_TRADES = {
    "A": "农业",
    "B": "矿业",
    "C": "制造",
    "D": "能源",
    "E": "建设",
    "F": "商贸",
    "G": "物流",
    "H": "餐饮",
    "I": "科技",
    "J": "投资",
    "K": "置业",
    "L": "商务",
    "M": "技术",
    "N": "环境",
    "O": "家政",
    "P": "教育",
    "Q": "健康",
    "R": "文化",
}
# section -> work-injury risk class, roughly after 人社部发〔2015〕71号 [seed]
_RISK = {
    "A": 3,
    "B": 7,
    "C": 4,
    "D": 3,
    "E": 6,
    "F": 2,
    "G": 4,
    "H": 2,
    "I": 1,
    "J": 1,
    "K": 1,
    "L": 1,
    "M": 1,
    "N": 3,
    "O": 2,
    "P": 1,
    "Q": 2,
    "R": 2,
    "S": 1,
    "T": 1,
}
_SECTIONS = ("C", "F", "E", "G", "H", "I", "L", "M", "K", "J", "O", "P", "Q", "R", "N", "A", "D")
_SECTION_W = (25, 18, 8, 6, 8, 7, 6, 5, 3, 2, 4, 2, 2, 1, 1, 1, 1)
# unit_type -> (USCC authority + entity chars, weight, reg_type choices or None)
_UNITS = {
    "10": (
        "91",
        80,
        ("173", "173", "173", "159", "159", "171", "160", "110", "151", "120", "310", "330", "230"),
    ),
    "60": ("92", 8, ("410", "420")),
    "30": ("12", 5, None),
    "20": ("11", 3, None),
    "50": ("52", 2, None),
    "40": ("51", 2, None),
}
_UNIT_CODES = tuple(_UNITS)
_UNIT_W = tuple(u[1] for u in _UNITS.values())
# insurance type -> (unit rate, personal rate, to-account rate) in basis points of the base [seed]
_RATES = {
    "110": (1600, 800, 800),
    "120": (1600, 800, 800),
    "210": (50, 50, 0),
    "310": (800, 200, 200),
    "320": (100, 0, 0),
    "330": (50, 0, 0),
    "410": (40, 0, 0),
    "510": (80, 0, 0),
}
_FLEX_RATES = {"110": (0, 2000, 800), "310": (0, 1000, 0)}
_RESIDENT_FLAT = {"170": 30000, "390": 38000}  # cents a year, paid as one amount [seed]
_EMPLOYEE_TYPES = ("110", "210", "310", "410", "510")
_PUBLIC_TYPES = ("120", "210", "310", "320", "410")  # 机关 and 事业单位 staff
_EDU = ("20", "21", "30", "31", "41", "47", "61", "71", "81", "14", "11", "90")
_EDU_W = (8, 12, 10, 14, 8, 6, 14, 16, 4, 4, 1, 3)
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ID_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
_ID_CHECK = "10X98765432"


# --- standards arithmetic ----------------------------------------------------------------------


def id_check_char(body17: str) -> str:
    """GB 11643 / ISO 7064 MOD 11-2 check character for the first 17 digits."""
    return _ID_CHECK[sum(int(d) * w for d, w in zip(body17, _ID_WEIGHTS, strict=True)) % 11]


def org_code_check_char(body8: str) -> str:
    """GB 11714 organisation-code check character (digits and A=10 .. Z=35)."""
    total = sum(int(c, 36) * w for c, w in zip(body8, _ORG_WEIGHTS, strict=True))
    check = 11 - total % 11
    return "X" if check == 10 else "0" if check == 11 else str(check)


def uscc_check_char(body17: str) -> str:
    """GB 32100 check character for the first 17 characters."""
    total = sum(_USCC_ALPHABET.index(c) * w for c, w in zip(body17, _USCC_WEIGHTS, strict=True))
    return _USCC_ALPHABET[(31 - total % 31) % 31]


# --- GB/T 2260 counties from stdnum's loc.dat -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Division:
    code: str
    name: str
    start: int | None
    end: int | None

    def valid_in(self, year: int) -> bool:
        return (self.start is None or self.start <= year) and (self.end is None or year <= self.end)


_LOC_LINE = re.compile(r'^(\d{2}) province="([^"]*)"|^\s+(\d{4}) county="([^"]*)"')
_SPAN = re.compile(r"\[(\d*)-(\d*)\](.*)")


@cache
def _divisions() -> tuple[dict[str, str], tuple[_Division, ...]]:
    """Province names by 2-digit prefix, and every dated 6-digit entry of stdnum's loc.dat."""
    path = os.path.join(os.path.dirname(stdnum.__file__), "cn", "loc.dat")
    provinces: dict[str, str] = {}
    entries: list[_Division] = []
    prefix = ""
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = _LOC_LINE.match(line)
            if match is None:
                continue
            if match.group(1):
                prefix = match.group(1)
                provinces[prefix] = match.group(2)
                continue
            for part in match.group(4).split(","):
                span = _SPAN.fullmatch(part)
                if span is None:
                    entries.append(_Division(prefix + match.group(3), part, None, None))
                else:
                    start, end, name = span.groups()
                    entries.append(
                        _Division(
                            prefix + match.group(3),
                            name,
                            int(start) if start else None,
                            int(end) if end else None,
                        )
                    )
    return provinces, tuple(entries)


def _counties(city_id: str) -> list[_Division]:
    """County-level entries under a prefecture (or a whole municipality given as XX0000)."""
    prefix = city_id[:2] if city_id[2:] == "0000" else city_id[:4]
    return [
        d
        for d in _divisions()[1]
        if d.code.startswith(prefix)
        and d.code[4:] != "00"
        and d.name not in ("市辖区", "县", "市区", "郊区")
    ]


def _city_name(city_id: str) -> str:
    """The city's full name (杭州市); the province's for pseudo-prefectures (市辖区, 省直辖…)."""
    provinces, entries = _divisions()
    names = [d.name for d in entries if d.code == city_id[:4] + "00" and d.end is None]
    if not names or names[0] in ("市辖区", "县") or "直辖" in names[0]:
        names = [provinces.get(city_id[:2], "")]
    return names[0]


# --- money ---------------------------------------------------------------------------------------


def _money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def _cents(text: str) -> int:
    whole, _, frac = text.lstrip("-").partition(".")
    value = int(whole) * 100 + int((frac + "00")[:2])
    return -value if text.startswith("-") else value


def _share(base_cents: int, bp: int) -> int:
    return (base_cents * bp + 5000) // 10000


# --- the generator -------------------------------------------------------------------------------


def _mix(seed: int, city_id: str) -> int:
    return (seed << 32) + zlib.crc32(city_id.encode())


def _date(rng: random.Random, first: dt.date, last: dt.date) -> dt.date:
    return dt.date.fromordinal(rng.randint(first.toordinal(), max(first, last).toordinal()))


class _CityGen:
    def __init__(self, city_id: str, rng: random.Random) -> None:
        self.city_id, self.rng = city_id, rng
        self.city_name = _city_name(city_id) or city_id
        short = self.city_name.removesuffix("市").removesuffix("省")
        self.short_name = short if len(short) >= 2 else self.city_name
        counties = _counties(city_id)
        self.current = [d.code for d in counties if d.end is None] or [city_id]
        self.by_year = {
            y: [d.code for d in counties if d.valid_in(y)]
            for y in range(FIRST_BIRTH_YEAR, LAST_BIRTH_YEAR + 1)
        }
        # birth years in which at least one county of the city existed
        self.years = [y for y, pool in self.by_year.items() if pool] or list(self.by_year)
        self.uscc_seen: set[str] = set()
        self.id_seen: set[str] = set()

    def employer(self, serial: int) -> dict[str, Any]:
        rng = self.rng
        unit_type = rng.choices(_UNIT_CODES, _UNIT_W)[0]
        head, _, reg_types = _UNITS[unit_type]
        region = rng.choice(self.current) if rng.random() < 0.7 else self.city_id
        while True:
            org = f"{rng.randrange(10**8):08d}"
            body = head + region + org + org_code_check_char(org)
            uscc = body + uscc_check_char(body)
            if uscc not in self.uscc_seen:
                self.uscc_seen.add(uscc)
                break
        section = {"20": "S", "40": "S"}.get(unit_type) or rng.choices(_SECTIONS, _SECTION_W)[0]
        low, high = INDUSTRY_SECTIONS[section]
        industry = f"{section}{rng.randint(low, high):02d}"
        if unit_type == "20":
            name = self.city_name + rng.choice(_BUREAUS)
        else:
            suffix = {"10": "有限公司", "60": "商行", "30": "中心", "50": "服务中心", "40": "协会"}[
                unit_type
            ]
            name = f"{self.short_name}{rng.choice(_FIRMS)}{_TRADES.get(section, '')}{suffix}"
        record: dict[str, Any] = {
            "type": "employer",
            "uscc": uscc,
            "local_emp_no": f"{self.city_id}{serial:08d}",
            "name": name,
            "unit_type": unit_type,
            "industry": industry,
            "injury_risk_class": _RISK[section],
            "region": region,
            "status": rng.choices("123", (95, 4, 1))[0],
            "reg_date": _date(rng, dt.date(1985, 1, 1), dt.date(2023, 12, 31)).isoformat(),
        }
        if reg_types:
            record["reg_type"] = rng.choice(reg_types)
        return record

    def person_id(self, male: bool) -> tuple[str, dt.date]:
        rng = self.rng
        while True:
            year = rng.choice(self.years)
            pool = self.by_year[year] or [self.city_id]
            birth = _date(rng, dt.date(year, 1, 1), dt.date(year, 12, 31))
            seq = rng.randrange(1, 1000, 2) if male else rng.randrange(2, 1000, 2)
            body = f"{rng.choice(pool)}{birth:%Y%m%d}{seq:03d}"
            number = body + id_check_char(body)
            if number not in self.id_seen:
                self.id_seen.add(number)
                return number, birth

    def person(self) -> dict[str, Any]:
        rng = self.rng
        male = rng.random() < 0.52
        person_id, birth = self.person_id(male)
        given = "".join(rng.choices(_GIVEN, k=1 if rng.random() < 0.3 else 2))
        return {
            "type": "person",
            "person_id": person_id,
            "cert_type": "01",
            "name": rng.choice(_SURNAMES) + given,
            "gender": "1" if male else "2",
            "birth_date": birth.isoformat(),
            "ethnicity": "01" if rng.random() < 0.91 else f"{rng.randint(2, 56):02d}",
            "nationality": "CHN",
            "education": rng.choices(_EDU, _EDU_W)[0],
            "hukou_region": person_id[:6]
            if person_id[:6] in self.current
            else rng.choice(self.current),
            "residence_region": rng.choice(self.current),
            "work_start_date": _date(
                rng,
                birth.replace(year=birth.year + 18, day=1),
                min(_LAST_DAY, birth.replace(year=birth.year + 24, day=1)),
            ).isoformat(),
            "phone": f"1{rng.choice('35789')}{rng.randrange(10**9):09d}",
        }

    def enrollments(
        self, person: Mapping[str, Any], employers: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        rng = self.rng
        birth_year, male = int(person["birth_date"][:4]), person["gender"] == "1"
        types: tuple[str, ...]
        if birth_year <= (1964 if male else 1972) and rng.random() < 0.7:
            category, uscc, types = "21", None, ("110", "310")
        else:
            category = rng.choices(("11", "31", "41"), (65, 15, 20))[0]
            uscc, types = None, ("110", "310") if category == "31" else ("170", "390")
            if category == "11" and employers:
                employer = rng.choice(employers)
                uscc = employer["uscc"]
                public = employer["unit_type"] in ("20", "30")
                types = _PUBLIC_TYPES if public else _EMPLOYEE_TYPES
        start = dt.date.fromisoformat(person["work_start_date"])
        first = _date(rng, start, min(_LAST_DAY, start + dt.timedelta(days=3 * 365)))
        enrolled = _date(rng, first, _LAST_DAY)
        base = max(4462, min(37302, int(rng.lognormvariate(8.95, 0.45)))) * 100
        out = []
        for itype in types:
            status = (
                "3"
                if category == "21" and itype == "110"
                else ("2" if rng.random() < 0.04 else "1")
            )
            record: dict[str, Any] = {
                "type": "insurance_enrollment",
                "person_id": person["person_id"],
                "insurance_type": itype,
                "agency_region": self.city_id,
                "person_category": category,
                "first_enroll_date": first.isoformat(),
                "enroll_date": enrolled.isoformat(),
                "status": status,
                "status_date": _date(rng, enrolled, _LAST_DAY).isoformat(),
            }
            if uscc:
                record["uscc"] = uscc
            if itype not in _RESIDENT_FLAT:
                record["contribution_base"] = _money(base)
            out.append(record)
        return out

    def contribution(self, enrollment: Mapping[str, Any], months_back: int) -> dict[str, Any]:
        rng = self.rng
        index = LAST_FEE_MONTH[0] * 12 + LAST_FEE_MONTH[1] - 1 - months_back
        year, month = divmod(index, 12)
        itype = enrollment["insurance_type"]
        ctype = rng.choices(("10", "21", "31"), (95, 4, 1))[0]
        record: dict[str, Any] = {
            "type": "contribution",
            "person_id": enrollment["person_id"],
            "insurance_type": itype,
            "fee_month": f"{year:04d}{month + 1:02d}",
            "contribution_type": ctype,
            "agency_region": enrollment["agency_region"],
        }
        if "contribution_base" in enrollment:
            base = _cents(enrollment["contribution_base"])
            flexible = "uscc" not in enrollment and itype in _FLEX_RATES
            unit_bp, personal_bp, account_bp = (_FLEX_RATES if flexible else _RATES)[itype]
            unit, personal = _share(base, unit_bp), _share(base, personal_bp)
            account = _share(base, account_bp)
            record["base"] = _money(base)
        else:
            unit, personal, account = 0, _RESIDENT_FLAT.get(itype, 0), 0
        sign = -1 if ctype == "31" else 1
        record["unit_amount"] = _money(sign * unit)
        record["personal_amount"] = _money(sign * personal)
        if account:
            record["to_account_amount"] = _money(sign * account)
        if "uscc" in enrollment:
            record["uscc"] = enrollment["uscc"]
        paid = dt.date(year + (month + 1) // 12, (month + 1) % 12 + 1, 15)
        if ctype != "10":
            paid += dt.timedelta(days=rng.randint(30, 400))
        record["paid_date"] = paid.isoformat()
        return record


def _split(n: int) -> tuple[int, int, int]:
    """Target counts of employers, persons and enrollments; contributions take the rest."""
    employers = min(n, max(1, n // 100))
    persons = min(n - employers, max(1, n * 10 // 100))
    enrollments = min(n - employers - persons, max(1, n * 24 // 100))
    return employers, persons, enrollments


def generate_records(city_id: str, n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """Exactly n valid records for `city_id` (a 6-digit GB/T 2260 code), in dependency order."""
    if len(city_id) != 6 or not city_id.isdigit() or city_id[:2] not in PROVINCE_PREFIXES:
        raise ValueError(f"city_id must be a 6-digit GB/T 2260 region code, got {city_id!r}")
    if n < 0:
        raise ValueError("n must not be negative")
    if n == 0:
        return []
    gen = _CityGen(city_id, random.Random(_mix(seed, city_id)))
    n_emp, n_per, n_enr = _split(n)
    employers = [gen.employer(i + 1) for i in range(n_emp)]
    active = [e for e in employers if e["status"] == "1"] or employers
    persons = [gen.person() for _ in range(n_per)]
    enrollments: list[dict[str, Any]] = []
    for person in persons:
        if len(enrollments) >= n_enr:
            break
        enrollments.extend(gen.enrollments(person, active))
    del enrollments[n_enr:]
    n_con = n - n_emp - n_per - len(enrollments)
    paying = [e for e in enrollments if e["status"] == "1" and e["person_category"] in ("11", "31")]
    paying = paying or enrollments
    contributions = (
        [gen.contribution(paying[i % len(paying)], i // len(paying)) for i in range(n_con)]
        if paying
        else []
    )
    return employers + persons + enrollments + contributions


def _live(records: Sequence[Mapping[str, Any]], k: int) -> list[Mapping[str, Any]]:
    live = [r for r in records if not r.get("deleted") and r.get("type") in RECORD_TYPES]
    if not 0 <= k <= len(live):
        raise ValueError(f"asked for {k} records but only {len(live)} live records were given")
    return live


def generate_updates(
    records: Sequence[Mapping[str, Any]], k: int, seed: int = 0
) -> list[dict[str, Any]]:
    """k changed versions of distinct records from `records` (same natural key, new content)."""
    live = _live(records, k)
    rng = random.Random(_mix(seed, "updates"))
    out = []
    for index in sorted(rng.sample(range(len(live)), k)):
        record = dict(live[index])
        kind = record["type"]
        if kind == "person":
            old = record.get("phone")
            while record.get("phone") == old:
                record["phone"] = f"1{rng.choice('35789')}{rng.randrange(10**9):09d}"
        elif kind == "employer":
            record["status"] = "3" if record.get("status", "1") == "1" else "1"
        elif kind == "insurance_enrollment":
            if "contribution_base" in record:
                raised = _cents(record["contribution_base"]) + rng.randint(1, 40) * 10000
                record["contribution_base"] = _money(raised)
            else:
                record["status"] = "2" if record.get("status") == "1" else "1"
        else:
            paid = record.get("paid_date", "2025-01-15")
            record["paid_date"] = (
                dt.date.fromisoformat(paid) + dt.timedelta(days=rng.randint(1, 60))
            ).isoformat()
        out.append(record)
    return out


def generate_tombstones(
    records: Sequence[Mapping[str, Any]], k: int, seed: int = 0
) -> list[dict[str, Any]]:
    """k tombstones (`deleted: true` plus the natural key) for distinct records of `records`."""
    live = _live(records, k)
    rng = random.Random(_mix(seed, "tombstones"))
    out = []
    for index in sorted(rng.sample(range(len(live)), k)):
        record = live[index]
        tomb: dict[str, Any] = {"type": record["type"]}
        for name in RECORD_TYPES[record["type"]].natural_key:
            if record.get(name) not in (None, ""):
                tomb[name] = record[name]
        tomb["deleted"] = True
        out.append(tomb)
    return out
