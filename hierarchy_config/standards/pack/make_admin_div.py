"""Regenerate `tables/CT_ADMIN_DIV.csv` (GB/T 2260 divisions with validity) from python-stdnum.

Run with the project's interpreter: `python hierarchy_config/standards/pack/make_admin_div.py`.
It reads `stdnum/cn/loc.dat` of the *installed* python-stdnum, turns each dated entry
(`[1983-2021]下城区`) into a row valid from 1 January of the first year to 31 December of the
last, derives level (1 province `XX0000`, 2 prefecture `XXXX00`, 3 county) and parent (the
prefecture when the table has it, else the province), then applies `OVERLAY`: the 2021 Hangzhou
changes that stdnum's data lacks. Where stdnum's year ranges of one code touch (`[1983-1994]A,
[1994-]B`), the later entry starts on 1 January of the following year so that at most one entry is
valid on any day. A reversed range (`[1983-1982]郊区`, which loc.dat uses for "until 1982")
keeps its end year and loses its start year.

This script is a build tool, not part of the runtime: nothing imports it, and it never touches
the network. It prints the number of rows written.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import stdnum

HEADER = ("code", "name", "parent", "level", "valid_from", "valid_to", "replacement", "stat_item")
_PROVINCE = re.compile(r'^(\d{2}) province="([^"]*)"\s*$')
_COUNTY = re.compile(r'^\s+(\d{4}) county="([^"]*)"\s*$')
_SPAN = re.compile(r"\[(\d*)-(\d*)\](.*)")

# Hand-added rows (国函〔2021〕22号, Hangzhou district merger of 2021), missing from stdnum 2.2.
OVERLAY_NEW: tuple[tuple[str, str, int], ...] = (
    ("330113", "临平区", 2021),
    ("330114", "钱塘区", 2021),
)
# Retired code -> the code that took over most of its area (used as the `replacement` column).
OVERLAY_REPLACEMENT: dict[str, str] = {"330103": "330105", "330104": "330102"}


@dataclass
class Row:
    code: str
    name: str
    start: int | None
    end: int | None
    replacement: str = ""


def parse_loc(text: str) -> list[Row]:
    """Every 6-digit entry of loc.dat, in file order."""
    rows: list[Row] = []
    prefix = ""
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        province = _PROVINCE.match(line)
        if province:
            prefix = province.group(1)
            continue
        county = _COUNTY.match(line)
        if county is None:
            raise ValueError(f"unexpected line in loc.dat: {line!r}")
        for part in county.group(2).split(","):
            span = _SPAN.fullmatch(part)
            code = prefix + county.group(1)
            if span is None:
                rows.append(Row(code, part, None, None))
            else:
                start, end, name = span.groups()
                rows.append(
                    Row(code, name, int(start) if start else None, int(end) if end else None)
                )
    return rows


def _fix_touching(rows: list[Row]) -> None:
    """Make periods of one code disjoint: a later entry starts the year after the earlier ends."""
    by_code: dict[str, list[Row]] = {}
    for row in rows:
        by_code.setdefault(row.code, []).append(row)
    for entries in by_code.values():
        for row in entries:
            if row.start is not None and row.end is not None and row.end < row.start:
                row.start = None  # loc.dat writes "[1983-1982]" for "until 1982, start unknown"
        entries.sort(key=lambda r: r.start or 0)
        for before, after in itertools.pairwise(entries):
            if before.end is not None and after.start is not None and after.start <= before.end:
                after.start = before.end + 1
            if after.end is not None and after.start is not None and after.end < after.start:
                after.end = after.start


def _level(code: str) -> int:
    return 1 if code[2:] == "0000" else 2 if code[4:] == "00" else 3


def build_rows(text: str) -> list[tuple[str, ...]]:
    rows = parse_loc(text)
    known = {row.code for row in rows}
    for code, name, year in OVERLAY_NEW:
        if code not in known:
            rows.append(Row(code, name, year, None))
    for row in rows:
        if row.code in OVERLAY_REPLACEMENT and row.end is not None:
            row.replacement = OVERLAY_REPLACEMENT[row.code]
    _fix_touching(rows)
    known = {row.code for row in rows}
    out: list[tuple[str, ...]] = []
    for row in sorted(rows, key=lambda r: (r.code, r.start or 0)):
        level = _level(row.code)
        parent = ""
        if level == 2:
            parent = row.code[:2] + "0000"
        elif level == 3:
            parent = row.code[:4] + "00" if row.code[:4] + "00" in known else row.code[:2] + "0000"
        out.append(
            (
                row.code,
                row.name,
                parent,
                str(level),
                f"{row.start:04d}-01-01" if row.start else "",
                f"{row.end:04d}-12-31" if row.end else "",
                row.replacement,
                "",
            )
        )
    return out


def render(rows: list[tuple[str, ...]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return buffer.getvalue()


def loc_path() -> Path:
    return Path(stdnum.__file__).parent / "cn" / "loc.dat"


def main() -> int:
    rows = build_rows(loc_path().read_text(encoding="utf-8"))
    target = Path(__file__).parent / "tables" / "CT_ADMIN_DIV.csv"
    target.write_text(render(rows), encoding="utf-8")
    print(f"wrote {len(rows)} rows to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
