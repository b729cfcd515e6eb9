"""A parent's operator asks a child for batches again (real HTTP, real databases): rows lost at
the province behind the system's back come back at once through the repair path, not at the
next anti-entropy round; the request travels with the heartbeat answer, is carried out once,
acknowledged, audited at both ends; bad requests are refused and change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, delete, func, select

from node.app import Node
from node.cli import main
from node.datagen import generate_records
from node.schema import records
from security.audit import AuditKind, AuditReader
from security.tokens import create_token
from tests.network_mgmt.support import fast_network, get_json, post_json
from tests.support.network import TestNet, wait_until


@pytest.fixture
async def net(tmp_path: Path, database_for: Callable[[str], str]) -> AsyncIterator[TestNet]:
    testnet = fast_network(tmp_path, provinces=1, cities=2, database_for=database_for)
    await testnet.init_all()
    await testnet.start_all()
    try:
        yield testnet
    finally:
        await testnet.stop_all()


async def _count(node: Node, owner: str) -> int:
    def count(conn: Connection) -> int:
        stmt = select(func.count()).select_from(records).where(records.c.owner == owner)
        return int(conn.execute(stmt).scalar_one())

    return await node.db.read(count)


async def _lose_rows(node: Node, owner: str, n: int) -> None:
    def lose(conn: Connection) -> None:
        keys = conn.execute(
            select(records.c.record_type, records.c.key)
            .where(records.c.owner == owner)
            .order_by(records.c.seq)
            .limit(n)
        ).all()
        for record_type, key in keys:
            conn.execute(
                delete(records).where(
                    records.c.owner == owner,
                    records.c.record_type == record_type,
                    records.c.key == key,
                )
            )

    await node.db.write(lose)


async def test_province_asks_a_city_again_and_lost_rows_come_back(net: TestNet) -> None:
    city_id, other_city = net.city_ids()
    province_id = net.province_ids()[0]
    city, province = net.nodes[city_id], net.nodes[province_id]
    await net.ingest(city_id, list(generate_records(city_id, 40, seed=11)))
    await net.wait_converged(30)
    total = await _count(city, city_id)
    await _lose_rows(province, city_id, 5)  # behind the system's back
    assert await _count(province, city_id) == total - 5

    op, _ = await create_token(
        province.db, name="dana", scope="operator", created_by="t", now_ms=province.clock.time_ms()
    )
    path = f"/v1/admin/children/{city_id}/resend"
    # Refusals change nothing.
    status, body = await post_json(province, path, {"from_seq": 1, "reason": "x"})
    assert status == 401
    status, body = await post_json(province, path, {"from_seq": 0, "reason": "x"}, token=op)
    assert status == 400 and body["error"]["code"] == "malformed"
    status, body = await post_json(
        province, path, {"from_seq": 1, "origin": other_city, "reason": "x"}, token=op
    )
    assert status == 400 and body["error"]["code"] == "malformed"  # not below that child
    status, body = await post_json(
        province, "/v1/admin/children/999999/resend", {"from_seq": 1, "reason": "x"}, token=op
    )
    assert status == 404
    status, body = await post_json(province, path, {"from_seq": 1}, token=op)
    assert status == 400 and body["error"]["code"] == "reason_required"
    _, listed = await get_json(province, "/v1/admin/children/resend", token=op)
    assert listed["requests"] == []

    # The CLI asks; the next heartbeat answer carries it; the city re-sends; rows come back.
    config = str(next(e.config_path for e in net.layout.nodes if e.id == province_id))
    args = ["links", "ask-resend", city_id, "--config", config, "--from-seq", "1"]
    result = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        [*args, "--reason", "rows lost"],
        env={"LSNET_OPERATOR_TOKEN": op},
        catch_exceptions=False,
    )
    assert result.exit_code == 0 and "queued" in result.output, result.output

    async def restored() -> bool:
        return await _count(province, city_id) == total

    await wait_until(restored, 20, "the lost rows did not come back")

    async def acknowledged() -> bool:
        _, doc = await get_json(province, "/v1/admin/children/resend", token=op)
        return [r["state"] for r in doc["requests"]] == ["acknowledged"]

    await wait_until(acknowledged, 15, "the city did not acknowledge the request")
    _, doc = await get_json(province, "/v1/admin/children/resend", token=op)
    request = doc["requests"][0]
    assert request["operator"] == "dana" and request["repaired_batches"] >= 1

    # Audited at both ends; the city carried the request out exactly once.
    at_province = await AuditReader(province.db).entries(kind=AuditKind.OPERATOR_ACTION)
    assert [(e.code, e.detail_map()["operator"]) for e in at_province] == [("child_resend", "dana")]
    at_city = await AuditReader(city.db).entries(kind=AuditKind.OPERATOR_ACTION)
    assert [e.code for e in at_city] == ["resend_requested"]
    assert at_city[0].detail_map()["request_id"] == request["request_id"]
    await net.wait_converged(15)
    assert await _count(net.nodes[net.ministry_id], city_id) == total
