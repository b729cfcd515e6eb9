"""Prometheus metrics of network management (namespace `lsnet`), in the node's own registry.

Per-node gauges of this node's subtree are labelled with node ids only (bounded by the
configured tree), never batch ids. Values are set by `network_mgmt.heartbeat`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class HeartbeatMetrics:
    """Per-node gauges of the subtree (label: node id, bounded by the configured tree)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge(
            "lsnet_node_up",
            "1 if the node is up, 0 if down or unknown",
            ["node"],
            registry=registry,
        )
        self.known = Gauge(
            "lsnet_node_reported",
            "1 if the node ever reported (0 = unknown)",
            ["node"],
            registry=registry,
        )
        self.lag = Gauge(
            "lsnet_node_lag_seconds",
            "Replication lag the node reports",
            ["node"],
            registry=registry,
        )
        self.backlog = Gauge(
            "lsnet_node_backlog_changes",
            "Changes the node has not delivered upward",
            ["node"],
            registry=registry,
        )
        self.last_seen = Gauge(
            "lsnet_node_last_seen_timestamp_seconds",
            "When the node was last heard of",
            ["node"],
            registry=registry,
        )
        self.offset = Gauge(
            "lsnet_node_clock_offset_seconds",
            "The node's parent clock minus its own",
            ["node"],
            registry=registry,
        )
        self.quarantined = Gauge(
            "lsnet_node_quarantined_batches",
            "Quarantined batches waiting at the node",
            ["node"],
            registry=registry,
        )
        self.held_records = Gauge(
            "lsnet_node_held_records",
            "Received poison records held aside at the node, waiting for an operator",
            ["node"],
            registry=registry,
        )
        self.security = Gauge(
            "lsnet_node_security_events",
            "Security events counted at the node since start",
            ["node"],
            registry=registry,
        )
        self.errors = Gauge(
            "lsnet_node_errors", "Link errors at the node since start", ["node"], registry=registry
        )
        self.e2e_lag = Gauge(
            "lsnet_node_e2e_lag_seconds",
            "Latency of the newest end-to-end probe from the node to here (data path)",
            ["node"],
            registry=registry,
        )
        self.e2e_age = Gauge(
            "lsnet_node_e2e_age_seconds",
            "Age of the newest end-to-end probe from the node seen here (grows when data stops)",
            ["node"],
            registry=registry,
        )
        self.transitions = Counter(
            "lsnet_node_health_transitions",
            "Health changes seen here",
            ["node", "health"],
            registry=registry,
        )
        self.sent = Counter(
            "lsnet_heartbeats_sent", "Heartbeats delivered to the parent", registry=registry
        )
        self.failed = Counter(
            "lsnet_heartbeat_failures", "Heartbeats not delivered to the parent", registry=registry
        )
        self.received = Counter(
            "lsnet_heartbeats_received",
            "Heartbeats accepted from children",
            ["child"],
            registry=registry,
        )
        self.last_ok = Gauge(
            "lsnet_heartbeat_last_success_timestamp_seconds",
            "When the parent last acknowledged a heartbeat",
            registry=registry,
        )
