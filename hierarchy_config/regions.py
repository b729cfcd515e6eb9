"""GB/T 2260 administrative division codes: provinces, prefectures and counties, by year.

Node ids are GB/T 2260 codes (330000 Zhejiang, 330100 Hangzhou), so tools that lay out a network
or check an id need the code table. This module reads it, once and lazily, from python-stdnum's
`stdnum/cn/loc.dat`, which stdnum generates from the Chinese Wikipedia lists of division codes.
Each code carries the years it was in use (`[1983-2021]下城区` means 1983 through 2021); a code
reused for a renamed division has several periods, and is one `Region` per period here.

What it does not do: it is not an authoritative copy of the standard. The data is only as recent
as the installed stdnum release and lags real changes -- for example the 2021 Hangzhou districts
临平区 (330113) and 钱塘区 (330114) are missing, so `is_known_region("330113")` is False. It does
not validate the id of a node against its level (see `hierarchy_config.model`), and it knows
nothing of the ministry's pseudo-code 100000.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import stdnum

CODE_RE = re.compile(r"^[0-9]{6}$")

# Placeholder rows of the table that are groupings, not divisions with a government of their own.
_GROUPING_NAMES = frozenset({"市辖区", "县"})
_GROUPING_SUFFIXES = ("直辖县级行政单位", "直辖县级行政区划")

_PROVINCE_LINE = re.compile(r'^([0-9]{2}) province="([^"]*)"$')
_COUNTY_LINE = re.compile(r'^\s+([0-9]{4}) county="([^"]*)"$')
_PERIOD = re.compile(r"^\[([0-9]{0,4})-([0-9]{0,4})\](.+)$")


class RegionDataError(Exception):
    """The division code table cannot be read or parsed."""


@dataclass(frozen=True)
class Region:
    """One GB/T 2260 division during one period of validity (years inclusive; None = open)."""

    code: str
    name: str
    valid_from: int | None
    valid_to: int | None

    def valid_in(self, year: int) -> bool:
        if self.valid_from is not None and year < self.valid_from:
            return False
        return self.valid_to is None or year <= self.valid_to

    @property
    def current(self) -> bool:
        """Still in use according to the data (no end year)."""
        return self.valid_to is None


def data_path() -> Path:
    """Where the code table is read from."""
    return Path(os.path.dirname(stdnum.__file__)) / "cn" / "loc.dat"


def parse_loc(lines: Iterable[str]) -> dict[str, tuple[Region, ...]]:
    """Parse stdnum's `loc.dat` format into periods by 6-digit code, in file order.

    The `XX0000` entry comes from the province's `0000` row when present (it carries validity
    years and the simplified-character name), else from the `province=` line itself.
    """
    table: dict[str, tuple[Region, ...]] = {}
    province_names: dict[str, str] = {}
    prefix: str | None = None
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if match := _PROVINCE_LINE.match(line):
            prefix, name = match.groups()
            province_names[prefix + "0000"] = name
            continue
        match = _COUNTY_LINE.match(line)
        if match is None or prefix is None:
            raise RegionDataError(f"line {lineno}: unexpected content {line!r}")
        code = prefix + match.group(1)
        table[code] = table.get(code, ()) + _periods(code, match.group(2), lineno)
    for code, name in province_names.items():
        table.setdefault(code, (Region(code, name, None, None),))
    return table


def _periods(code: str, value: str, lineno: int) -> tuple[Region, ...]:
    out: list[Region] = []
    for part in value.split(","):
        match = _PERIOD.match(part)
        if match is None:
            if not part or part.startswith("["):
                raise RegionDataError(f"line {lineno}: malformed name {value!r}")
            out.append(Region(code, part, None, None))
            continue
        start, end, name = match.groups()
        out.append(Region(code, name, int(start) if start else None, int(end) if end else None))
    return tuple(out)


@functools.cache
def _table() -> dict[str, tuple[Region, ...]]:
    path = data_path()
    try:
        with path.open(encoding="utf-8") as fh:
            return parse_loc(fh)
    except OSError as exc:
        raise RegionDataError(f"{path}: cannot read the division code table: {exc}") from exc
    except RegionDataError as exc:
        raise RegionDataError(f"{path}: {exc}") from None


def _latest(code: str) -> Region | None:
    periods = _table().get(code)
    return periods[-1] if periods else None


def _in(code: str, year: int) -> Region | None:
    for period in reversed(_table().get(code, ())):
        if period.valid_in(year):
            return period
    return None


def _is_grouping(name: str) -> bool:
    return name in _GROUPING_NAMES or name.endswith(_GROUPING_SUFFIXES)


def _check_code(code: str, what: str, tail: str) -> None:
    if not CODE_RE.match(code) or not code.endswith(tail):
        raise ValueError(f"{what} code {code!r} must be 6 digits ending in {tail!r}")


def provinces() -> list[Region]:
    """Every currently valid province-level division (`XX0000`), by code."""
    out = [r for code in sorted(_table()) if code.endswith("0000") and (r := _latest(code))]
    return [r for r in out if r.current]


def prefectures(province_code: str) -> list[Region]:
    """Currently valid prefecture-level divisions (`XXXX00`) of a province, by code.

    Groupings (`市辖区`, `县`, `省直辖县级行政单位`) are left out, so the municipalities
    (110000, 120000, 310000, 500000) and 710000/810000/820000 have none.
    """
    _check_code(province_code, "province", "0000")
    head = province_code[:2]
    out: list[Region] = []
    for code in sorted(_table()):
        if code[:2] != head or not code.endswith("00") or code.endswith("0000"):
            continue
        region = _latest(code)
        if region is not None and region.current and not _is_grouping(region.name):
            out.append(region)
    return out


def counties(prefecture_code: str, year: int | None = None) -> list[Region]:
    """County-level divisions under a prefecture (`XXXXnn`, nn != 00), by code.

    Without `year`: every code ever used there, each as its latest period (defunct ones
    included). With `year`: only codes in use that year, each as the period of that year.
    """
    _check_code(prefecture_code, "prefecture", "00")
    head = prefecture_code[:4]
    out: list[Region] = []
    for code in sorted(_table()):
        if code[:4] != head or code.endswith("00"):
            continue
        region = _latest(code) if year is None else _in(code, year)
        if region is not None and region.name != "市辖区":
            out.append(region)
    return out


def region_name(code: str) -> str | None:
    """The latest name of a code, or None if the table does not know it."""
    region = _latest(code)
    return region.name if region else None


def is_known_region(code: str, year: int | None = None) -> bool:
    """Whether the code is in the table (at all, or in use during `year`)."""
    if year is None:
        return code in _table()
    return _in(code, year) is not None
