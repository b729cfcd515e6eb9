"""Alert conditions computed from the tree document (`/v1/network/tree`).

Pure: a tree document and the `[network]` thresholds in, a list of alerts out, sorted by
severity then node. Used by `GET /v1/network/alerts` and `lsnet alerts`.

Rate conditions use the short history the tree keeps of each node's heartbeats
(`network_mgmt.tree.TreeState.trend`), with the windows of the Prometheus rules: a backlog
above 100 that grew over the last 30 minutes (from at least 5 minutes of history), or any backlog
waiting on a link that is backing off or paused; security events at or above the burst threshold
within 10 minutes. What this does not do: keep history itself, or survive a restart of the node
that computes it (its window starts again; Prometheus keeps the long view).
"""

from __future__ import annotations

from typing import Any

from hierarchy_config.model import NetworkConfig
from network_mgmt.rollout import release_number

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
BACKLOG_FLOOR = 100  # as the Prometheus rule: a small backlog that grows is normal traffic


def _alert(
    name: str, severity: str, node: str, message: str, value: float | int | str | None
) -> dict[str, Any]:
    return {"alert": name, "severity": severity, "node": node, "message": message, "value": value}


def compute_alerts(tree: dict[str, Any], settings: NetworkConfig) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = tree["nodes"]
    root = next((n for n in nodes if n["node_id"] == tree["root"]), None)
    top_release = release_number(root["release"]) if root and root.get("release") else 0
    out: list[dict[str, Any]] = []
    for n in nodes:
        nid = n["node_id"]
        if n["health"] == "down":
            out.append(
                _alert("node_down", "critical", nid, "no heartbeat within the timeout", None)
            )
        elif n["health"] == "unknown":
            why = "never reported" if n.get("last_seen_ms") is None else "its carrier is not up"
            out.append(_alert("node_unknown", "warning", nid, f"health unknown: {why}", None))
        lag = n.get("lag_s")
        if lag is not None and lag > settings.lag_alert_s:
            out.append(
                _alert(
                    "lag_high",
                    "warning",
                    nid,
                    f"replication lag {lag:.0f}s above {settings.lag_alert_s:.0f}s",
                    lag,
                )
            )
        backlog = n.get("backlog") or 0
        grew = n.get("backlog_delta")
        if backlog > 0 and n.get("link_mode") in ("backing_off", "paused"):
            out.append(
                _alert(
                    "backlog_growing",
                    "warning",
                    nid,
                    f"{backlog} changes wait while the link is {n['link_mode']}",
                    backlog,
                )
            )
        elif grew is not None and grew > 0 and backlog > BACKLOG_FLOOR:
            out.append(
                _alert(
                    "backlog_growing",
                    "warning",
                    nid,
                    f"backlog grew by {grew} to {backlog} changes over "
                    f"{(n.get('trend_span_s') or 0) / 60:.0f} min",
                    backlog,
                )
            )
        release = n.get("release")
        if release is not None and release_number(release) < top_release:
            out.append(
                _alert(
                    "standards_behind",
                    "warning",
                    nid,
                    f"runs {release}, older than the root's",
                    release,
                )
            )
        expires = n.get("release_expires_ms")
        left_s = (expires - tree["generated_ms"]) / 1000 if expires else None
        if left_s is not None and left_s < settings.release_expiry_alert_s:
            out.append(
                _alert(
                    "standards_near_expiry",
                    "critical",
                    nid,
                    f"standards metadata expires in {max(0.0, left_s) / 3600:.1f} h",
                    round(left_s),
                )
            )
        offset = n.get("clock_offset_ms")
        if offset is not None and abs(offset) > settings.clock_skew_alert_ms:
            out.append(
                _alert(
                    "clock_skew",
                    "warning",
                    nid,
                    f"clock differs from its parent's by {offset} ms",
                    offset,
                )
            )
        recent = n.get("security_events_recent")
        if recent is not None and recent >= settings.security_burst:
            out.append(
                _alert(
                    "security_events",
                    "warning",
                    nid,
                    f"{recent} security events within 10 minutes",
                    recent,
                )
            )
        held = n.get("quarantined") or 0
        if held > 0:
            out.append(
                _alert(
                    "poison_batches",
                    "critical",
                    nid,
                    f"{held} quarantined batches wait for an operator (lsnet links quarantine)",
                    held,
                )
            )
        if n.get("apply_process") == 0:
            out.append(
                _alert(
                    "apply_process_down",
                    "warning",
                    nid,
                    "its apply process is not running: received pushes are written in the node's "
                    "own process, more slowly; it restarts by itself — if this stays, see the "
                    "node's log",
                    0,
                )
            )
        kept = n.get("held_records") or 0
        if kept > 0:
            out.append(
                _alert(
                    "poison_records",
                    "warning",
                    nid,
                    f"{kept} received records failed validation and are held aside "
                    "(lsnet links held list)",
                    kept,
                )
            )
    out.sort(key=lambda a: (SEVERITY_ORDER.get(a["severity"], 9), a["node"], a["alert"]))
    return out
