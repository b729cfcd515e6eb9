"""Reporting periods: months (`2025-01`), quarters (`2025Q1`) and years (`2025`).

`Period` knows its first day and the first day after it, so a flow's records are those with
`start <= date < next_start` and a stock is taken at `next_start` (exclusive): the state at the
end of the period's last day. `parse_range("2025-01..2025-12")` gives the periods of a range, all
of one grain. Pure: no clock, no database.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["GRAINS", "Grain", "Period", "PeriodError", "parse_period", "parse_range"]

Grain = Literal["month", "quarter", "year"]
GRAINS: tuple[Grain, ...] = ("month", "quarter", "year")
_MONTH = re.compile(r"(\d{4})-?(\d{2})")
_QUARTER = re.compile(r"(\d{4})Q([1-4])")
_YEAR = re.compile(r"(\d{4})")
MAX_PERIODS = 240


class PeriodError(ValueError):
    """A period or range that cannot be read; the message says how to write it."""


@dataclass(frozen=True, order=True, slots=True)
class Period:
    grain: Grain
    year: int
    index: int  # month 1-12, quarter 1-4, 1 for a year

    @property
    def key(self) -> str:
        if self.grain == "month":
            return f"{self.year:04d}-{self.index:02d}"
        if self.grain == "quarter":
            return f"{self.year:04d}Q{self.index}"
        return f"{self.year:04d}"

    @property
    def first_month(self) -> int:
        return {"month": self.index, "quarter": 3 * self.index - 2, "year": 1}[self.grain]

    @property
    def months(self) -> int:
        return {"month": 1, "quarter": 3, "year": 12}[self.grain]

    def start(self) -> dt.date:
        return dt.date(self.year, self.first_month, 1)

    def next_start(self) -> dt.date:
        total = self.year * 12 + self.first_month - 1 + self.months
        return dt.date(total // 12, total % 12 + 1, 1)

    def following(self) -> Period:
        per_year = {"month": 12, "quarter": 4, "year": 1}[self.grain]
        if self.index < per_year:
            return Period(self.grain, self.year, self.index + 1)
        return Period(self.grain, self.year + 1, 1)


def parse_period(text: str) -> Period:
    text = text.strip().upper()
    if m := _QUARTER.fullmatch(text):
        return Period("quarter", int(m.group(1)), int(m.group(2)))
    if m := _MONTH.fullmatch(text):
        if not 1 <= int(m.group(2)) <= 12:
            raise PeriodError(f"{text!r}: month must be 01 to 12")
        return Period("month", int(m.group(1)), int(m.group(2)))
    if m := _YEAR.fullmatch(text):
        return Period("year", int(m.group(1)), 1)
    raise PeriodError(
        f"{text!r} is not a period; write a month 2025-01, a quarter 2025Q1 or a year 2025"
    )


def parse_range(text: str) -> tuple[Period, ...]:
    """`2025-01..2025-12`, `2025Q1..2025Q4`, `2023..2025` or one period."""
    first_text, sep, last_text = text.partition("..")
    first = parse_period(first_text)
    last = parse_period(last_text) if sep else first
    if first.grain != last.grain:
        raise PeriodError(f"{text!r}: both ends of a range must be months, quarters or years")
    if last < first:
        raise PeriodError(f"{text!r}: the range ends before it starts")
    out = [first]
    while out[-1] != last:
        out.append(out[-1].following())
        if len(out) > MAX_PERIODS:
            raise PeriodError(f"{text!r}: at most {MAX_PERIODS} periods per query")
    if first.year < 1850 or last.year > 2099:
        raise PeriodError(f"{text!r}: years must be 1850 to 2099")
    return tuple(out)
