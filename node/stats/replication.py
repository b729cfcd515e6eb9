"""Which standards release decides statistics and replication modes at this node.

The release in force (its `ReleaseValidator`), or the shipped default pack while no release has
been verified (nodes then validate with the built-in schemas, but the default pack's indicators
and replication policies apply). `local_record_types` feeds the write path (`node.store`):
records of those types never enter the upward change log.
"""

from __future__ import annotations

from hierarchy_config.standards import Release, default_release
from node.validation import RecordValidator, ReleaseValidator

__all__ = ["local_record_types", "policy_release"]


def policy_release(validator: RecordValidator) -> Release:
    if isinstance(validator, ReleaseValidator):
        return validator.standards.release
    return default_release()


def local_record_types(validator: RecordValidator) -> frozenset[str]:
    return policy_release(validator).local_record_types()
