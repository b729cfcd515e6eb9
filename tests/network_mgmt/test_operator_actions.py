"""Operator actions over the admin API of a running city (real HTTP, real databases): every
action needs an operator token (401 without, 403 with an ingest token), works, and is audited
with the token's name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from node.app import Node
from node.datagen import generate_records
from node.records import validate_record
from security.audit import AuditKind, AuditReader
from security.tokens import create_token
from tests.network_mgmt.support import fast_network, get_json, post_json
from tests.support.network import TestNet, wait_until


@pytest.fixture
async def net(tmp_path: Path, database_for: Callable[[str], str]) -> AsyncIterator[TestNet]:
    testnet = fast_network(tmp_path, provinces=1, cities=1, database_for=database_for)
    await testnet.init_all()
    await testnet.start_all()
    try:
        yield testnet
    finally:
        await testnet.stop_all()


async def _token(node: Node, name: str, scope: str) -> str:
    token, _ = await create_token(
        node.db, name=name, scope=scope, created_by="test", now_ms=node.clock.time_ms()
    )
    return token


async def _ingest(node: Node, count: int, seed: int) -> None:
    await node.ingest(
        [validate_record(o) for o in generate_records(node.config.node_id, count, seed=seed)]
    )


async def _actions(node: Node) -> list[tuple[int, str, str]]:
    entries = await AuditReader(node.db).entries(kind=AuditKind.OPERATOR_ACTION)
    return sorted((e.seq, e.code, e.detail_map().get("operator", "")) for e in entries)


async def test_admin_api_refuses_without_an_operator_token(net: TestNet) -> None:
    city = net.nodes[net.city_ids()[0]]
    parent = city.config.parent.id  # type: ignore[union-attr]
    ingest = await _token(city, "hr-system", "ingest")
    for method, path in [
        ("get", "/v1/admin/links"),
        ("post", f"/v1/admin/links/{parent}/retry"),
        ("post", f"/v1/admin/links/{parent}/pause"),
        ("get", "/v1/admin/quarantine"),
        ("post", "/v1/admin/quarantine/1/replay"),
        ("get", f"/v1/admin/links/{parent}/errors"),
    ]:
        call = get_json if method == "get" else post_json
        status, body = await call(city, path)
        assert status == 401 and body["error"]["code"] == "unauthenticated", path
        status, body = await call(city, path, token=ingest)
        assert status == 403 and body["error"]["code"] == "forbidden", path
    refused = await AuditReader(city.db).entries(kind=AuditKind.REQUEST_REJECTED)
    assert len(refused) >= 12
    assert await _actions(city) == []


async def test_pause_resume_retry_and_errors(net: TestNet) -> None:
    city_id = net.city_ids()[0]
    city = net.nodes[city_id]
    parent = city.config.parent.id  # type: ignore[union-attr]
    op = await _token(city, "alice", "operator")

    status, body = await post_json(city, f"/v1/admin/links/{parent}/pause", {}, token=op)
    assert status == 400 and body["error"]["code"] == "reason_required"
    status, body = await post_json(
        city, f"/v1/admin/links/{parent}/pause", {"reason": "maintenance window"}, token=op
    )
    assert status == 200 and body["link"]["mode"] == "paused", body
    await _ingest(city, 20, seed=1)

    async def paused_seen() -> bool:
        _, doc = await get_json(net.nodes[net.ministry_id], f"/v1/network/node/{city_id}")
        return doc["link_mode"] == "paused" and doc["backlog"] == 20

    await wait_until(paused_seen, 15, "the ministry did not see the paused link with its backlog")
    assert not await net.converged()

    # The pause survives a restart.
    await net.stop(city_id)
    city = await net.start(city_id)
    assert city.upstream is not None and city.upstream.paused
    status, body = await get_json(city, "/v1/admin/links", token=op)
    assert status == 200 and body["links"][0]["mode"] == "paused"

    status, body = await post_json(
        city, f"/v1/admin/links/{parent}/resume", {"reason": "window over"}, token=op
    )
    assert status == 200 and body["link"]["mode"] != "paused"
    await net.wait_converged(15)

    # A stopped parent: the link backs off and records errors; retry-now resets the backoff.
    await net.stop(parent)
    await _ingest(city, 5, seed=2)
    await wait_until(lambda: city.upstream.state.failures >= 2, 15, "no failures")  # type: ignore[union-attr]
    status, body = await get_json(city, f"/v1/admin/links/{parent}/errors?limit=3", token=op)
    assert status == 200 and 1 <= len(body["errors"]) <= 3
    assert body["errors"][0]["time_ms"] >= body["errors"][-1]["time_ms"]  # newest first
    # The errors outlive a restart of the city (kept in its database, the last 100).
    before = body["errors"]
    await net.stop(city_id)
    city = await net.start(city_id)
    status, body = await get_json(city, f"/v1/admin/links/{parent}/errors?limit=50", token=op)
    assert status == 200 and all(e in body["errors"] for e in before)
    await net.start(parent)
    status, body = await post_json(city, f"/v1/admin/links/{parent}/retry", {}, token=op)
    assert status == 200
    await net.wait_converged(15)
    assert city.upstream.state.failures == 0  # type: ignore[union-attr]

    status, body = await post_json(
        city,
        f"/v1/admin/links/{parent}/resend",
        {"from_seq": 1, "reason": "parent restored"},
        token=op,
    )
    assert status == 200 and body["requeued_batches"] >= 1
    await wait_until(lambda: _no_backlog(city), 15, "re-sent batches were not acknowledged again")
    actions = await _actions(city)
    assert [c for _, c, _ in actions] == ["link_pause", "link_resume", "link_retry", "link_resend"]
    assert {o for _, _, o in actions} == {"alice"}
    status, body = await post_json(city, "/v1/admin/links/999999/retry", {}, token=op)
    assert status == 404


async def _no_backlog(node: Node) -> bool:
    return (await node.store.status()).backlog_changes == 0


async def test_quarantined_batch_inspect_replay_and_skip(net: TestNet) -> None:
    city_id = net.city_ids()[0]
    city = net.nodes[city_id]
    parent = city.config.parent.id  # type: ignore[union-attr]
    op = await _token(city, "bob", "operator")
    await post_json(city, f"/v1/admin/links/{parent}/pause", {"reason": "set-up"}, token=op)
    # Two batches; the parent's refusal of the first is simulated by quarantining it here
    # (how a refusal becomes a quarantine is tested in tests/sync).
    await _ingest(city, 3, seed=3)
    assert await city.sync_store.cut_batch(city.key, 1000, 1 << 20, city.clock.time_ms())
    await _ingest(city, 2, seed=4)
    assert await city.sync_store.cut_batch(city.key, 1000, 1 << 20, city.clock.time_ms())
    pending = await city.sync_store.next_transfer(10, 1 << 22)
    first = pending[0]
    await city.sync_store.quarantine(first.id, "invalid_record", "field x: unknown code")
    await post_json(city, f"/v1/admin/links/{parent}/resume", {"reason": "go"}, token=op)

    status, body = await get_json(city, "/v1/admin/quarantine", token=op)
    assert status == 200
    assert [(q["batch_id"], q["code"]) for q in body["quarantined"]] == [
        (first.id, "invalid_record")
    ]
    status, doc = await get_json(city, f"/v1/admin/quarantine/{first.id}", token=op)
    assert status == 200 and doc["count"] == 3 and sum(doc["record_types"].values()) == 3
    assert "payload" not in doc and "key" not in doc
    status, _ = await get_json(city, "/v1/admin/quarantine/99999", token=op)
    assert status == 404
    # The node's own drill-down shows it; the later batch waits behind it.
    _, mine = await get_json(city, f"/v1/network/node/{city_id}")
    assert [q["batch_id"] for q in mine["quarantined"]] == [first.id]
    assert (await city.store.status()).backlog_batches == 2

    status, body = await post_json(city, f"/v1/admin/quarantine/{first.id}/replay", {}, token=op)
    assert status == 400 and body["error"]["code"] == "reason_required"
    status, body = await post_json(
        city, f"/v1/admin/quarantine/{first.id}/replay", {"reason": "codes fixed"}, token=op
    )
    assert status == 200 and body["batch"]["batch_id"] == first.id
    await net.wait_converged(15)
    status, body = await get_json(city, "/v1/admin/quarantine?all=1", token=op)
    assert body["quarantined"] == []  # replayed: no longer quarantined

    # Skip: a batch given up on stays listed (with all=1) as skipped.
    await post_json(city, f"/v1/admin/links/{parent}/pause", {"reason": "set-up"}, token=op)
    await _ingest(city, 1, seed=5)
    assert await city.sync_store.cut_batch(city.key, 1000, 1 << 20, city.clock.time_ms())
    third = (await city.sync_store.next_transfer(10, 1 << 22))[0]
    await city.sync_store.quarantine(third.id, "bad_range", "obsolete")
    status, body = await post_json(
        city, f"/v1/admin/quarantine/{third.id}/skip", {"reason": "origin re-initialised"}, token=op
    )
    assert status == 200
    status, body = await get_json(city, "/v1/admin/quarantine?all=1", token=op)
    assert [(q["batch_id"], q["skipped"]) for q in body["quarantined"]] == [(third.id, True)]
    status, doc = await get_json(city, f"/v1/admin/quarantine/{third.id}", token=op)
    assert [a["action"] for a in doc["actions"]] == ["skip"]
    assert doc["actions"][0]["operator"] == "bob"
    status, _ = await post_json(
        city, f"/v1/admin/quarantine/{third.id}/replay", {"reason": "again"}, token=op
    )
    assert status == 404  # already decided
    codes = [c for _, c, who in await _actions(city) if who == "bob"]
    assert "batch_replay" in codes and "batch_skip" in codes
