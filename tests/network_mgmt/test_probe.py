"""End-to-end lag probes travel the data path (signed batches, relayed by the province) and give
the ministry a per-node latency, with no business data flowing — and they are never records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection, delete, select

from hierarchy_config.model import NetworkConfig
from network_mgmt.probe import PROBE_TYPE, check_probe
from node.demo import fill_city, verify_network
from node.demo import wait_converged as demo_wait_converged
from node.schema import records
from sync.errors import BatchRejected
from sync.wire import Change
from tests.network_mgmt.support import by_id, fast_network, get_json
from tests.support.network import make_network, wait_until

FAST_PROBES: dict[str, object] = {"e2e_probe_interval_s": 0.2}


async def test_probes_measure_city_to_ministry_latency(tmp_path: Path) -> None:
    net = fast_network(tmp_path, provinces=1, cities=2, e2e_probe_interval_s=0.3)
    await net.init_all()
    await net.start_all()
    ministry = net.nodes[net.ministry_id]
    senders = [*net.city_ids(), *net.province_ids()]
    try:

        async def measured() -> bool:
            _, doc = await get_json(ministry, "/v1/network/tree")
            nodes = by_id(doc)
            return all(nodes[n]["e2e_lag_s"] is not None for n in senders)

        await wait_until(measured, 20, "the ministry did not receive a probe from every node")
        _, doc = await get_json(ministry, "/v1/network/tree")
        for node_id in senders:
            entry = by_id(doc)[node_id]
            assert 0 <= entry["e2e_lag_s"] < 15, entry
            assert entry["e2e_age_s"] >= entry["e2e_lag_s"] - 0.001
        assert by_id(doc)[net.ministry_id]["e2e_lag_s"] is None  # the root sends no probe
        # Probes are not records: no counts, no digests anywhere.
        status = await ministry.status_dict()
        assert status["records_total"] == 0
        assert await net.digests(net.ministry_id) == {}
        assert await net.digests(net.city_ids()[0]) == {}
        await ministry.heartbeats.watch()  # type: ignore[union-attr]
        city = net.city_ids()[0]
        value = ministry.registry.get_sample_value("lsnet_node_e2e_lag_seconds", {"node": city})
        assert value is not None and value >= 0
        # The province holds the city's probes in the signed batches it relays, untouched.
        province = net.nodes[net.province_ids()[0]]
        assert city in await province.heartbeats.probes()  # type: ignore[union-attr]
    finally:
        await net.stop_all()


@pytest.mark.parametrize(
    "change",
    [
        Change(1, PROBE_TYPE, "330100", 1, False, {"sent_ms": "17"}, "std-1"),
    ],
)
def test_a_well_formed_probe_passes(change: Change) -> None:
    check_probe(change, "330100")


@pytest.mark.parametrize(
    ("key", "deleted", "payload"),
    [
        ("330200", False, {"sent_ms": "17"}),  # for another origin
        ("330100", True, {"sent_ms": "17"}),
        ("330100", False, {"sent_ms": "17", "name": "x"}),  # smuggled data
        ("330100", False, {"sent_ms": "-1"}),
        ("330100", False, {"sent_ms": "1" * 17}),
    ],
)
def test_malformed_probes_are_refused(key: str, deleted: bool, payload: dict[str, str]) -> None:
    with pytest.raises(BatchRejected) as err:
        check_probe(Change(1, PROBE_TYPE, key, 1, deleted, payload, "std-1"), "330100")
    assert err.value.code.value == "invalid_record"


def test_probes_are_on_by_default() -> None:
    assert NetworkConfig().e2e_probe_interval_s == 30.0


async def test_no_business_data_yet_every_city_has_a_lag_at_the_ministry(tmp_path: Path) -> None:
    """2 provinces x 2 cities, default heartbeats (10 s: none is needed here), probes every
    0.3 s: with no record written anywhere, the ministry's tree shows `e2e_lag_s` for every
    city, carried by the data path alone."""
    net = make_network(tmp_path, provinces=2, cities_per_province=2, network=FAST_PROBES)
    await net.init_all()
    await net.start_all()
    ministry = net.nodes[net.ministry_id]
    try:

        async def every_city_measured() -> bool:
            _, doc = await get_json(ministry, "/v1/network/tree")
            nodes = by_id(doc)
            return all(nodes[c]["e2e_lag_s"] is not None for c in net.city_ids())

        await wait_until(every_city_measured, 30, "a city's probe never reached the ministry")
        _, doc = await get_json(ministry, "/v1/network/tree")
        for city in net.city_ids():
            entry = by_id(doc)[city]
            assert 0 <= entry["e2e_lag_s"] < 15, entry
        for node_id in [net.ministry_id, *net.province_ids(), *net.city_ids()]:
            status = await net.nodes[node_id].status_dict()
            assert status["records_total"] == 0, node_id
            assert await net.digests(node_id) == {}, node_id
        # The city took seqs for its probes, yet holds no record.
        city = net.city_ids()[0]
        assert (await net.nodes[city].store.meta()).last_seq >= 1
    finally:
        await net.stop_all()


async def test_demo_final_check_holds_with_probes_between_and_after_the_records(
    tmp_path: Path,
) -> None:
    """`lsnet demo`'s convergence wait and final check (node.demo) with probes every 0.2 s:
    they compare records with records and seqs with seqs, so probes taking seqs between the
    records and after convergence are no problem — and a missing record still is."""
    net = make_network(tmp_path, provinces=1, cities_per_province=2, network=FAST_PROBES)
    await net.init_all()
    await net.start_all()
    try:
        for city in net.city_ids():
            await fill_city(net.nodes[city], 40, seed=3)
        city = net.city_ids()[0]
        written_ms = net.nodes[city].clock.time_ms()
        ministry = net.nodes[net.ministry_id]

        async def probed_after_the_records() -> bool:
            seen = await ministry.heartbeats.probes()  # type: ignore[union-attr]
            return all(c in seen and seen[c].sent_ms > written_ms for c in net.city_ids())

        await wait_until(probed_after_the_records, 20, "no probe after the records arrived")
        for c in net.city_ids():
            await fill_city(net.nodes[c], 60, seed=4)
        targets = await demo_wait_converged(net.layout, net.nodes, 30)
        assert targets is not None
        meta = await net.nodes[city].store.meta()
        assert meta.last_seq > 100  # probes took seqs between the records
        result = await verify_network(net.layout, net.nodes, targets)
        assert result["problems"] == []
        # The check still finds a record the ministry lost.
        await ministry.db.write(_delete_one_of(city))
        result = await verify_network(net.layout, net.nodes, targets)
        assert any("does not hold exactly" in p for p in result["problems"]), result
    finally:
        await net.stop_all()


def _delete_one_of(origin: str) -> Callable[[Connection], None]:
    def body(conn: Connection) -> None:
        key = conn.execute(
            select(records.c.key).where(records.c.owner == origin).limit(1)
        ).scalar_one()
        conn.execute(delete(records).where(records.c.owner == origin, records.c.key == key))

    return body
