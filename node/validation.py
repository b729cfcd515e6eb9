"""Which rules a node validates records with: the standards release in force, or the built-in
schemas before any release has been verified.

`RecordValidator` is the one interface ingest (HTTP, CLI import) and receivers use. The release
in force is read from the node's verified standards state (`StandardsChannel` while running,
`release_in_force()` for offline commands). This module does not fetch or verify releases.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from hierarchy_config.model import Level, NodeConfig
from hierarchy_config.standards import EffectiveStandards, Extension, Release, StandardsError
from hierarchy_config.standards import validate_record as validate_with_release
from node.records import RECORD_TYPES, ValidRecord
from node.records import validate_record as validate_builtin
from node.store import BUILTIN_STANDARDS

log = logging.getLogger("lsnet.standards")


class RecordValidator(Protocol):
    @property
    def standards_id(self) -> str: ...

    def validate(self, obj: Mapping[str, Any]) -> tuple[ValidRecord, int]:
        """The valid record and its number of warnings; raises RecordInvalid."""

    def natural_key(self, record_type: str) -> tuple[str, ...] | None: ...


class BuiltinValidator:
    standards_id = BUILTIN_STANDARDS

    def validate(self, obj: Mapping[str, Any]) -> tuple[ValidRecord, int]:
        return validate_builtin(obj), 0

    def natural_key(self, record_type: str) -> tuple[str, ...] | None:
        schema = RECORD_TYPES.get(record_type)
        return None if schema is None else schema.natural_key


class ReleaseValidator:
    def __init__(self, standards: EffectiveStandards) -> None:
        self.standards = standards
        self.standards_id = f"std-{standards.id}"

    def validate(self, obj: Mapping[str, Any]) -> tuple[ValidRecord, int]:
        result = validate_with_release(self.standards, obj)
        return result.record, len(result.warnings)

    def natural_key(self, record_type: str) -> tuple[str, ...] | None:
        schema = self.standards.schemas.get(record_type)
        return None if schema is None else schema.natural_key


def followed_province(config: NodeConfig) -> str | None:
    """The province whose local extensions apply to this node (its own, or its parent's)."""
    if config.level is Level.PROVINCE:
        return config.node_id
    if config.level is Level.CITY and config.parent is not None:
        return config.parent.id
    return None


def validator_for(release_data: bytes, extension_data: bytes | None) -> ReleaseValidator:
    """Parse verified release (and extension) bytes; StandardsError if they do not parse."""
    release = Release.from_bytes(release_data)
    extensions = () if extension_data is None else (Extension.from_bytes(extension_data),)
    return ReleaseValidator(EffectiveStandards(release, extensions))


def release_in_force(config: NodeConfig) -> RecordValidator:
    """For offline commands: the validator of the last verified release, or the built-in one."""
    from security.standards_trust import StandardsTrustError
    from security.tuf_client import StandardsClient

    settings = config.standards
    if settings.trusted_root is None or not Path(settings.state_dir).exists():
        return BuiltinValidator()

    def offline(relative: str, limit: int) -> bytes:
        raise OSError("offline")

    province = followed_province(config)
    try:
        client = StandardsClient(
            settings.trusted_root.read_bytes(),
            settings.state_dir / "metadata",
            settings.state_dir / "targets",
            offline,
            settings.max_release_bytes,
            provinces=(province,) if province else (),
        )
        release = client.current_release()
        ext = client.extension(province) if province else None
        return validator_for(release.data, ext.data if ext else None)
    except (StandardsTrustError, StandardsError, OSError) as exc:
        log.info("no verified standards release here (%s); using the built-in schemas", exc)
        return BuiltinValidator()
