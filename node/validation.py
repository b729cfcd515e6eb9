"""Which rules a node validates records with: the standards release in force, or the built-in
schemas before any release has been verified.

`RecordValidator` is the one interface ingest (HTTP, CLI import) and receivers use. The release
in force is read from the node's verified standards state (`StandardsChannel` while running,
`release_in_force()` for offline commands). This module does not fetch or verify releases.

Both validators here also offer `accepts_normalised(record_type, key, deleted, payload)`, a
receiver's fast path (issue 8, `node.recheck`): True when the record is proven valid, already
normalised and keyed `key`, without running `validate`; False when not proven (tombstones
always), and the caller must then run `validate`. `accepts_normalised_all(record_type, keys,
payloads)` gives the same proof for all records of one type of a batch at once (no tombstones).
They are optional extras, not part of `RecordValidator`: a validator without them (a wrapper
with its own rules, say) is simply always checked in full. A subclass that changes `validate`
must override both too (return False).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Protocol

from hierarchy_config.model import Level, NodeConfig
from hierarchy_config.standards import (
    EffectiveStandards,
    Extension,
    Issue,
    Release,
    StandardsError,
)
from hierarchy_config.standards import validate_record as validate_with_release
from hierarchy_config.standards.recheck import release_plan
from node.recheck import FieldRecheck, RecheckPlan
from node.records import RECORD_TYPES, RecordSchema, ValidRecord, canonical_check
from node.records import _normalise_uncached as normalise_builtin
from node.records import validate_record as validate_builtin
from node.store import BUILTIN_STANDARDS

log = logging.getLogger("lsnet.standards")


class RecordValidator(Protocol):
    @property
    def standards_id(self) -> str: ...

    def validate(self, obj: Mapping[str, Any]) -> tuple[ValidRecord, tuple[Issue, ...]]:
        """The valid record and its warnings; raises RecordInvalid."""

    def natural_key(self, record_type: str) -> tuple[str, ...] | None: ...


def _builtin_plan(schema: RecordSchema) -> RecheckPlan:
    fields = [
        FieldRecheck(s.name, s.required, partial(normalise_builtin, s), canonical_check(s))
        for s in schema.fields
    ]
    checks = schema.checks

    def check(payload: Mapping[str, str]) -> bool:
        try:
            for run in checks:
                run(payload)
        except Exception:  # RecordInvalid (or worse): the full validator says which
            return False
        return True

    return RecheckPlan(fields, schema.natural_key, record_check=check if checks else None)


# The built-in schemas are module constants, and BuiltinValidator is made per batch: one plan
# per record type for the process, so what it learns is kept.
_BUILTIN_PLANS: dict[str, RecheckPlan] = {}


class _ProvenByPlans:
    """The fast paths both validators offer, made with each one's `_plan(record_type)`."""

    def _plan(self, record_type: str) -> RecheckPlan | None:
        raise NotImplementedError

    def accepts_normalised(
        self, record_type: str, key: str, deleted: bool, payload: Mapping[str, str]
    ) -> bool:
        """True if `validate` would accept the record unchanged with natural key `key`; False
        when not proven (then run `validate`)."""
        if deleted:
            return False
        plan = self._plan(record_type)
        return plan is not None and plan.accepts(key, payload)

    def accepts_normalised_all(
        self, record_type: str, keys: Sequence[str], payloads: Sequence[Mapping[str, str]]
    ) -> bool:
        """True if `accepts_normalised` would be True for every record of `record_type` (no
        tombstones) keyed `keys` with `payloads`; False when not proven for all of them."""
        plan = self._plan(record_type)
        return plan is not None and plan.accepts_all(keys, payloads)


class BuiltinValidator(_ProvenByPlans):
    standards_id = BUILTIN_STANDARDS

    def validate(self, obj: Mapping[str, Any]) -> tuple[ValidRecord, tuple[Issue, ...]]:
        return validate_builtin(obj), ()

    def natural_key(self, record_type: str) -> tuple[str, ...] | None:
        schema = RECORD_TYPES.get(record_type)
        return None if schema is None else schema.natural_key

    def _plan(self, record_type: str) -> RecheckPlan | None:
        plan = _BUILTIN_PLANS.get(record_type)
        if plan is None:
            schema = RECORD_TYPES.get(record_type)
            if schema is None:
                return None
            plan = _BUILTIN_PLANS.setdefault(record_type, _builtin_plan(schema))
        return plan


class ReleaseValidator(_ProvenByPlans):
    def __init__(self, standards: EffectiveStandards) -> None:
        self.standards = standards
        self.standards_id = f"std-{standards.id}"
        # Per record type: its fast re-check, or None when it has none (built on first use).
        self._plans: dict[str, RecheckPlan | None] = {}

    def validate(self, obj: Mapping[str, Any]) -> tuple[ValidRecord, tuple[Issue, ...]]:
        result = validate_with_release(self.standards, obj)
        return result.record, result.warnings

    def natural_key(self, record_type: str) -> tuple[str, ...] | None:
        schema = self.standards.schemas.get(record_type)
        return None if schema is None else schema.natural_key

    def _plan(self, record_type: str) -> RecheckPlan | None:
        try:
            return self._plans[record_type]
        except KeyError:
            schema = self.standards.schemas.get(record_type)
            if schema is None:
                return None
            return self._plans.setdefault(record_type, release_plan(self.standards, schema))


def own_province(config: NodeConfig) -> str | None:
    """The province whose local extensions apply to this node's own records."""
    if config.level is Level.PROVINCE:
        return config.node_id
    if config.level is Level.CITY and config.parent is not None:
        return config.parent.id
    return None


def followed_provinces(config: NodeConfig) -> tuple[str, ...]:
    """Provinces whose extensions this node verifies: its own, or (ministry) every province,
    so records from each subtree are validated with that subtree's local codes."""
    if config.level is Level.MINISTRY:
        return config.child_ids()
    own = own_province(config)
    return (own,) if own else ()


@lru_cache(maxsize=4)
def _effective(release: bytes, extension: bytes | None) -> ReleaseValidator:
    """Parsed once per process for the same verified bytes: releases and extensions are
    immutable, and decoding one costs about a second and tens of MiB. Many nodes in one process
    (`lsnet demo`, `lsnet simulate`, tests) share the result instead of each holding a copy."""
    parsed = Release.from_bytes(release)
    extensions = () if extension is None else (Extension.from_bytes(extension),)
    return ReleaseValidator(EffectiveStandards(parsed, extensions))


class Validators:
    """The release in force with, per province, that province's extension merged in."""

    def __init__(self, config: NodeConfig, release: bytes, extensions: Mapping[str, bytes]) -> None:
        self.config = config
        self.plain = _effective(release, None)
        self.by_province = {p: _effective(release, data) for p, data in extensions.items()}

    def own(self) -> ReleaseValidator:
        """For records written at this node."""
        province = own_province(self.config)
        return self.by_province.get(province, self.plain) if province else self.plain

    def for_origin(self, origin: str) -> ReleaseValidator:
        """For records received from `origin` (below this node)."""
        if self.config.level is Level.MINISTRY:
            province = self.config.route_of(origin)
            return self.by_province.get(province, self.plain) if province else self.plain
        return self.own()


def release_in_force(config: NodeConfig) -> RecordValidator:
    """For offline commands: the validator of the last verified release, or the built-in one."""
    from security.standards_trust import StandardsTrustError
    from security.tuf_client import StandardsClient

    settings = config.standards
    if settings.trusted_root is None or not Path(settings.state_dir).exists():
        return BuiltinValidator()

    def offline(relative: str, limit: int) -> bytes:
        raise OSError("offline")

    provinces = followed_provinces(config)
    try:
        client = StandardsClient(
            settings.trusted_root.read_bytes(),
            settings.state_dir / "metadata",
            settings.state_dir / "targets",
            offline,
            settings.max_release_bytes,
            provinces=provinces,
        )
        release = client.current_release()
        extensions = {}
        for p in provinces:
            ext = client.extension(p)
            if ext is not None:
                extensions[p] = ext.data
        return Validators(config, release.data, extensions).own()
    except (StandardsTrustError, StandardsError, OSError) as exc:
        log.info("no verified standards release here (%s); using the built-in schemas", exc)
        return BuiltinValidator()
