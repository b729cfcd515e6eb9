"""Network-view benchmark: what heartbeats and the tree cost at national scale (no network I/O).

What it measures, for a laid-out network of 1 ministry, P provinces and C cities per province
(default 20 × 10 = 221 nodes, real GB/T 2260 codes, keys and configurations from
`init_network`, which knows only real prefectures):
- the size of one province's heartbeat to the ministry (its own status + C city statuses),
  in bytes and per node;
- the time the ministry takes to verify and take one such heartbeat (`check_heartbeat` +
  `TreeState.accept`) as a ratio to the time to verify one Ed25519 signature over the same
  bytes (the floor of any signed report), both measured in this run;
- the time to build the whole `/v1/network/tree` document (every node) and the alerts from it.

What it does not do: no HTTP, no database (the `node_status` upsert is one statement per node,
measured by the scenario tests' runtime, not here), no timing assertions.

    python bench/network_view.py [--provinces 20] [--cities 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hierarchy_config.loader import load_config
from hierarchy_config.network_init import init_network
from network_mgmt.alerts import compute_alerts
from network_mgmt.heartbeat_wire import (
    Heartbeat,
    NodeStatus,
    RecentError,
    check_heartbeat,
    make_heartbeat,
)
from network_mgmt.tree import TreeState
from security.keys import load_signing_key
from security.signing import sign, verify
from sync.wire import Sealed

NOW = 1_790_000_000_000


def status(node_id: str, parent: str, level: str) -> NodeStatus:
    return NodeStatus(
        node_id=node_id, parent=parent, level=level, name="", software_version="0.1.0",
        protocol_version=1, release="std-7", reported_ms=NOW, uptime_ms=86_400_000,
        backlog=120, lag_ms=2500, last_push_ms=NOW - 800, db_bytes=12_000_000_000, errors=3,
        security_events=1, quarantined=0, link_mode="live", next_retry_ms=0,
        clock_offset_ms=-14, recent_errors=tuple(RecentError(NOW - i, "503") for i in range(5)),
        health="up", last_seen_ms=NOW - 300,
    )  # fmt: skip


def best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--provinces", type=int, default=20)
    ap.add_argument("--cities", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        layout = init_network(
            Path(tmp) / "net", provinces=args.provinces, cities_per_province=args.cities,
            base_port=20000,
        )  # fmt: skip
        ministry = load_config(layout.ministry().config_path)
        province = load_config(layout.provinces()[0].config_path)
        pkey = load_signing_key(province.node.key_file)
    mid, pid = ministry.node_id, province.node_id
    nodes = (status(pid, mid, "province"), *(status(c.id, pid, "city") for c in province.children))
    hb = Heartbeat(pid, mid, NOW, b"n" * 16, nodes)
    body = make_heartbeat(pkey, hb)
    tree = TreeState(ministry, 10.0, 3)
    skew = 300_000

    def take() -> None:
        tree.accept(check_heartbeat(ministry, body, NOW, skew), NOW)

    sealed = Sealed.from_bytes(body)
    sig = sign(pkey, "heartbeat", sealed.envelope)

    def floor() -> None:
        verify(pkey.verify_key, "heartbeat", sealed.envelope, sig)

    t_take = best(take, 20)
    t_floor = best(floor, 20)
    # Fill the whole tree: every province reports its cities.
    for top in ministry.children:
        statuses = (
            status(top.id, mid, "province"),
            *(status(c.id, top.id, "city") for c in top.children),
        )
        tree.accept(replace(hb, sender=top.id, nodes=statuses), NOW)
    own = status(mid, "", "ministry")
    t_doc = best(lambda: tree.document(own, NOW + 1000), 5)
    doc = tree.document(own, NOW + 1000)
    t_alerts = best(lambda: compute_alerts(doc, ministry.network), 5)
    out = {
        "nodes_in_tree": len(doc["nodes"]),
        "province_heartbeat_bytes": len(body),
        "bytes_per_node": round(len(body) / len(nodes)),
        "take_heartbeat_ms": round(t_take * 1000, 2),
        "take_vs_one_signature_check": round(t_take / t_floor, 1),
        "tree_document_ms": round(t_doc * 1000, 1),
        "tree_json_bytes": len(json.dumps(doc)),
        "alerts_ms": round(t_alerts * 1000, 1),
    }
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
