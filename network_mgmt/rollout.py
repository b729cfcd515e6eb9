"""Standards rollout visibility: which node runs which standards release, across the tree.

Every node reports, signed, to its parent the release in force at itself and at every node of
its subtree it has heard from; parents keep the latest entry per node and pass their view up, so
the ministry sees the whole tree. `RolloutView` is the in-memory state with its trust rules
(a child may report only for its own subtree); the wire shape lives here too. The HTTP handler
and the schedule are wired by the node (`node.app`); heartbeats in general come with the
network-management issue.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from hierarchy_config.model import NodeConfig
from security.keyring import KeyRing, trusted_keys
from security.keys import NodeKey
from security.signing import SignatureInvalid, sign, verify_any
from sync.wire import Code, Sealed, WireError, packb, unpackb

PURPOSE_REPORT = "standards-report"
REPORT_PATH = "/v1/standards/report"
MAX_REPORT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class NodeRelease:
    node: str
    release: str  # e.g. "std-2", "std-2+330000.1", or "builtin-1"
    expires_ms: int  # 0 = unknown
    reported_ms: int


class ReportRejected(Exception):
    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RolloutView:
    def __init__(self, config: NodeConfig, registry: CollectorRegistry) -> None:
        self.config = config
        self.keyring: KeyRing | None = None  # the node's key ring (rotations, revocations)
        self.entries: dict[str, NodeRelease] = {}
        self._gauge_release = Gauge(
            "lsnet_standards_node_release",
            "Standards release version in force per node of this subtree (0 = built-in)",
            ["node"],
            registry=registry,
        )
        self._gauge_behind = Gauge(
            "lsnet_standards_nodes_behind",
            "Nodes of this subtree whose release is older than this node's",
            registry=registry,
        )

    def update_self(self, release: str, expires_ms: int, now_ms: int) -> None:
        self._put(NodeRelease(self.config.node_id, release, expires_ms, now_ms))

    def _put(self, entry: NodeRelease) -> None:
        self.entries[entry.node] = entry
        self._gauge_release.labels(entry.node).set(release_number(entry.release))
        mine = (
            release_number(self.entries[self.config.node_id].release)
            if (self.config.node_id in self.entries)
            else 0
        )
        self._gauge_behind.set(
            sum(1 for e in self.entries.values() if release_number(e.release) < mine)
        )

    # -- sending -----------------------------------------------------------------------------------
    def make_report(self, key: NodeKey, now_ms: int) -> bytes:
        assert self.config.parent is not None
        envelope = packb(
            {
                "v": 1,
                "sender": self.config.node_id,
                "dest": self.config.parent.id,
                "sent": now_ms,
                "nonce": os.urandom(16),
                "nodes": [
                    [e.node, e.release, e.expires_ms, e.reported_ms]
                    for e in sorted(self.entries.values(), key=lambda e: e.node)
                ],
            }
        )
        return Sealed(envelope, sign(key, PURPOSE_REPORT, envelope)).to_bytes()

    # -- receiving ---------------------------------------------------------------------------------
    def accept_report(self, body: bytes, now_ms: int, max_skew_ms: int) -> int:
        """Verify a child's report and keep its entries; returns how many were taken."""
        try:
            sealed = Sealed.from_bytes(body)
            doc = unpackb(sealed.envelope, what="standards report")
        except WireError as exc:
            raise ReportRejected(exc.code, exc.message) from None
        if not isinstance(doc, dict) or doc.get("v") != 1:
            raise ReportRejected(Code.MALFORMED, "standards report must be a version-1 map")
        sender = doc.get("sender")
        child = next((c for c in self.config.children if c.id == sender), None)
        if child is None:
            raise ReportRejected(Code.UNKNOWN_SENDER, f"node {sender!r} is not an enrolled child")
        if doc.get("dest") != self.config.node_id:
            raise ReportRejected(Code.WRONG_DESTINATION, "report is addressed to another node")
        try:
            keys = trusted_keys(self.keyring, child.id, child.verify_key, now_ms)
            verify_any(keys, PURPOSE_REPORT, sealed.envelope, sealed.signature)
        except SignatureInvalid:
            raise ReportRejected(Code.BAD_SIGNATURE, f"report is not signed by {sender}") from None
        sent = doc.get("sent")
        if not isinstance(sent, int) or abs(now_ms - sent) > max_skew_ms:
            raise ReportRejected(Code.STALE, "report send time is outside the allowed clock skew")
        subtree = {c.id for c in child.walk()}
        rows = doc.get("nodes")
        if not isinstance(rows, list):
            raise ReportRejected(Code.MALFORMED, "report 'nodes' must be a list")
        taken = 0
        for row in rows:
            if not _valid_row(row):
                raise ReportRejected(Code.MALFORMED, "report row must be [node, release, int, int]")
            node, release, expires_ms, reported_ms = row
            if node not in subtree:
                raise ReportRejected(
                    Code.NOT_AUTHORISED, f"{sender} may not report for node {node}"
                )
            old = self.entries.get(node)
            if old is None or old.reported_ms <= reported_ms:
                self._put(NodeRelease(node, release, expires_ms, reported_ms))
                taken += 1
        return taken

    def document(self, now_ms: int) -> dict[str, Any]:
        mine = self.entries.get(self.config.node_id)
        top = release_number(mine.release) if mine else 0
        expected = {self.config.node_id, *(c.id for t in self.config.children for c in t.walk())}
        nodes = {}
        for node_id in sorted(expected):
            e = self.entries.get(node_id)
            nodes[node_id] = (
                None
                if e is None
                else {
                    "release": e.release,
                    "behind": release_number(e.release) < top,
                    "expires_ms": e.expires_ms or None,
                    "age_seconds": round(max(0, now_ms - e.reported_ms) / 1000, 1),
                }
            )
        return {
            "node": self.config.node_id,
            "release": mine.release if mine else None,
            "nodes": nodes,
            "not_reporting": sorted(n for n, v in nodes.items() if v is None),
            "behind": sorted(n for n, v in nodes.items() if v and v["behind"]),
        }


def _valid_row(row: Any) -> bool:
    return (
        isinstance(row, list)
        and len(row) == 4
        and isinstance(row[0], str)
        and isinstance(row[1], str)
        and len(row[1]) <= 128
        and all(isinstance(x, int) and not isinstance(x, bool) for x in row[2:])
    )


def release_number(release: str) -> int:
    """`std-3+330000.1` → 3; built-in schemas → 0."""
    if not release.startswith("std-"):
        return 0
    head = release[4:].split("+", 1)[0]
    return int(head) if head.isdigit() else 0
