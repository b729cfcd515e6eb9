"""Region roll-up along the GB/T 2260 hierarchy, read from the release's CT_ADMIN_DIV table.

A 6-digit code rolls up by prefix (`330106` → prefecture `330100` → province `330000`), with the
exceptions of domain.md §1.2, all taken from the code table's entries and parent links rather
than from a hard-coded list:

* **municipalities** (the provinces whose prefecture-level children are the pseudo-prefectures
  `XX0100` 市辖区 / `XX0200` 县: 11, 12, 31, 50 in the shipped table): they *are* the
  prefecture-level unit, so at the prefecture level `110105` rolls up to `110000`, never to the
  pseudo-prefecture `110100`;
* **county-level units administered directly by a province** (children of a `XX90`-style group
  whose name says 直辖, e.g. `429000` 省直辖县级行政单位, or county-level entries whose parent is
  the province itself, e.g. Hainan's `4600xx` of 1988–2002): they have no prefecture; at the
  prefecture level each one stands for itself (`429004` 仙桃市 stays `429004`) and its parent is
  the province. The grouping row `429000` is never used as a prefecture;
* **province codes** (`330000`, records of provincial bodies) stay themselves at every level;
* **NBS development zones** (`XXXX71`–`XXXX79`, not in GB/T 2260 and so not in the table): they
  are not admin units; they keep their own code at the county level and roll up to their
  prefecture by prefix (`130171` → `130100`), which is where NBS attaches them. (Codes ending
  81–89 are county-level cities, real GB/T 2260 units, and are in the table.)

`RegionRollup.key` is the Python roll-up; `node.stats.query` builds the same mapping as one SQL
CASE expression from `municipalities` and `direct_prefixes`, and a test checks that both agree
for every code of the table. Pure: no database.
"""

from __future__ import annotations

from dataclasses import dataclass

from hierarchy_config.standards.model import CodeTable, Release

__all__ = ["ADMIN_TABLE", "FALLBACK", "RegionRollup", "rollup_for"]

ADMIN_TABLE = "CT_ADMIN_DIV"
_MUNICIPAL_GROUP = "市辖区"  # the pseudo-prefecture XX0100 of a municipality
_DIRECT_MARK = "直辖"  # 省直辖县级行政单位, 自治区直辖县级行政单位, 省直辖行政单位


@dataclass(frozen=True, slots=True)
class RegionRollup:
    municipalities: frozenset[str]  # 2-digit province prefixes
    direct_prefixes: frozenset[str]  # 4-digit prefixes of province-administered county units

    @classmethod
    def from_table(cls, table: CodeTable) -> RegionRollup:
        munis: set[str] = set()
        direct: set[str] = set()
        regular: set[str] = set()  # prefixes also used by a real prefecture (at some time)
        levels = {e.code: e.level for e in table.entries}
        for e in table.entries:
            if e.level == 2 and e.name == _MUNICIPAL_GROUP and e.code[2:] == "0100":
                munis.add(e.code[:2])
            if e.level == 2:
                (direct if _DIRECT_MARK in e.name else regular).add(e.code[:4])
            if e.level == 3 and e.parent is not None and levels.get(e.parent) == 1:
                direct.add(e.code[:4])
        return cls(frozenset(munis), frozenset(direct - regular))

    def key(self, code: str, level: str) -> str:
        """The group key of `code` at `level` (province, prefecture or county)."""
        if level == "county" or len(code) != 6:
            return code
        if level == "province" or code[2:] == "0000":
            return code[:2] + "0000"
        if code[:2] in self.municipalities:
            return code[:2] + "0000"
        if code[:4] in self.direct_prefixes:
            return code
        return code[:4] + "00"


# Used when a release has no CT_ADMIN_DIV table (the four municipalities of domain.md §1.2).
FALLBACK = RegionRollup(frozenset({"11", "12", "31", "50"}), frozenset())
_CACHE: dict[int, tuple[CodeTable, RegionRollup]] = {}


def rollup_for(release: Release) -> RegionRollup:
    """The roll-up of the release's CT_ADMIN_DIV table (cached per table object)."""
    table = release.table(ADMIN_TABLE)
    if table is None:
        return FALLBACK
    hit = _CACHE.get(id(table))
    if hit is not None and hit[0] is table:
        return hit[1]
    rollup = RegionRollup.from_table(table)
    if len(_CACHE) >= 8:
        _CACHE.clear()
    _CACHE[id(table)] = (table, rollup)
    return rollup
