"""A ministry, a province and two cities over real HTTP, with the standards release in force
(fetched through TUF): statistics from the ministry's replicated copy equal those computed
federated from the cities; planted duplicate enrolments are found; `local` record types never
leave their city yet are answered federated; a silent city is reported as missing; only a
parent may send a query; every query is audited where it goes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from node.app import Node
from node.datagen import generate_records
from node.stats.federated import QUERY_PATH, make_hop, make_query
from node.stats.request import StatsRequest
from security.audit import AuditKind
from tests.support.network import TestNet, make_network, wait_until

pytestmark = pytest.mark.timeout(240)
PLANTED = 7


async def ingest(node: Node, objs: list[dict[str, Any]]) -> None:
    recs = [node.validator.validate(o)[0] for o in objs]
    for i in range(0, len(recs), 500):
        await node.ingest(recs[i : i + 500])


def settlements(city: str, count: int) -> list[dict[str, Any]]:
    person = generate_records(city, 20, seed=5)[1]["person_id"]  # a valid id of the city
    return [
        {
            "type": "medical_settlement",
            "setl_id": f"S{city}{n:05d}",
            "person_id": person,
            "insurance_type": "310",
            "med_type": "11",
            "settle_time": f"2024-{1 + n % 12:02d}-10T09:30:00",
            "total_cost": "100.00",
            "fund_paid": f"{10 + n}.50",
            "pool_region": city,
        }
        for n in range(count)
    ]


async def start(tmp_path: Path, database_for: Callable[[str], str]) -> TestNet:
    net = make_network(tmp_path, database_for=database_for)
    await net.init_all()
    await net.start_all()
    await wait_until(
        lambda: all(n.validators is not None for n in net.nodes.values()),
        60,
        "the standards release did not reach every node",
    )
    return net


async def seed(net: TestNet) -> tuple[str, str]:
    a, b = net.city_ids()
    data = {c: generate_records(c, 500, seed=i) for i, c in enumerate((a, b))}
    for city, objs in data.items():
        await ingest(net.nodes[city], objs)
    # plant duplicate enrolments: persons of city A also enrolled (same insurance type) in B
    active = [
        o
        for o in data[a]
        if o["type"] == "insurance_enrollment"
        and o["status"] == "1"
        and o["insurance_type"] == "110"
    ]
    assert len(active) >= PLANTED
    await ingest(net.nodes[b], [{**o, "agency_region": b} for o in active[:PLANTED]])
    await ingest(net.nodes[a], settlements(a, 12))
    await ingest(net.nodes[b], settlements(b, 3))  # below the minimum cell size (10)
    await net.wait_converged()
    return a, b


def values(doc: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    return {tuple(c[b] for b in doc["by"]): c["value_text"] for c in doc["cells"]}


async def test_replicated_and_federated_agree(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    net = await start(tmp_path, database_for)
    try:
        a, b = await seed(net)
        ministry = net.nodes[net.ministry_id]
        assert ministry.stats is not None
        sums = StatsRequest.parse(
            "contributions_collected", "region,period", "2024-01..2024-12", None, "prefecture"
        )
        local = await ministry.stats.run(sums)
        fed = await ministry.stats.run(sums, federated=True)
        assert local["cells"] and values(local) == values(fed)
        assert fed["complete"] and not fed["missing"]
        assert sorted(fed["answered"]) == sorted(net.nodes)
        assert not fed["estimated"]  # sums are exact across nodes

        # Disclosure control is the same on both paths: the same cells hidden, for the same
        # reason, small ones and their complements (a fine grouping has plenty of small cells).
        fine = StatsRequest.parse(
            "contributions_collected", "region,period,insurance_type", "2024-01..2024-12", None,
            "county",
        )  # fmt: skip
        local_fine, fed_fine = (
            await ministry.stats.run(fine),
            await ministry.stats.run(fine, federated=True),
        )
        hidden = [(c["region"], c["period"], c["suppressed"]) for c in local_fine["cells"]]
        assert hidden == [(c["region"], c["period"], c["suppressed"]) for c in fed_fine["cells"]]
        assert {"primary", "secondary"} <= {h[2] for h in hidden}
        assert local_fine["disclosure"]["unresolved"] == 0

        dups = StatsRequest.parse("duplicate_enrolment", "insurance_type", "2024-12", None, None)
        exact = await ministry.stats.run(dups)
        assert values(exact) == {("110",): str(PLANTED)}
        estimated = await ministry.stats.run(dups, federated=True)
        cell = estimated["cells"][0]
        assert cell["estimated"] and abs(cell["value"] - PLANTED) <= 1

        insured = StatsRequest.parse("insured_persons", "region", "2024-12", None, "prefecture")
        replicated = values(await ministry.stats.run(insured))
        federated = values(await ministry.stats.run(insured, federated=True))
        assert replicated == federated  # per city: one part each, exact
        city_b = net.nodes[b]
        assert city_b.stats is not None
        at_b = values(await city_b.stats.run(insured))
        assert at_b[(b,)] == replicated[(b,)]

        # medical settlements are `local`: the ministry holds none, but a federated query
        # answers them; city B's 3 settlements are withheld there (minimum cell size 10)
        spend = StatsRequest.parse("medical_fund_spending", "region", "2024", None, "prefecture")
        assert (await ministry.stats.run(spend))["cells"] == []
        answer = await ministry.stats.run(spend, federated=True)
        assert values(answer) == {(a,): str(sum(10 + n for n in range(12)) + 6) + ".00", (b,): None}
        assert not answer["complete"]  # a cell was withheld below the minimum size
        assert await ministry.store.status() is not None
        counts = (await ministry.store.status()).records_by_origin
        assert counts[a] == 500 and counts[b] == 500 + PLANTED  # no settlement replicated
        held = await net.digests(net.ministry_id)
        for city in (a, b):  # the replicated content is identical; local records are not in it
            assert held[city] == (await net.digests(city))[city]

        for node_id, node in net.nodes.items():
            kinds = [e.kind for e in await node.security.audit.entries()]  # type: ignore[union-attr]
            assert AuditKind.STATS_QUERY in kinds, node_id
    finally:
        await net.stop_all()


async def test_missing_child_and_refusals(tmp_path: Path) -> None:
    net = await start(tmp_path, lambda n: f"sqlite:///{tmp_path / n}.db")
    try:
        a, b = net.city_ids()
        await ingest(net.nodes[a], generate_records(a, 200, seed=1))
        await net.wait_converged()
        await net.stop(b)
        ministry = net.nodes[net.ministry_id]
        assert ministry.stats is not None
        req = StatsRequest.parse("contributions_collected", "region", "2024", None, "prefecture")
        doc = await ministry.stats.run(req, federated=True, timeout_s=5)
        assert not doc["complete"]
        assert [m["node"] for m in doc["missing"]] == [b], doc["missing"]
        assert b not in doc["answered"] and a in doc["answered"]

        # a city may not query its sibling or its parent: only a parent sends downward
        city = net.nodes[a]
        province = net.nodes[net.province_ids()[0]]
        now = city.clock.time_ms()
        _, query, sig = make_query(city.key, a, req, now, now + 5000)
        sideways = make_hop(city.key, a, province.config.node_id, query, sig, [a], now)
        status, _ = await province.stats.answer_query(sideways, "test")  # type: ignore[union-attr]
        assert status == 403
        # a genuine hop from the parent is answered once; its replay is refused
        _, query, sig = make_query(province.key, province.config.node_id, req, now, now + 5000)
        hop = make_hop(
            province.key, province.config.node_id, a, query, sig, [province.config.node_id], now
        )
        assert city.stats is not None
        assert (await city.stats.answer_query(hop, "test"))[0] == 200
        assert (await city.stats.answer_query(hop, "test"))[0] == 409
        kinds = [(e.kind, e.code) for e in await province.security.audit.entries()]  # type: ignore[union-attr]
        assert (AuditKind.REQUEST_REJECTED, "not_authorised") in kinds
        assert QUERY_PATH == "/v1/stats/query"
    finally:
        await net.stop_all()
