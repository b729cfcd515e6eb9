"""deploy/grafana/lsnet-network.json: a well-formed Grafana dashboard whose every query is valid
PromQL (checked by `promtool check rules` when the Debian package `prometheus` is installed) and
names only metrics that a running network's nodes actually serve at /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.datagen import generate_records
from tests.network_mgmt.support import by_id, fast_network, get_json
from tests.support.network import wait_until

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "lsnet-network.json"
METRIC = re.compile(r"\b(lsnet_[a-z0-9_]+)\b")
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def _panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in doc["panels"]:
        yield p
        yield from p.get("panels", [])


def _exprs(doc: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(doc) for t in p.get("targets", [])]


def _as_promql(expr: str) -> str:
    """Grafana's variables replaced the way Grafana would, for a syntax check."""
    return expr.replace("$__rate_interval", "5m").replace("$node", ".*")


def test_dashboard_is_well_formed() -> None:
    doc = _doc()
    assert doc["uid"] == "lsnet-network" and doc["title"]
    names = {v["name"]: v for v in doc["templating"]["list"]}
    assert (
        names["datasource"]["type"] == "datasource" and names["datasource"]["query"] == "prometheus"
    )
    ids = [p["id"] for p in _panels(doc)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in _panels(doc):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"], p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]
    assert len(_exprs(doc)) >= 20


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)"
)
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "grafana-queries",
                "rules": [
                    {"record": f"lsnet:grafana_query_{i}", "expr": _as_promql(e)}
                    for i, e in enumerate(_exprs(_doc()))
                ],
            }
        ]
    }
    path = tmp_path / "queries.rules.json"  # JSON is YAML
    path.write_text(json.dumps(rules))
    out = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr


async def test_every_metric_is_served_by_a_running_network(tmp_path: Path) -> None:
    """City, province and ministry of a live network (with records flowing, so histograms and
    labelled counters have samples) together serve every metric the dashboard queries."""
    net = fast_network(tmp_path, provinces=1, cities=1)
    await net.init_all()
    await net.start_all()
    try:
        city = net.city_ids()[0]
        await net.ingest(city, generate_records(city, 20, seed=1))
        await net.wait_converged()
        ministry = net.nodes[net.ministry_id]

        async def all_up() -> bool:
            _, doc = await get_json(ministry, "/v1/network/tree")
            return all(n["health"] == "up" for n in by_id(doc).values())

        await wait_until(all_up, 20, "the ministry did not see every node up")
        families: set[str] = set()
        async with aiohttp.ClientSession() as s:
            for node in net.nodes.values():
                await node.refresh_gauges()
                async with s.get(node.config.node.url + "/metrics") as r:
                    text = await r.text()
                for line in text.splitlines():
                    if line.startswith("# TYPE "):
                        families.add(line.split()[2])
                    elif line and not line.startswith("#"):
                        families.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    finally:
        await net.stop_all()
    used = {m for e in _exprs(_doc()) for m in METRIC.findall(e)}
    missing = set()
    for name in used:
        base = next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), name)
        if name not in families and base not in families:
            missing.add(name)
    assert missing == set(), f"the dashboard queries metrics no node serves: {sorted(missing)}"
