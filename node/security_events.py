"""One door for security-relevant events: the audit log and the security metrics together.

`SecurityEvents.emit` appends a signed, hash-chained audit entry (security.audit) and counts the
event in `lsnet_security_events_total{kind, peer, code}`. The `peer` label is bounded: an
enrolled node id (child or parent) or `external` for anyone else (the address stays in the
audit entry). An audit write that fails is logged at ERROR and counted, never swallowed
silently, and never turns a refusal into a crash. Forwarding events upward comes with the
network-management issue.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter

from hierarchy_config.model import NodeConfig
from security.audit import AuditError, AuditKind, AuditLog

log = logging.getLogger("lsnet.security")


class SecurityEvents:
    def __init__(self, config: NodeConfig, audit: AuditLog, registry: CollectorRegistry) -> None:
        self.audit = audit
        known = {c.id for top in config.children for c in top.walk()}
        if config.parent is not None:
            known.add(config.parent.id)
        known.add(config.node_id)
        self.known = frozenset(known)
        self.events = Counter(
            "lsnet_security_events",
            "Security-relevant events, by kind, peer (node id or 'external') and code",
            ["kind", "peer", "code"],
            registry=registry,
        )
        self.audit_failures = Counter(
            "lsnet_audit_write_failures",
            "Audit entries that could not be written",
            registry=registry,
        )

    async def emit(
        self,
        kind: AuditKind,
        *,
        peer: str = "",
        code: str = "",
        detail: Mapping[str, str | int | bool] | None = None,
    ) -> None:
        label = peer if peer in self.known else "external"
        self.events.labels(kind.value, label, code[:64]).inc()
        try:
            await self.audit.record(kind, peer=peer[:64], code=code[:64], detail=detail)
        except AuditError as exc:
            self.audit_failures.inc()
            log.error("audit entry %s/%s could not be written: %s", kind.value, code, exc)
