"""Read the statistics part of a standards pack: `indicators/*.toml` and `replication.toml`.

* `indicators/<name>.toml`: one indicator per file, the keys of
  `hierarchy_config.standards.indicators.Indicator` (`name`, `title`, `kind`, `record_type`,
  `measure = {kind, field | fields}`, `filters = [{field, values, negate}]`, `region_field`,
  `period_field` or `start_field`/`end_field`/`end_when`, `dimensions = [{name, field, length}]`
  (plus `via`, `on` for a field of a linked record, e.g. the employer's industry);
  a ratio names `numerator`, `denominator` and optionally `factor`);
* `replication.toml`: `[default]` and `[types.<record_type>]` tables with `mode`
  (`replicate` | `local`) and `min_cell`.

Both are optional (a pack without them builds a release without statistics). Whether indicators
fit the release's schemas and code tables is checked when the `Release` is made; `build` maps
those errors to the file that caused them. No network, no clock.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from hierarchy_config.standards.indicators import (
    Indicator,
    RecordPolicy,
    indicator_from_json,
    policy_from_json,
)
from hierarchy_config.standards.model import InvalidStandards, StandardsError

__all__ = ["StatsFileError", "StatsParts", "error_file", "read_stats"]


class StatsFileError(StandardsError, ValueError):
    def __init__(self, file: str, column: str, reason: str) -> None:
        super().__init__(f"{file}: {column}: {reason}")
        self.file, self.column, self.reason = file, column, reason


StatsParts = tuple[dict[str, Indicator], dict[str, RecordPolicy], RecordPolicy | None]


def _toml(path: Path, file: str) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise StatsFileError(file, "", f"not valid TOML: {exc}") from None


def read_stats(folder: Path) -> StatsParts:
    """Indicators, per-type policies and the default policy of a pack folder."""
    indicators: dict[str, Indicator] = {}
    for path in sorted((folder / "indicators").glob("*.toml")):
        file = f"indicators/{path.name}"
        doc = _toml(path, file)
        name = doc.pop("name", None)
        if not isinstance(name, str):
            raise StatsFileError(file, "name", "must be a string")
        if name in indicators:
            raise StatsFileError(file, "name", f"{name!r} is defined twice")
        try:
            indicators[name] = indicator_from_json(name, doc, name)
        except InvalidStandards as exc:
            raise StatsFileError(file, exc.path.partition(".")[2] or exc.path, exc.reason) from None
    policies: dict[str, RecordPolicy] = {}
    default: RecordPolicy | None = None
    path = folder / "replication.toml"
    if path.exists():
        doc = _toml(path, "replication.toml")
        for key in sorted(set(doc) - {"default", "types"}):
            raise StatsFileError(
                "replication.toml", key, "unknown key; use [default] or [types.NAME]"
            )
        try:
            if "default" in doc:
                default = policy_from_json(doc["default"], "default")
            types = doc.get("types", {})
            if not isinstance(types, dict):
                raise InvalidStandards("types", "must be a table")
            for name, value in types.items():
                policies[name] = policy_from_json(value, f"types.{name}")
        except InvalidStandards as exc:
            raise StatsFileError("replication.toml", exc.path, exc.reason) from None
    return indicators, policies, default


def error_file(path: str) -> str | None:
    """The pack file an `InvalidStandards.path` of the statistics part points at."""
    head, _, rest = path.partition(".")
    if head == "indicators":
        return f"indicators/{rest.partition('.')[0]}.toml"
    if head == "replication":
        return "replication.toml"
    return None
