"""Operator routes of the statistics package over real HTTP, and the `local` replication mode at
the write path (no upward seq, no change-log entry, records still counted locally)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from hierarchy_config.standards import default_release
from node.app import Node
from node.datagen import generate_records
from node.schema import changelog, local_changes, records
from node.stats.replication import promote_kept_txn
from node.validation import ReleaseValidator, Validators
from security.tokens import create_token
from tests.support.network import TestNet, make_network


@pytest.fixture
async def city(tmp_path: Path) -> AsyncIterator[tuple[TestNet, Node]]:
    net = make_network(tmp_path, cities_per_province=1)
    await net.init_all()
    node = await net.start(net.city_ids()[0])  # parent not running
    try:
        yield net, node
    finally:
        await net.stop_all()


async def _get(node: Node, path: str, token: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.get(node.config.node.url + path, headers=headers) as r,
    ):
        return r.status, await r.json()


async def test_routes_need_an_operator_token(city: tuple[TestNet, Node]) -> None:
    _, node = city
    recs = [
        node.validator.validate(o)[0] for o in generate_records(node.config.node_id, 300, seed=2)
    ]
    await node.ingest(recs)
    token, _ = await create_token(
        node.db, name="ops", scope="operator", created_by="test", now_ms=node.clock.time_ms()
    )
    status, body = await _get(node, "/v1/stats/indicators", None)
    assert status == 401 and body["error"]["code"] == "unauthenticated"
    status, body = await _get(node, "/v1/stats/indicators", node.config.api.ingest_tokens[0])
    assert status in (401, 403)
    status, body = await _get(node, "/v1/stats/indicators", token)
    assert status == 200
    names = {i["name"] for i in body["indicators"]}
    assert {
        "insured_persons",
        "duplicate_enrolment",
        "contributions_collected",
        "average_wage",
    } <= names
    status, body = await _get(
        node, "/v1/stats/run/contributions_collected?by=period&period=2024-01..2024-12", token
    )
    assert status == 200, body
    periods = [c["period"] for c in body["cells"]]
    assert periods == sorted(periods) and periods[-1] == "2024-12"  # paid in the months paid
    assert set(periods) <= {f"2024-{m:02d}" for m in range(1, 13)}
    assert all(isinstance(c["value"], int | float) for c in body["cells"])
    status, body = await _get(node, "/v1/stats/run/nope?period=2024", token)
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await _get(node, "/v1/stats/run/insured_persons?by=colour&period=2024", token)
    assert status == 400 and "cannot be grouped by colour" in body["error"]["message"]
    status, body = await _get(node, "/v1/stats/run/insured_persons?period=2024-13", token)
    assert status == 400 and body["error"]["code"] == "bad_request"


async def test_local_types_take_no_upward_seq(city: tuple[TestNet, Node]) -> None:
    _, node = city
    node.validators = Validators(node.config, default_release().to_bytes(), {})
    node.validator = node.validators.own()
    assert isinstance(node.validator, ReleaseValidator)
    city_id = node.config.node_id
    person = generate_records(city_id, 20, seed=5)[1]["person_id"]
    settlement = {
        "type": "medical_settlement",
        "setl_id": "S1",
        "person_id": person,
        "insurance_type": "310",
        "med_type": "11",
        "settle_time": "2024-05-01T10:00:00",
        "total_cost": "80.00",
        "pool_region": city_id,
    }
    contrib = [o for o in generate_records(city_id, 200, seed=1) if o["type"] == "contribution"][:3]
    objs = [settlement, *contrib, {**settlement, "setl_id": "S2"}]
    result = await node.ingest([node.validator.validate(o)[0] for o in objs])
    assert result.changed == 5 and result.last_seq == 3  # only the 3 contributions are numbered
    assert (await node.store.meta()).last_seq == 3

    def counts(conn: Any) -> tuple[int, int, list[int]]:
        logged = conn.execute(select(func.count()).select_from(changelog)).scalar_one()
        kept = conn.execute(select(func.count()).select_from(local_changes)).scalar_one()
        seqs = (
            conn.execute(select(records.c.seq).where(records.c.record_type == "medical_settlement"))
            .scalars()
            .all()
        )
        return logged, kept, list(seqs)

    assert await node.db.read(counts) == (3, 2, [0, 0])
    # a change of a kept record is logged locally, still without an upward seq
    changed = node.validator.validate({**settlement, "total_cost": "90.00"})[0]
    again = await node.ingest([changed])
    assert again.changed == 1 and again.last_seq == 3
    assert await node.db.read(counts) == (3, 3, [0, 0])
    assert (await node.store.status()).backlog_changes == 3

    # a later release replicates the type: the kept records take upward seqs and are sent
    replicating = dataclasses.replace(
        default_release(), version=2, policies={}, default_policy=None
    )
    node.validators = Validators(node.config, replicating.to_bytes(), {})
    node.validator = node.validators.own()
    await node.promote_kept()
    assert (await node.store.meta()).last_seq == 5
    logged, kept, seqs = await node.db.read(counts)
    assert (logged, kept) == (5, 3) and sorted(seqs) == [4, 5]
    assert await node.db.write(promote_kept_txn, frozenset(), node.clock.time_ms()) == 0
