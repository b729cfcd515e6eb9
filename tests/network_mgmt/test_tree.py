"""Pure health judgement of the tree view and the alerts computed from it (no network)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hierarchy_config.loader import load_config
from hierarchy_config.model import NetworkConfig, NodeConfig
from hierarchy_config.network_init import init_network
from network_mgmt.alerts import compute_alerts
from network_mgmt.heartbeat_wire import Heartbeat
from network_mgmt.tree import TreeState, placements
from tests.network_mgmt.test_heartbeat_wire import NOW, status

TIMEOUT_MS = 3000  # interval 1 s × 3 missed


@pytest.fixture(scope="module")
def ministry(tmp_path_factory: pytest.TempPathFactory) -> NodeConfig:
    layout = init_network(
        tmp_path_factory.mktemp("tree") / "net", provinces=2, cities_per_province=2, base_port=31000
    )
    return load_config(layout.ministry().config_path)


def _ids(cfg: NodeConfig) -> tuple[str, str, str, str]:
    p1, p2 = sorted(c.id for c in cfg.children)
    prov = {c.id: c for c in cfg.children}
    return p1, prov[p1].children[0].id, prov[p1].children[1].id, p2


def test_placements_follow_the_configuration(ministry: NodeConfig) -> None:
    places = placements(ministry)
    p1, c1, _, _ = _ids(ministry)
    assert len(places) == 7
    assert places[ministry.node_id].parent is None and places[ministry.node_id].route is None
    assert (places[p1].level, places[p1].parent, places[p1].route) == (
        "province",
        ministry.node_id,
        p1,
    )
    assert (places[c1].level, places[c1].parent, places[c1].route) == ("city", p1, p1)


def test_health_rules(ministry: NodeConfig) -> None:
    tree = TreeState(ministry, 1.0, 3)
    me = ministry.node_id
    p1, c1, c2, p2 = _ids(ministry)
    # Nobody reported: all unknown except this node.
    assert tree.healths(NOW) == {n: ("up" if n == me else "unknown") for n in tree.places}
    hb = Heartbeat(
        p1, me, NOW, b"n" * 16,
        (status(p1, me, level="province"), status(c1, p1, health="up", last_seen_ms=NOW - 500),
         status(c2, p1, health="down", last_seen_ms=NOW - 9000)),
    )  # fmt: skip
    assert len(tree.accept(hb, NOW)) == 3
    assert tree.health(p1, NOW + TIMEOUT_MS) == ("up", NOW)
    assert tree.health(c1, NOW) == ("up", NOW - 500)  # the carrier's judgement
    assert tree.health(c2, NOW) == ("down", NOW - 9000)
    assert tree.health(p2, NOW) == ("unknown", None)  # never reported
    # The province misses its heartbeats: down; its cities become unknown (nobody sees them).
    later = NOW + TIMEOUT_MS + 1
    assert tree.health(p1, later) == ("down", NOW)
    assert tree.health(c1, later) == ("unknown", NOW - 500)
    # It comes back.
    tree.accept(replace(hb, sent_ms=later), later)
    assert tree.health(p1, later)[0] == "up" and tree.health(c1, later)[0] == "up"
    # What this node forwards upward: its subtree as judged here, not itself.
    forwarded = {s.node_id: s for s in tree.forward(later)}
    assert set(forwarded) == {p1, c1, c2} and forwarded[p1].last_seen_ms == later
    # Statuses of nodes that are no longer configured are ignored.
    assert tree.accept(replace(hb, nodes=(status("999999", p1),)), later) == []


def test_document_has_the_contract_fields(ministry: NodeConfig) -> None:
    tree = TreeState(ministry, 1.0, 3)
    own = status(ministry.node_id, "", level="ministry")
    doc = tree.document(own, NOW)
    assert doc["root"] == ministry.node_id and doc["heartbeat_interval_s"] == 1.0
    first = doc["nodes"][0]
    assert first["node_id"] == ministry.node_id and first["health"] == "up"
    assert first["lag_s"] == 1.5 and first["uptime_s"] == 1.0 and first["backlog"] == 3
    unknown = doc["nodes"][1]
    assert unknown["health"] == "unknown" and unknown["last_seen_ms"] is None
    assert unknown["lag_s"] is None and unknown["release"] is None


def test_alerts_from_a_tree(ministry: NodeConfig) -> None:
    settings = NetworkConfig(lag_alert_s=60, clock_skew_alert_ms=1000, security_burst=5)
    tree = TreeState(ministry, 1.0, 3)
    me = ministry.node_id
    p1, c1, c2, p2 = _ids(ministry)
    hb = Heartbeat(
        p1, me, NOW, b"n" * 16,
        (status(p1, me, level="province", release="std-2"),
         status(c1, p1, lag_ms=120_000, backlog=50, link_mode="backing_off", release="std-1"),
         status(c2, p1, health="down", clock_offset_ms=-4000, security_events=9, quarantined=2,
                release="std-2", extra={"release_expires_ms": NOW + 3600_000})),
    )  # fmt: skip
    # 12 minutes earlier c2 had reported 2 security events: 7 within the last 10 minutes.
    earlier = Heartbeat(p1, me, NOW - 720_000, b"m" * 16, (status(c2, p1, security_events=2),))
    tree.accept(earlier, NOW - 720_000)
    tree.accept(hb, NOW)
    doc = tree.document(status(me, "", level="ministry", release="std-2"), NOW)
    got = {(a["alert"], a["node"]) for a in compute_alerts(doc, settings)}
    p2_cities = {
        ("node_unknown", c.id) for top in ministry.children if top.id == p2 for c in top.children
    }
    assert len(p2_cities) == 2 and p2_cities <= got
    assert got - p2_cities == {
        ("node_down", c2),
        ("node_unknown", p2),
        ("lag_high", c1),
        ("backlog_growing", c1),
        ("standards_behind", c1),
        ("clock_skew", c2),
        ("security_events", c2),
        ("poison_batches", c2),
        ("standards_near_expiry", c2),
    }
    alerts = compute_alerts(doc, settings)
    assert alerts[0]["severity"] == "critical"  # most severe first


def test_rate_alerts_use_the_recent_history(ministry: NodeConfig) -> None:
    settings = NetworkConfig(security_burst=5)
    tree = TreeState(ministry, 10.0, 3)
    me = ministry.node_id
    p1, c1, c2, _ = _ids(ministry)

    def beat(at_ms: int, c1_backlog: int, c2_events: int) -> None:
        nodes = (
            status(p1, me, level="province"),
            status(c1, p1, backlog=c1_backlog, lag_ms=0),
            status(c2, p1, security_events=c2_events, backlog=0),
        )
        tree.accept(Heartbeat(p1, me, at_ms, b"n" * 16, nodes), at_ms)

    def alerts(at_ms: int) -> set[tuple[str, str]]:
        doc = tree.document(status(me, "", level="ministry"), at_ms)
        return {
            (a["alert"], a["node"])
            for a in compute_alerts(doc, settings)
            if a["alert"] in ("backlog_growing", "security_events")
        }

    start = NOW - 40 * 60_000
    beat(start, 150, 100)  # a node that had many events long ago
    assert alerts(start) == set()
    beat(start + 4 * 60_000, 400, 101)  # growing, but only 4 minutes of history yet
    assert alerts(start + 4 * 60_000) == set()
    beat(start + 6 * 60_000, 900, 101)  # 6 minutes, still growing, above 100: alert
    assert alerts(start + 6 * 60_000) == {("backlog_growing", c1)}
    beat(start + 20 * 60_000, 120, 103)  # drained below where the window started
    assert alerts(start + 20 * 60_000) == set()
    beat(start + 25 * 60_000, 120, 109)  # 6 events within 10 minutes: a burst
    assert alerts(start + 25 * 60_000) == {("security_events", c2)}
    beat(start + 40 * 60_000, 120, 2)  # the node restarted: its counter started again
    assert alerts(start + 40 * 60_000) == set()
    trend = tree.trend(c1, start + 40 * 60_000)
    # Older samples were dropped: the baseline is the last one at or before the window's start.
    assert trend["trend_span_s"] == 34 * 60
