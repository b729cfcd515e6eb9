"""What changed between two standards releases (`lsnet standards diff A B`).

`diff(a, b)` compares tables code by code and schemas field by field and returns a frozen
`ReleaseDiff`; `ReleaseDiff.render()` is the text an administrator reads before signing. A code
is *retired* when its latest entry gained an end date (it stays in the table), *removed* when it
is gone altogether, *changed* when any other attribute of its entries differs.

This module does not decide whether a change is allowed (e.g. that a release must not remove
codes); it only reports.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from hierarchy_config.standards.model import CodeEntry, CodeTable, RecordSchema, Release

__all__ = ["ReleaseDiff", "diff"]


@dataclass(frozen=True, slots=True)
class ReleaseDiff:
    a: str
    b: str
    tables_added: tuple[str, ...] = ()
    tables_removed: tuple[str, ...] = ()
    tables_changed: tuple[tuple[str, str], ...] = ()  # (table, what)
    codes_added: tuple[tuple[str, str], ...] = ()  # (table, code)
    codes_removed: tuple[tuple[str, str], ...] = ()
    codes_retired: tuple[tuple[str, str, str], ...] = ()  # (table, code, last valid day)
    codes_changed: tuple[tuple[str, str, str], ...] = ()  # (table, code, what)
    schemas_added: tuple[str, ...] = ()
    schemas_removed: tuple[str, ...] = ()
    schemas_changed: tuple[tuple[str, str], ...] = ()  # (schema, what)
    fields_added: tuple[tuple[str, str], ...] = ()  # (schema, field)
    fields_removed: tuple[tuple[str, str], ...] = ()
    fields_changed: tuple[tuple[str, str, str], ...] = ()  # (schema, field, what)
    indicators_added: tuple[str, ...] = ()
    indicators_removed: tuple[str, ...] = ()
    indicators_changed: tuple[str, ...] = ()
    replication_changed: tuple[tuple[str, str], ...] = ()  # (record type, "mode/min_cell a -> b")

    @property
    def empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self) if f.name not in ("a", "b"))

    def render(self, limit: int = 50) -> str:
        """Readable text; at most `limit` lines per section."""
        out = [f"standards release {self.a} -> {self.b}"]
        if self.empty:
            return out[0] + ": no differences"

        def section(title: str, items: tuple[tuple[str, ...], ...] | tuple[str, ...]) -> None:
            if not items:
                return
            out.append(f"{title} ({len(items)}):")
            for item in items[:limit]:
                out.append("  " + (" ".join(item) if isinstance(item, tuple) else item))
            if len(items) > limit:
                out.append(f"  … and {len(items) - limit} more")

        section("tables added", self.tables_added)
        section("tables removed", self.tables_removed)
        section("tables changed", self.tables_changed)
        section("codes added", self.codes_added)
        section("codes retired (table, code, last valid day)", self.codes_retired)
        section("codes removed", self.codes_removed)
        section("codes changed", self.codes_changed)
        section("record types added", self.schemas_added)
        section("record types removed", self.schemas_removed)
        section("record types changed", self.schemas_changed)
        section("fields added", self.fields_added)
        section("fields removed", self.fields_removed)
        section("fields changed", self.fields_changed)
        section("indicators added", self.indicators_added)
        section("indicators removed", self.indicators_removed)
        section("indicators changed", self.indicators_changed)
        section("replication changed (record type, policy)", self.replication_changed)
        return "\n".join(out)


def _entry_changes(old: tuple[CodeEntry, ...], new: tuple[CodeEntry, ...]) -> str:
    if len(old) != len(new):
        return f"{len(old)} -> {len(new)} validity periods"
    parts = []
    for before, after in zip(old, new, strict=True):
        for name in CodeEntry.__slots__:
            x, y = getattr(before, name), getattr(after, name)
            if x != y:
                parts.append(f"{name}: {x} -> {y}")
    return "; ".join(parts)


def _tables(a: CodeTable, b: CodeTable, out: dict[str, list[tuple[str, ...]]]) -> None:
    for attr in ("name", "standard", "extensible", "source", "licence"):
        if getattr(a, attr) != getattr(b, attr):
            out["tables_changed"].append(
                (a.id, f"{attr}: {getattr(a, attr)} -> {getattr(b, attr)}")
            )
    for code in sorted(a.codes | b.codes):
        old, new = a.versions(code), b.versions(code)
        if not old:
            out["codes_added"].append((a.id, code))
        elif not new:
            out["codes_removed"].append((a.id, code))
        elif old != new:
            latest_old, latest_new = a.lookup(code), b.lookup(code)
            if (
                latest_old is not None
                and latest_new is not None
                and latest_old.valid_to is None
                and latest_new.valid_to is not None
            ):
                out["codes_retired"].append((a.id, code, latest_new.valid_to.isoformat()))
            else:
                out["codes_changed"].append((a.id, code, _entry_changes(old, new)))


def _schemas(a: RecordSchema, b: RecordSchema, out: dict[str, list[tuple[str, ...]]]) -> None:
    for attr in ("system", "title", "natural_key", "business_date_field", "date_mode", "rules"):
        if getattr(a, attr) != getattr(b, attr):
            what = attr if attr == "rules" else f"{attr}: {getattr(a, attr)} -> {getattr(b, attr)}"
            out["schemas_changed"].append((a.name, what))
    for name in [*a.by_name, *(n for n in b.by_name if n not in a.by_name)]:
        old, new = a.by_name.get(name), b.by_name.get(name)
        if old is None:
            out["fields_added"].append((a.name, name))
        elif new is None:
            out["fields_removed"].append((a.name, name))
        elif old != new:
            changes = [
                f"{attr}: {getattr(old, attr)} -> {getattr(new, attr)}"
                for attr in FIELD_ATTRS
                if getattr(old, attr) != getattr(new, attr)
            ]
            out["fields_changed"].append((a.name, name, "; ".join(changes)))


FIELD_ATTRS = ("type", "required", "max_len", "code_table", "title")


def diff(a: Release, b: Release) -> ReleaseDiff:
    out: dict[str, list[tuple[str, ...]]] = {
        name: []
        for name in (
            "tables_changed",
            "codes_added",
            "codes_removed",
            "codes_retired",
            "codes_changed",
            "schemas_changed",
            "fields_added",
            "fields_removed",
            "fields_changed",
        )
    }
    for table_id in sorted(set(a.tables) & set(b.tables)):
        _tables(a.tables[table_id], b.tables[table_id], out)
    for name in sorted(set(a.schemas) & set(b.schemas)):
        _schemas(a.schemas[name], b.schemas[name], out)
    shared = sorted(set(a.indicators) & set(b.indicators))
    replication = []
    for name in sorted(set(a.schemas) | set(b.schemas)):
        old, new = a.policy(name), b.policy(name)
        if old != new:
            what = f"{old.mode}/{old.min_cell} -> {new.mode}/{new.min_cell}"
            replication.append((name, what))
    return ReleaseDiff(
        indicators_added=tuple(sorted(set(b.indicators) - set(a.indicators))),
        indicators_removed=tuple(sorted(set(a.indicators) - set(b.indicators))),
        indicators_changed=tuple(n for n in shared if a.indicators[n] != b.indicators[n]),
        replication_changed=tuple(replication),
        a=a.id,
        b=b.id,
        tables_added=tuple(sorted(set(b.tables) - set(a.tables))),
        tables_removed=tuple(sorted(set(a.tables) - set(b.tables))),
        schemas_added=tuple(sorted(set(b.schemas) - set(a.schemas))),
        schemas_removed=tuple(sorted(set(a.schemas) - set(b.schemas))),
        **{name: tuple(items) for name, items in out.items()},  # type: ignore[arg-type]
    )
