"""The immutable standards release: code tables, record schemas, rules (DESIGN.md §5).

Frozen dataclasses only, checked on construction: a `CodeTable` has no two entries of one code
valid on the same day, every parent exists, no period ends before it starts; a `RecordSchema`'s
natural key, business-date field and rule parameters name fields it has, and its field types are
known. `Release.to_bytes()` / `Release.from_bytes()` are the canonical JSON form (see
`hierarchy_config.standards.codec`), `Release.digest()` its SHA-256.

This module does no I/O, no signing (that wraps the exact bytes of `to_bytes()` elsewhere), no
CSV/TOML reading (`build`), and does not validate records (`validate`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from hierarchy_config.standards.indicators import Indicator, RecordPolicy

__all__ = [
    "FIELD_TYPES",
    "RULE_KINDS",
    "SYSTEMS",
    "CodeEntry",
    "CodeTable",
    "FieldDef",
    "InvalidStandards",
    "ParamValue",
    "RecordSchema",
    "Release",
    "Rule",
    "StandardsError",
    "StandardsFormatError",
]

# The seven business systems of the labour and social-insurance MIS, plus shared base records.
SYSTEMS: tuple[str, ...] = (
    "base",
    "employment",  # 就业服务与失业保险
    "pension",  # 养老保险
    "medical",  # 医疗 (含生育) 保险
    "injury",  # 工伤保险
    "wage",  # 工资收入
    "labour_relations",  # 劳动关系
    "skills",  # 职业技能开发
)
FIELD_TYPES: frozenset[str] = frozenset(
    {"str", "int", "date", "ym", "ts", "bool", "person_id", "uscc", "region"}
    | {"industry", "country", "period"}
)
_DEC_TYPE = re.compile(r"dec\((\d{1,2}),(\d{1,2})\)")
# kind -> (required parameter names, names of parameters that must be fields of the schema)
RULE_KINDS: Mapping[str, tuple[frozenset[str], frozenset[str]]] = MappingProxyType(
    {
        "id_gender": (frozenset({"id_field", "gender_field"}), frozenset({"id_field"})),
        "id_birth_date": (frozenset({"id_field", "date_field"}), frozenset({"id_field"})),
        "id_birthplace": (frozenset({"id_field", "table"}), frozenset({"id_field"})),
        "sum_equals": (frozenset({"total", "parts"}), frozenset({"total"})),
        "max_value": (frozenset({"field", "max"}), frozenset({"field"})),
        "min_value": (frozenset({"field", "min"}), frozenset({"field"})),
        "field_lte": (frozenset({"left", "right"}), frozenset({"left", "right"})),
        "one_of": (frozenset({"field", "values"}), frozenset({"field"})),
        "code_slice": (frozenset({"field", "start", "end", "table"}), frozenset({"field"})),
    }
)
ParamValue = str | int | bool | tuple[str, ...]
Severity = Literal["error", "warning"]


class StandardsError(Exception):
    """Base of every error about standards releases and extensions."""


class InvalidStandards(StandardsError, ValueError):
    """A release (or part of one) breaks an invariant; `path` locates it, e.g. `tables.CT_X`."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[InvalidStandards], tuple[str, str]]:
        return (type(self), (self.path, self.reason))


class StandardsFormatError(InvalidStandards):
    """Bytes that are not a well-formed release or extension; `path` is inside the document."""


def is_dec_type(kind: str) -> bool:
    match = _DEC_TYPE.fullmatch(kind)
    return (
        match is not None and int(match.group(1)) > 0 and int(match.group(2)) <= int(match.group(1))
    )


@dataclass(frozen=True, slots=True)
class CodeEntry:
    """One code of a table, valid from `valid_from` to `valid_to` inclusive (None = open)."""

    code: str
    name: str
    parent: str | None = None
    level: int = 1
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None
    replacement: str | None = None
    stat_item: str | None = None

    def valid_on(self, on: dt.date | None) -> bool:
        """Valid on `on`; with `on=None`, valid at some time (always true)."""
        if on is None:
            return True
        return (self.valid_from is None or self.valid_from <= on) and (
            self.valid_to is None or on <= self.valid_to
        )

    def overlaps(self, other: CodeEntry) -> bool:
        lo = max(self.valid_from or dt.date.min, other.valid_from or dt.date.min)
        hi = min(self.valid_to or dt.date.max, other.valid_to or dt.date.max)
        return lo <= hi


@dataclass(frozen=True, slots=True)
class CodeTable:
    """A code table; a code may appear several times with disjoint validity periods."""

    id: str
    name: str
    standard: str
    extensible: bool
    entries: tuple[CodeEntry, ...]
    source: str = ""
    licence: str = ""
    _index: Mapping[str, tuple[CodeEntry, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        path = f"tables.{self.id}"
        if not re.fullmatch(r"CT_[A-Z0-9_]{1,40}", self.id):
            raise InvalidStandards(path, "table id must look like CT_NAME (capitals, digits, _)")
        index: dict[str, list[CodeEntry]] = {}
        for n, entry in enumerate(self.entries):
            where = f"{path}.entries[{n}]"
            problem = entry_problem(entry)
            if problem:
                raise InvalidStandards(where, problem)
            for other in index.get(entry.code, ()):
                if other.overlaps(entry):
                    raise InvalidStandards(
                        where, f"code {entry.code!r} appears twice with overlapping validity"
                    )
            index.setdefault(entry.code, []).append(entry)
        for n, entry in enumerate(self.entries):
            if entry.parent is not None and entry.parent not in index:
                raise InvalidStandards(
                    f"{path}.entries[{n}]", f"parent {entry.parent!r} is not a code of this table"
                )
            if entry.replacement is not None and entry.replacement not in index:
                raise InvalidStandards(
                    f"{path}.entries[{n}]",
                    f"replacement {entry.replacement!r} is not a code of this table",
                )
        frozen = {code: tuple(items) for code, items in index.items()}
        object.__setattr__(self, "_index", MappingProxyType(frozen))

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(self._index)

    def versions(self, code: str) -> tuple[CodeEntry, ...]:
        """Every entry of `code`, oldest first as listed."""
        return self._index.get(code, ())

    def lookup(self, code: str, on: dt.date | None = None) -> CodeEntry | None:
        """The entry of `code` valid on `on`; with `on=None`, its latest entry (any period)."""
        items = self._index.get(code, ())
        if on is None:
            return max(items, key=_latest_key) if items else None
        return next((e for e in items if e.valid_on(on)), None)

    def current(self) -> tuple[CodeEntry, ...]:
        """Entries with no end date."""
        return tuple(e for e in self.entries if e.valid_to is None)


def _latest_key(entry: CodeEntry) -> tuple[dt.date, dt.date]:
    return (entry.valid_to or dt.date.max, entry.valid_from or dt.date.min)


def entry_problem(entry: CodeEntry) -> str | None:
    """Why an entry is malformed on its own, or None."""
    if not entry.code or entry.code != entry.code.strip() or any(c in entry.code for c in ",|"):
        return "code must be non-empty, without surrounding spaces, ',' or '|'"
    if len(entry.code) > 20:
        return "code must be at most 20 characters"
    if not entry.name.strip():
        return f"code {entry.code!r} has an empty name"
    if not 1 <= entry.level <= 9:
        return f"code {entry.code!r}: level must be 1 to 9"
    if entry.parent == entry.code or entry.replacement == entry.code:
        return f"code {entry.code!r} cannot be its own parent or replacement"
    if entry.valid_from and entry.valid_to and entry.valid_to < entry.valid_from:
        return f"code {entry.code!r}: valid_to is before valid_from"
    return None


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One field of a record schema; `type` is one of FIELD_TYPES or `dec(p,s)`."""

    name: str
    type: str
    required: bool = False
    max_len: int | None = None
    code_table: str | None = None
    title: str = ""


@dataclass(frozen=True, slots=True)
class Rule:
    """A cross-field rule; `kind` is one of RULE_KINDS, `params` its (JSON-able) arguments."""

    id: str
    severity: Severity
    kind: str
    params: Mapping[str, ParamValue]

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(sorted(self.params.items()))))

    def param_str(self, name: str) -> str:
        value = self.params[name]
        return value if isinstance(value, str) else str(value)

    def param_list(self, name: str) -> tuple[str, ...]:
        value = self.params[name]
        return value if isinstance(value, tuple) else (str(value),)


@dataclass(frozen=True, slots=True)
class RecordSchema:
    """A record type: fields, natural key, business date and rules.

    `business_date_field` names the date (or ym/ts) field against which code fields are checked;
    `date_mode` "on" means a code must be valid on that date (events: a contribution's fee
    month), "since" that it must still have been valid on or after it (master data whose code
    fields describe the present: an employer registered in 1990 may sit in a district created in
    2017). No business date: a code must be valid at some time.
    """

    name: str
    system: str
    title: str
    fields: tuple[FieldDef, ...]
    natural_key: tuple[str, ...]
    business_date_field: str | None = None
    rules: tuple[Rule, ...] = ()
    date_mode: Literal["on", "since"] = "on"
    by_name: Mapping[str, FieldDef] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        path = f"schemas.{self.name}"
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", self.name):
            raise InvalidStandards(path, "record type must be lower_snake_case")
        if self.system not in SYSTEMS:
            raise InvalidStandards(path + ".system", "must be one of " + ", ".join(SYSTEMS))
        by_name: dict[str, FieldDef] = {}
        for spec in self.fields:
            where = f"{path}.fields.{spec.name}"
            if spec.name in by_name or spec.name in ("type", "deleted"):
                raise InvalidStandards(where, "field name is duplicated or reserved")
            if spec.type not in FIELD_TYPES and not is_dec_type(spec.type):
                raise InvalidStandards(where + ".type", f"unknown field type {spec.type!r}")
            if spec.max_len is not None and spec.max_len < 1:
                raise InvalidStandards(where + ".max_len", "must be positive")
            by_name[spec.name] = spec
        if not self.natural_key or not set(self.natural_key) <= set(by_name):
            raise InvalidStandards(path + ".natural_key", "must name fields of the schema")
        date_field = self.business_date_field
        if date_field is not None and (
            date_field not in by_name or by_name[date_field].type not in ("date", "ym", "ts")
        ):
            raise InvalidStandards(
                path + ".business_date_field", "must name a date, ym or ts field of the schema"
            )
        if self.date_mode not in ("on", "since"):
            raise InvalidStandards(path + ".date_mode", "must be 'on' or 'since'")
        seen: set[str] = set()
        for n, rule in enumerate(self.rules):
            problem = _rule_problem(rule, by_name)
            if rule.id in seen:
                problem = f"rule id {rule.id!r} is duplicated"
            if problem:
                raise InvalidStandards(f"{path}.rules[{n}]", problem)
            seen.add(rule.id)
        object.__setattr__(self, "by_name", MappingProxyType(by_name))


def _rule_problem(rule: Rule, fields: Mapping[str, FieldDef]) -> str | None:
    if rule.severity not in ("error", "warning"):
        return "severity must be 'error' or 'warning'"
    spec = RULE_KINDS.get(rule.kind)
    if spec is None:
        return f"unknown rule kind {rule.kind!r}; known: " + ", ".join(sorted(RULE_KINDS))
    required, field_params = spec
    if set(rule.params) != required:
        return f"rule {rule.kind} takes exactly the parameters " + ", ".join(sorted(required))
    names = [rule.param_str(p) for p in field_params]
    if rule.kind == "sum_equals":
        names += [p.removeprefix("-") for p in rule.param_list("parts")]
    for name in names:
        if name not in fields:
            return f"rule {rule.id!r} names {name!r}, which is not a field of the schema"
    return None


@dataclass(frozen=True, slots=True)
class Release:
    """One immutable, versioned standards release."""

    version: int
    name: str
    created: dt.datetime
    expires: dt.datetime
    note: str
    tables: Mapping[str, CodeTable]
    schemas: Mapping[str, RecordSchema]
    # Statistics (hierarchy_config.standards.indicators): indicators, per-type replication
    # policies and the policy of types not listed. Empty in releases made before them.
    indicators: Mapping[str, Indicator] = field(default_factory=dict)
    policies: Mapping[str, RecordPolicy] = field(default_factory=dict)
    default_policy: RecordPolicy | None = None

    def __post_init__(self) -> None:
        from hierarchy_config.standards.indicators import check_indicators

        if self.version < 1:
            raise InvalidStandards("version", "must be a positive integer")
        for name in ("created", "expires"):
            value: dt.datetime = getattr(self, name)
            if value.utcoffset() != dt.timedelta(0):
                raise InvalidStandards(name, "must be a UTC datetime")
        if self.expires <= self.created:
            raise InvalidStandards("expires", "must be after created")
        for key, table in self.tables.items():
            if key != table.id:
                raise InvalidStandards(f"tables.{key}", f"holds table {table.id!r}")
        for key, schema in self.schemas.items():
            if key != schema.name:
                raise InvalidStandards(f"schemas.{key}", f"holds schema {schema.name!r}")
            for spec in schema.fields:
                if spec.code_table is not None and spec.code_table not in self.tables:
                    raise InvalidStandards(
                        f"schemas.{key}.fields.{spec.name}.code_table",
                        f"table {spec.code_table!r} is not in this release",
                    )
            for n, rule in enumerate(schema.rules):
                if "table" in rule.params and rule.param_str("table") not in self.tables:
                    raise InvalidStandards(
                        f"schemas.{key}.rules[{n}]", f"table {rule.param_str('table')!r} is unknown"
                    )
        check_indicators(self.indicators, self.schemas, self.tables, self.policies)
        object.__setattr__(self, "tables", MappingProxyType(dict(sorted(self.tables.items()))))
        object.__setattr__(self, "schemas", MappingProxyType(dict(sorted(self.schemas.items()))))
        for part in ("indicators", "policies"):
            items: Mapping[str, object] = getattr(self, part)
            object.__setattr__(self, part, MappingProxyType(dict(sorted(items.items()))))

    @property
    def id(self) -> str:
        return f"{self.version}"

    def table(self, table_id: str) -> CodeTable | None:
        return self.tables.get(table_id)

    def policy(self, record_type: str) -> RecordPolicy:
        """How `record_type` replicates and its minimum cell size (the default if not listed)."""
        from hierarchy_config.standards.indicators import DEFAULT_POLICY

        found = self.policies.get(record_type) or self.default_policy
        return found if found is not None else DEFAULT_POLICY

    def local_record_types(self) -> frozenset[str]:
        """Record types that stay at the node that wrote them (mode 3)."""
        return frozenset(name for name in self.schemas if self.policy(name).mode == "local")

    def to_bytes(self) -> bytes:
        from hierarchy_config.standards.codec import encode_release

        return encode_release(self)

    @classmethod
    def from_bytes(cls, data: bytes, max_bytes: int | None = None) -> Release:
        from hierarchy_config.standards.codec import MAX_RELEASE_BYTES, decode_release

        return decode_release(data, MAX_RELEASE_BYTES if max_bytes is None else max_bytes)

    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()
