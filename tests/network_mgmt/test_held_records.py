"""Poison records in a running network (real HTTP, real databases): a province whose rules refuse
some of a city's records (standards skew: it does not know contribution type 31 yet).

With the default policy ('hold') the province applies the rest of each batch, holds the bad records
aside, and nothing behind them waits: later batches flow, the ministry (which knows the code) gets
everything, anti-entropy sees no divergence. The operator sees the held records (API, CLI view,
tree, alerts), replays them once the rules are fixed, or skips them — each action audited. With
'block' chosen for the record type, the batch is refused and quarantined at the city instead, and
the origin's later batches wait, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Connection, func, select

from hierarchy_config.standards import Issue
from node.app import Node
from node.cli import main
from node.datagen import generate_records
from node.records import RecordInvalid, ValidRecord
from node.schema import records
from node.validation import RecordValidator
from security.audit import AuditKind, AuditReader
from security.tokens import create_token
from sync.ae_store import range_digest_txn
from tests.network_mgmt.support import by_id, fast_network, get_json, post_json
from tests.support.network import TestNet, wait_until


class WithoutType31:
    """The rules of a node whose standards lack contribution type 31 (a back payment): the rules
    in force, minus that code."""

    def __init__(self, inner: RecordValidator) -> None:
        self.inner = inner
        self.standards_id = inner.standards_id

    def validate(self, obj: Mapping[str, Any]) -> tuple[ValidRecord, tuple[Issue, ...]]:
        if obj.get("type") == "contribution" and obj.get("contribution_type") == "31":
            raise RecordInvalid(
                "contribution_type", "code '31' is not in this node's contribution_type table"
            )
        return self.inner.validate(obj)

    def natural_key(self, record_type: str) -> tuple[str, ...] | None:
        return self.inner.natural_key(record_type)


async def _without_type31(node: Node) -> RecordValidator:
    """Give `node` the rules in force minus type 31 (once its standards release is in force, so
    the release does not replace them); returns the full rules, to put back later."""
    await wait_until(lambda: node.validators is not None, 15, "no standards release in force")
    full = node.validator
    node.validators = None  # validator_for_origin now answers node.validator for every origin
    node.validator = WithoutType31(full)
    return full


def _records(city: str, count: int, seed: int, back_payments: int = 0) -> list[dict[str, object]]:
    """Generated records, `back_payments` of whose contributions are turned into type 31."""
    objs = [dict(o) for o in generate_records(city, count, seed=seed)]
    turned = 0
    for o in objs:
        if turned == back_payments:
            break
        if o["type"] == "contribution" and o["contribution_type"] == "10":
            o["contribution_type"] = "31"
            for name in ("unit_amount", "personal_amount", "to_account_amount"):
                if name in o:
                    o[name] = "-" + str(o[name])
            turned += 1
    return objs


def _bad(objs: list[dict[str, object]]) -> int:
    return sum(
        1 for o in objs if o["type"] == "contribution" and o.get("contribution_type") == "31"
    )


async def _token(node: Node, name: str) -> str:
    token, _ = await create_token(
        node.db, name=name, scope="operator", created_by="test", now_ms=node.clock.time_ms()
    )
    return token


async def _record_count(node: Node, owner: str) -> int:
    def count(conn: Connection) -> int:
        stmt = select(func.count()).select_from(records).where(records.c.owner == owner)
        return int(conn.execute(stmt).scalar_one())

    return await node.db.read(count)


def _network(tmp_path: Path, database_for: Callable[[str], str], policy: dict[str, str]) -> TestNet:
    net = fast_network(tmp_path, provinces=1, cities=1, database_for=database_for)
    province = net.province_ids()[0]
    cfg = net.configs[province]
    net.configs[province] = cfg.model_copy(
        update={"sync": cfg.sync.model_copy(update={"on_invalid_record_by_type": policy})}
    )
    return net


@pytest.fixture
async def net(tmp_path: Path, database_for: Callable[[str], str]) -> AsyncIterator[TestNet]:
    testnet = _network(tmp_path, database_for, {})
    await testnet.init_all()
    await testnet.start_all()
    try:
        yield testnet
    finally:
        await testnet.stop_all()


async def test_held_records_do_not_block_and_are_replayed_or_skipped(net: TestNet) -> None:
    city_id, province_id = net.city_ids()[0], net.province_ids()[0]
    city, province = net.nodes[city_id], net.nodes[province_id]
    ministry = net.nodes[net.ministry_id]
    full = await _without_type31(province)
    first = _records(city_id, 60, seed=3, back_payments=4)
    bad = _bad(first)
    assert bad == 4
    await net.ingest(city_id, first)
    second = _records(city_id, 30, seed=4)
    assert _bad(second) == 0
    await net.ingest(city_id, second)

    # Later batches of the same origin are not blocked: the province's watermark reaches the
    # city's last seq, the ministry (which knows type 31) holds every record.
    await net.wait_converged(30)
    total = await _record_count(city, city_id)
    assert await _record_count(ministry, city_id) == total
    assert await _record_count(province, city_id) == total - bad
    assert (await city.status_dict())["quarantined_batches"] == 0

    op = await _token(province, "alice")
    status, doc = await get_json(province, "/v1/admin/held", token=op)
    assert status == 200
    assert doc["counts"] == {"held": bad, "released": 0, "skipped": 0}
    held = doc["held"]
    assert {h["origin"] for h in held} == {city_id}
    assert {h["record_type"] for h in held} == {"contribution"}
    assert all("contribution_type" in h["message"] and h["state"] == "held" for h in held)
    assert all("key" not in h and "payload" not in h for h in held)  # no personal data listed

    # Audited and counted where they were held.
    entries = await AuditReader(province.db).entries(kind=AuditKind.RECORDS_HELD)
    assert sum(int(e.detail_map()["held"]) for e in entries) == bad
    body = await _metrics(province)
    assert (
        f'lsnet_sync_records_held_total{{origin="{city_id}",reason="invalid_record"}} {bad}.0'
        in body
    )

    # Anti-entropy sees no divergence although the province lacks the held records.
    assert await _same_digest(city, province, city_id)

    # The province reports them in its heartbeat: the ministry's tree and alerts show them.
    async def ministry_sees() -> bool:
        _, tree = await get_json(ministry, "/v1/network/tree")
        return by_id(tree)[province_id].get("held_records") == bad

    await wait_until(ministry_sees, 15, "the ministry did not see the held records")
    _, alerts = await get_json(ministry, "/v1/network/alerts")
    assert any(
        a["alert"] == "poison_records" and a["node"] == province_id for a in alerts["alerts"]
    )

    # Replay while the rules still refuse: 409 still_invalid, nothing changes, audited.
    first_id, second_id = held[0]["id"], held[1]["id"]
    status, body_ = await post_json(
        province, f"/v1/admin/held/{first_id}/replay", {"reason": "try"}, token=op
    )
    assert status == 409 and body_["error"]["code"] == "still_invalid"
    assert await _record_count(province, city_id) == total - bad
    status, body_ = await post_json(province, f"/v1/admin/held/{first_id}/replay", {}, token=op)
    assert status == 400 and body_["error"]["code"] == "reason_required"

    # The province's standards learn type 31: replay one, skip one, recheck the rest.
    province.validator = full
    status, body_ = await post_json(
        province, f"/v1/admin/held/{first_id}/replay", {"reason": "code 31 added"}, token=op
    )
    assert status == 200 and body_["held"]["state"] == "released" and body_["held"]["applied"]
    status, body_ = await post_json(
        province, f"/v1/admin/held/{second_id}/skip", {"reason": "duplicate entry"}, token=op
    )
    assert status == 200 and body_["held"]["state"] == "skipped"
    status, body_ = await post_json(
        province, f"/v1/admin/held/{second_id}/replay", {"reason": "again"}, token=op
    )
    assert status == 404  # decided: no second decision
    status, body_ = await post_json(
        province, "/v1/admin/held/recheck", {"reason": "standards fixed"}, token=op
    )
    assert status == 200 and body_ == {"action": "recheck", "released": bad - 2, "still_held": 0}
    assert await _record_count(province, city_id) == total - 1  # only the skipped one is missing
    assert await _same_digest(city, province, city_id)  # a skipped record is accounted for
    _, doc = await get_json(province, "/v1/admin/held?all=1", token=op)
    assert doc["counts"] == {"held": 0, "released": bad - 1, "skipped": 1}

    # The terminal view, for the province's operator.
    config = str(next(e.config_path for e in net.layout.nodes if e.id == province_id))
    env = {"LSNET_OPERATOR_TOKEN": op}
    result = await _cli(["links", "held", "list", "--config", config, "--all"], env)
    assert result.exit_code == 0 and "skipped" in result.output and "released" in result.output
    result = await _cli(["links", "held", "list", "--config", config], env)
    assert "no held records waiting (replayed 3, skipped 1)" in result.output
    result = await _cli(["links", "held", "skip", "--config", config, "999"], env, "--reason=x")
    assert result.exit_code == 2 and "not_found" in result.output

    # A new standards release re-checks held records by itself (Node.recheck_held).
    province.validator = WithoutType31(full)
    await net.ingest(city_id, _records(city_id, 30, seed=8, back_payments=2))
    await net.wait_converged(30)
    _, doc = await get_json(province, "/v1/admin/held", token=op)
    assert doc["counts"]["held"] == 2
    province.validator = full
    await province.recheck_held()
    _, doc = await get_json(province, "/v1/admin/held", token=op)
    assert doc["counts"]["held"] == 0
    assert await _record_count(province, city_id) == await _record_count(city, city_id) - 1
    rechecks = [
        e
        for e in await AuditReader(province.db).entries(kind=AuditKind.RECORDS_HELD)
        if e.code == "recheck"
    ]
    assert [e.detail_map()["released"] for e in rechecks] == [2]

    actions = await AuditReader(province.db).entries(kind=AuditKind.OPERATOR_ACTION)
    codes = [e.code for e in actions]
    assert codes.count("held_replay_refused") == 1
    assert codes.count("held_replay") == 1 and codes.count("held_skip") == 1
    assert codes.count("held_recheck") == 1
    assert all(e.detail_map()["operator"] == "alice" for e in actions)


async def test_block_policy_quarantines_and_holds_back_later_batches(
    tmp_path: Path, database_for: Callable[[str], str]
) -> None:
    net = _network(tmp_path, database_for, {"contribution": "block"})
    await net.init_all()
    await net.start_all()
    try:
        city_id, province_id = net.city_ids()[0], net.province_ids()[0]
        city, province = net.nodes[city_id], net.nodes[province_id]
        full = await _without_type31(province)
        first = _records(city_id, 60, seed=3, back_payments=1)
        await net.ingest(city_id, first)

        async def quarantined() -> bool:
            return (await city.status_dict())["quarantined_batches"] == 1

        await wait_until(quarantined, 15, "the city did not quarantine the refused batch")
        later = _records(city_id, 10, seed=5)
        assert _bad(later) == 0
        await net.ingest(city_id, later)

        async def cut() -> bool:
            meta = await city.store.meta()
            return meta.batched_seq == meta.last_seq

        await wait_until(cut, 15, "the city did not cut its later batch")
        # The later batch waits behind the quarantined one: nothing is left to send.
        assert await city.sync_store.next_transfer(100, 1 << 30) == []
        meta = await city.store.meta()
        marks = await province.sync_store.watermarks_for([city_id])
        assert all(w.seq < meta.last_seq for w in marks)
        op = await _token(province, "bob")
        _, doc = await get_json(province, "/v1/admin/held", token=op)
        assert doc["held"] == []

        city_op = await _token(city, "carol")
        _, q = await get_json(city, "/v1/admin/quarantine", token=city_op)
        batch_id = q["quarantined"][0]["batch_id"]

        # The ministry's drill-down names the quarantined batch (from the city's heartbeat).
        ministry = net.nodes[net.ministry_id]

        async def ministry_lists_it() -> bool:
            _, doc = await get_json(ministry, f"/v1/network/node/{city_id}")
            listed = doc.get("quarantined") or []
            return [(b["batch_id"], b["code"]) for b in listed] == [(batch_id, "invalid_record")]

        await wait_until(ministry_lists_it, 15, "the ministry does not list the batch")

        # Fixed rules, then the city's operator replays the batch: everything flows.
        province.validator = full
        status, _ = await post_json(
            city, f"/v1/admin/quarantine/{batch_id}/replay", {"reason": "fixed"}, token=city_op
        )
        assert status == 200
        await net.wait_converged(30)
    finally:
        await net.stop_all()


async def _cli(args: list[str], env: dict[str, str], *extra: str) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, main, [*args, *extra], env=env, catch_exceptions=False
    )


async def _metrics(node: Node) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(node.config.node.url + "/metrics") as r:
        return await r.text()


async def _same_digest(child: Node, parent: Node, origin: str) -> bool:
    meta = await child.store.meta()
    mine = await child.db.read(range_digest_txn, origin, meta.epoch, meta.last_seq)
    theirs = await parent.db.read(range_digest_txn, origin, meta.epoch, meta.last_seq)
    return mine.top == theirs.top and mine.count == theirs.count
