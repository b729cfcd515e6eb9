"""Prometheus metrics of the statistics package (namespace `lsnet_stats_`; labels bounded:
run mode, query outcome, child node ids)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["StatsMetrics"]


class StatsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "lsnet_stats_run_seconds",
            "Time to answer a statistics run, by mode (local, federated)",
            ["mode"],
            registry=registry,
        )
        self.queries = Counter(
            "lsnet_stats_queries_total",
            "Federated statistics queries issued, answered or rejected at this node",
            ["outcome"],
            registry=registry,
        )
        self.children_missing = Counter(
            "lsnet_stats_children_missing_total",
            "Federated queries a child did not answer (timeout, unavailable, bad answer)",
            ["child"],
            registry=registry,
        )
