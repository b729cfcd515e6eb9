"""Prometheus metrics of upward sync, registered in the node's own registry (namespace `lsnet`).

Label values are bounded: node ids and closed error codes, never batch ids."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class SyncMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        ns = "lsnet"
        self.batches_sent = Counter(
            "sync_batches_sent",
            "Batches sent to the parent",
            ["peer"],
            namespace=ns,
            registry=registry,
        )
        self.batches_acked = Counter(
            "sync_batches_acked",
            "Batches acknowledged by the parent",
            ["peer"],
            namespace=ns,
            registry=registry,
        )
        self.batches_received = Counter(
            "sync_batches_received",
            "Batches received from children, by outcome",
            ["origin", "status"],
            namespace=ns,
            registry=registry,
        )
        self.sealed_received = Counter(
            "sync_sealed_received",
            "Authentic messages received from children, by route purpose and by what the child "
            "signed: the envelope bytes (protocol 1) or their sha256 digest (ADR 0016)",
            ["child", "purpose", "signed"],
            namespace=ns,
            registry=registry,
        )
        self.rejected = Counter(
            "sync_rejected",
            "Requests or batches rejected, by reason code",
            ["reason"],
            namespace=ns,
            registry=registry,
        )
        self.records_applied = Counter(
            "sync_records_applied",
            "Record changes applied from received batches",
            ["origin"],
            namespace=ns,
            registry=registry,
        )
        self.transfer_failures = Counter(
            "sync_transfer_failures",
            "Failed transfers to the parent",
            ["peer"],
            namespace=ns,
            registry=registry,
        )
        self.quarantined = Counter(
            "sync_batches_quarantined",
            "Batches quarantined after the parent refused them",
            ["origin", "reason"],
            namespace=ns,
            registry=registry,
        )
        self.records_held = Counter(
            "sync_records_held",
            "Received records that failed validation and were held aside (policy 'hold')",
            ["origin", "reason"],
            namespace=ns,
            registry=registry,
        )
        self.held_waiting = Gauge(
            "sync_records_held_waiting",
            "Records held aside here that still wait for an operator's release or skip",
            namespace=ns,
            registry=registry,
        )
        self.backlog = Gauge(
            "sync_backlog_changes",
            "Changes not yet acknowledged by the parent",
            namespace=ns,
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "sync_lag_seconds",
            "Age of the oldest change not acknowledged by the parent",
            namespace=ns,
            registry=registry,
        )
        self.watermark = Gauge(
            "sync_watermark",
            "Highest contiguous seq applied per origin (current epoch)",
            ["origin"],
            namespace=ns,
            registry=registry,
        )
        self.link_mode = Gauge(
            "sync_link_mode",
            "Upstream link mode (1 for the current mode)",
            ["peer", "mode"],
            namespace=ns,
            registry=registry,
        )
        self.push_latency = Histogram(
            "sync_push_seconds",
            "Round trip of one push to the parent",
            ["peer"],
            namespace=ns,
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.pushes_in_flight = Gauge(
            "sync_pushes_in_flight",
            "Pushes on the way to the parent, not yet answered (up to [sync] pushes_in_flight "
            "while catching up, ADR 0015)",
            ["peer"],
            namespace=ns,
            registry=registry,
        )
        self.apply_process = Gauge(
            "sync_apply_process",
            "1 while received pushes are written by this node's apply process (ADR 0014), 0 when "
            "they are written in the node's own process (turned off, or the process ended)",
            namespace=ns,
            registry=registry,
        )
        self.apply_process_ended = Counter(
            "sync_apply_process_ended",
            "Times this node's apply process ended without being asked to (it is restarted)",
            namespace=ns,
            registry=registry,
        )
        self.receive_latency = Histogram(
            "sync_receive_seconds",
            "Time a received push spends before its last write: reading the body (stage=read), "
            "opening the envelope and verifying every batch (stage=verify)",
            ["stage"],
            namespace=ns,
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
        )
        self.apply_latency = Histogram(
            "sync_apply_seconds",
            "Time to apply the batches of one received push (one transaction)",
            namespace=ns,
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
        )
