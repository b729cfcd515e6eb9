"""The whole-tree view a node holds of its subtree: who is expected, who reported, who is down.

`TreeState` keeps the latest status of every node of this node's subtree (as carried by the
heartbeats of its direct children) and decides health:

- this node itself is always "up" (its status is taken live);
- a direct child is "up" while its last heartbeat arrived less than
  `interval × down_after_missed` ago here, "down" after that, "unknown" if it never reported;
- a node deeper down is judged by the direct child that carries it: while that child is "up" we
  take its judgement (health and last seen, on its clock), otherwise the node is "unknown" —
  nobody who can see it reports any more.

Nodes in the configuration that never reported show as "unknown". The documents served at
`/v1/network/tree` and `/v1/network/node/{id}` are made here. Pure: no database, no clock of its
own, no HTTP (see `network_mgmt.heartbeat`, `network_mgmt.tree_api`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from hierarchy_config.model import ChildConfig, Level, NodeConfig
from network_mgmt.heartbeat_wire import Heartbeat, NodeStatus

UP, DOWN, UNKNOWN = "up", "down", "unknown"


@dataclass(frozen=True)
class Placement:
    """Where a node sits in the configured tree, seen from this node."""

    node_id: str
    parent: str | None
    level: str
    name: str
    route: str | None  # the direct child whose subtree holds it; None for this node


@dataclass(frozen=True)
class Seen:
    """The latest status of one node and when (our clock) the heartbeat carrying it arrived."""

    status: NodeStatus
    received_ms: int
    via: str


def placements(config: NodeConfig) -> dict[str, Placement]:
    me = config.node_id
    out = {
        me: Placement(
            me,
            config.parent.id if config.parent else None,
            config.level.value,
            config.node.name,
            None,
        )
    }

    def walk(entry: ChildConfig, parent: str, level: Level | None, route: str) -> None:
        lvl = level.value if level is not None else "city"
        out[entry.id] = Placement(entry.id, parent, lvl, entry.name, route)
        below = level.child_level if level is not None else None
        for child in entry.children:
            walk(child, entry.id, below, route)

    for top in config.children:
        walk(top, me, config.level.child_level, top.id)
    return out


TREND_WINDOW_MS = 30 * 60_000  # backlog growth, as the Prometheus rule LsnetBacklogGrowing
MIN_TREND_SPAN_MS = 5 * 60_000  # no trend from fewer minutes of history
BURST_WINDOW_MS = 10 * 60_000  # security bursts, as LsnetNodeSecurityBurst
MAX_SAMPLES = 400  # 30 min at a 5 s heartbeat; bounds memory per node


class TreeState:
    def __init__(self, config: NodeConfig, interval_s: float, down_after_missed: int) -> None:
        self.config = config
        self.places = placements(config)
        self.timeout_ms = int(interval_s * down_after_missed * 1000)
        self.interval_s = interval_s
        self.seen: dict[str, Seen] = {}
        # Per node, (received_ms, backlog, security events) of recent heartbeats, for the rate
        # conditions of `network_mgmt.alerts` (memory only: a restart starts a new window).
        self.samples: dict[str, deque[tuple[int, int, int]]] = {}

    # -- input -------------------------------------------------------------------------------------
    def accept(self, hb: Heartbeat, now_ms: int) -> list[Seen]:
        """Keep the statuses of a verified heartbeat; returns what changed (to persist)."""
        out = []
        for status in hb.nodes:
            if status.node_id not in self.places:
                continue
            seen = Seen(status, now_ms, hb.sender)
            self.seen[status.node_id] = seen
            self._sample(status, now_ms)
            out.append(seen)
        return out

    def _sample(self, status: NodeStatus, now_ms: int) -> None:
        window = self.samples.setdefault(status.node_id, deque(maxlen=MAX_SAMPLES))
        window.append((now_ms, status.backlog, status.security_events))
        # Keep one sample at or before the window's start as its baseline.
        while len(window) > 2 and window[1][0] <= now_ms - TREND_WINDOW_MS:
            window.popleft()

    def trend(self, node_id: str, now_ms: int) -> dict[str, Any]:
        """Rates over recent heartbeats: backlog change over TREND_WINDOW_MS (None until the
        history spans MIN_TREND_SPAN_MS) and security events within BURST_WINDOW_MS."""
        window = self.samples.get(node_id)
        if not window:
            return {"backlog_delta": None, "trend_span_s": None, "security_events_recent": None}
        last_ms, backlog, events = window[-1]
        first_ms, first_backlog, _ = window[0]
        span = last_ms - first_ms
        base = next((e for t, _b, e in reversed(window) if t <= now_ms - BURST_WINDOW_MS), None)
        if base is None:
            base = window[0][2]
        recent = events - base if events >= base else events  # a restart resets the counter
        return {
            "backlog_delta": backlog - first_backlog if span >= MIN_TREND_SPAN_MS else None,
            "trend_span_s": _s(span),
            "security_events_recent": recent,
        }

    def load(self, rows: Iterable[Seen]) -> None:
        for seen in rows:  # what arrived since start is newer than the table
            if seen.status.node_id in self.places and seen.status.node_id not in self.seen:
                self.seen[seen.status.node_id] = seen

    # -- judgement -----------------------------------------------------------------------------
    def health(self, node_id: str, now_ms: int) -> tuple[str, int | None]:
        """(health, last seen in ms) of a node of the subtree, as judged here."""
        place = self.places[node_id]
        if place.route is None:
            return UP, now_ms
        seen = self.seen.get(node_id)
        if place.route == node_id:
            if seen is None:
                return UNKNOWN, None
            return (UP if now_ms - seen.received_ms <= self.timeout_ms else DOWN), seen.received_ms
        carrier, _ = self.health(place.route, now_ms)
        if seen is None:
            return UNKNOWN, None
        if carrier != UP:
            return UNKNOWN, seen.status.last_seen_ms
        return seen.status.health, seen.status.last_seen_ms

    def healths(self, now_ms: int) -> dict[str, str]:
        return {n: self.health(n, now_ms)[0] for n in self.places}

    def forward(self, now_ms: int) -> list[NodeStatus]:
        """The subtree's statuses (not this node's own) as judged here, to pass upward."""
        out = []
        for node_id in sorted(self.seen):
            if node_id == self.config.node_id or node_id not in self.places:
                continue
            health, last_seen = self.health(node_id, now_ms)
            out.append(replace(self.seen[node_id].status, health=health, last_seen_ms=last_seen))
        return out

    # -- documents -----------------------------------------------------------------------------
    def entry(self, node_id: str, own: NodeStatus, now_ms: int) -> dict[str, Any]:
        place = self.places[node_id]
        status = own if place.route is None else None
        if status is None and node_id in self.seen:
            status = self.seen[node_id].status
        health, last_seen = self.health(node_id, now_ms)
        doc = node_entry(place, status, health, last_seen)
        doc.update(self.trend(node_id, now_ms))
        return doc

    def document(self, own: NodeStatus, now_ms: int) -> dict[str, Any]:
        return {
            "root": self.config.node_id,
            "generated_ms": now_ms,
            "heartbeat_interval_s": self.interval_s,
            "down_after_ms": self.timeout_ms,
            "nodes": [self.entry(n, own, now_ms) for n in self.places],
        }


def _s(ms: int | None) -> float | None:
    return None if ms is None else round(ms / 1000.0, 3)


def node_entry(
    place: Placement, status: NodeStatus | None, health: str, last_seen_ms: int | None
) -> dict[str, Any]:
    """One node of `/v1/network/tree` (field names are a contract with the dashboard)."""
    s = status
    return {
        "node_id": place.node_id,
        "parent": place.parent,
        "level": place.level,
        "name": place.name or (s.name if s else ""),
        "health": health,
        "last_seen_ms": last_seen_ms,
        "lag_s": _s(s.lag_ms) if s else None,
        "backlog": s.backlog if s else None,
        "release": s.release if s else None,
        "software_version": s.software_version if s else None,
        "protocol_version": s.protocol_version if s else None,
        "clock_offset_ms": s.clock_offset_ms if s else None,
        "uptime_s": _s(s.uptime_ms) if s else None,
        "errors": s.errors if s else None,
        "security_events": s.security_events if s else None,
        "quarantined": s.quarantined if s else None,
        "held_records": s.extra.get("held_records") if s else None,
        "apply_process": s.extra.get("apply_process") if s else None,
        "link_mode": (s.link_mode or None) if s else None,
        "next_retry_ms": (s.next_retry_ms or None) if s else None,
        "last_push_ms": (s.last_push_ms or None) if s else None,
        "db_bytes": (s.db_bytes if s.db_bytes >= 0 else None) if s else None,
        "e2e_lag_s": _s(s.e2e_lag_ms) if s else None,
        "reported_ms": s.reported_ms if s else None,
        "release_expires_ms": (s.extra.get("release_expires_ms") or None) if s else None,
    }
