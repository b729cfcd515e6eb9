"""What a statistics run asks for (`StatsRequest`), checked against the indicator; the errors.

A request names an indicator, the dimensions to group by (`region`, `period` and the indicator's
code-table dimensions), the periods (one grain), an optional region filter (a GB/T 2260 code:
`330000` = Zhejiang and everything under it) and the region level to group at. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from hierarchy_config.standards.indicators import Indicator
from node.stats.periods import Period, PeriodError, parse_range

__all__ = ["LEVELS", "RegionLevel", "StatsError", "StatsRequest", "region_prefix"]

RegionLevel = Literal["province", "prefecture", "county"]
LEVELS: dict[str, int] = {"province": 2, "prefecture": 4, "county": 6}
_REGION = re.compile(r"\d{6}")


class StatsError(ValueError):
    """A statistics request that cannot be answered; `code` is stable, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def region_prefix(code: str) -> str:
    """The digits that all codes under `code` share: 330000 → 33, 330100 → 3301."""
    if code.endswith("0000"):
        return code[:2]
    if code.endswith("00"):
        return code[:4]
    return code


@dataclass(frozen=True, slots=True)
class StatsRequest:
    indicator: str
    by: tuple[str, ...]
    periods: tuple[Period, ...]
    region: str | None = None
    region_level: RegionLevel = "province"

    @property
    def grain(self) -> str:
        return self.periods[0].grain

    @property
    def period_text(self) -> str:
        first, last = self.periods[0].key, self.periods[-1].key
        return first if first == last else f"{first}..{last}"

    def check(self, indicator: Indicator, dimension_names: tuple[str, ...]) -> None:
        unknown = [d for d in self.by if d not in dimension_names]
        if unknown:
            raise StatsError(
                "bad_request",
                f"{indicator.name} cannot be grouped by {', '.join(unknown)}; "
                f"it has: {', '.join(dimension_names)}",
            )
        if len(set(self.by)) != len(self.by):
            raise StatsError("bad_request", "a dimension is named twice in 'by'")

    def to_wire(self) -> dict[str, Any]:
        return {
            "indicator": self.indicator,
            "by": list(self.by),
            "period": self.period_text,
            "region": self.region,
            "region_level": self.region_level,
        }

    @classmethod
    def parse(
        cls,
        indicator: str,
        by: str | list[str] | tuple[str, ...],
        period: str,
        region: str | None,
        region_level: str | None,
    ) -> StatsRequest:
        """From user or wire input; raises StatsError('bad_request', ...) with the fix."""
        names = (
            tuple(b.strip() for b in by.split(",") if b.strip())
            if isinstance(by, str)
            else tuple(by)
        )
        try:
            periods = parse_range(period)
        except PeriodError as exc:
            raise StatsError("bad_request", str(exc)) from None
        if region is not None and not _REGION.fullmatch(region):
            raise StatsError("bad_request", f"region {region!r} must be a 6-digit GB/T 2260 code")
        if region_level is None:
            depth = len(region_prefix(region)) if region else 0
            region_level = {0: "province", 2: "prefecture"}.get(depth, "county")
        if region_level not in LEVELS:
            raise StatsError("bad_request", "region level must be province, prefecture or county")
        return cls(indicator, names, periods, region, region_level)  # type: ignore[arg-type]
