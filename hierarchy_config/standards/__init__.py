"""Standards releases: code tables and record schemas published by the ministry (DESIGN.md §5).

`model` holds the immutable release, `codec` its canonical bytes, `extensions` provincial local
codes, `build` a release from a folder of CSV/TOML files (and the shipped default pack), `diff`
the changes between two releases, `validate` record validation against a release, `recheck` a
receiver's fast re-check of records that arrive already normalised.

This package does not sign, fetch or distribute releases, and touches no database.
"""

from hierarchy_config.standards.build import BuildError, build_release, default_release
from hierarchy_config.standards.diff import ReleaseDiff, diff
from hierarchy_config.standards.extensions import EffectiveStandards, Extension, ExtensionError
from hierarchy_config.standards.model import (
    CodeEntry,
    CodeTable,
    FieldDef,
    InvalidStandards,
    RecordSchema,
    Release,
    Rule,
    StandardsError,
    StandardsFormatError,
)
from hierarchy_config.standards.validate import (
    DryRunReport,
    Issue,
    Validated,
    dry_run,
    validate_record,
)

__all__ = [
    "BuildError",
    "CodeEntry",
    "CodeTable",
    "DryRunReport",
    "EffectiveStandards",
    "Extension",
    "ExtensionError",
    "FieldDef",
    "InvalidStandards",
    "Issue",
    "RecordSchema",
    "Release",
    "ReleaseDiff",
    "Rule",
    "StandardsError",
    "StandardsFormatError",
    "Validated",
    "build_release",
    "default_release",
    "diff",
    "dry_run",
    "validate_record",
]
