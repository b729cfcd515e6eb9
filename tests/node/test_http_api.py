"""The local HTTP surface of a node: record ingest, status, health, metrics — real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.app import Node
from node.datagen import generate_records
from tests.support.network import TestNet, make_network


@pytest.fixture
async def city(tmp_path: Path) -> AsyncIterator[tuple[TestNet, Node]]:
    net = make_network(tmp_path, cities_per_province=1)
    await net.init_all()
    city_id = net.city_ids()[0]
    node = await net.start(city_id)  # parent not running: writes must still be accepted
    try:
        yield net, node
    finally:
        await net.stop_all()


async def _post(node: Node, body: Any, token: str | None = "default", raw: bytes | None = None):
    headers = {}
    if token == "default":
        token = node.config.api.ingest_tokens[0]
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as s:
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        async with s.post(node.config.node.url + "/v1/records", headers=headers, **kwargs) as r:
            return r.status, await r.json()


async def test_valid_records_are_stored_with_change_log(city: tuple[TestNet, Node]) -> None:
    _, node = city
    objs = generate_records(node.config.node_id, 25, seed=3)
    status, body = await _post(node, objs)
    assert status == 200, body
    assert body["accepted"] == 25 and body["changed"] == 25 and body["last_seq"] == 25
    doc = await node.status_dict()
    assert doc["records_by_origin"] == {node.config.node_id: 25}
    assert doc["backlog"] == 25  # parent is down: nothing acknowledged yet
    # Posting the same records again is idempotent.
    status, body = await _post(node, objs)
    assert status == 200 and body["changed"] == 0 and body["unchanged"] == 25


@pytest.mark.parametrize("token", [None, "wrong-token-wrong-token"])
async def test_ingest_needs_a_valid_token(city: tuple[TestNet, Node], token: str | None) -> None:
    _, node = city
    status, body = await _post(node, generate_records(node.config.node_id, 1), token=token)
    assert status == 401
    assert body["error"]["code"] == "unauthenticated"
    assert (await node.store.meta()).last_seq == 0


async def test_one_bad_record_stores_nothing(city: tuple[TestNet, Node]) -> None:
    _, node = city
    objs = generate_records(node.config.node_id, 5, seed=1)
    objs[3] = {**objs[3], "no_such_field": "x"}
    status, body = await _post(node, objs)
    assert status == 422
    assert body["error"]["code"] == "invalid_record"
    assert body["error"]["records"][0]["index"] == 3
    assert body["error"]["records"][0]["field"] == "no_such_field"
    assert (await node.store.meta()).last_seq == 0
    assert (await node.status_dict())["records_by_origin"] == {}


@pytest.mark.parametrize(
    ("raw", "code"),
    [(b"{not json", "malformed"), (b'{"type": "person"}', "malformed"), (b"\xff\xfe", "malformed")],
)
async def test_malformed_bodies(city: tuple[TestNet, Node], raw: bytes, code: str) -> None:
    _, node = city
    status, body = await _post(node, None, raw=raw)
    assert status == 400
    assert body["error"]["code"] == code
    assert (await node.store.meta()).last_seq == 0


async def test_health_status_and_metrics(city: tuple[TestNet, Node]) -> None:
    _, node = city
    url = node.config.node.url
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/healthz") as r:
            assert r.status == 200
            assert (await r.json())["node"] == node.config.node_id
        async with s.get(url + "/v1/status") as r:
            doc = await r.json()
            for key in ("node", "level", "records_by_origin", "watermarks", "backlog", "epoch"):
                assert key in doc
            assert doc["level"] == "city"
        async with s.get(url + "/metrics") as r:
            text = await r.text()
            assert "lsnet_sync_backlog_changes" in text
            assert "lsnet_sync_push_seconds" in text
            assert f'lsnet_node_info{{level="city",node="{node.config.node_id}"' in text


async def test_warnings_are_reported_and_stored(tmp_path: Path) -> None:
    from node.datagen import id_check_char
    from tests.support.network import wait_until

    net = make_network(tmp_path, cities_per_province=1)
    await net.init_all()
    city_id = net.city_ids()[0]
    await net.start(net.ministry_id)
    await net.start(net.province_ids()[0])
    node = await net.start(city_id)
    try:
        await wait_until(lambda: node.standards_version == "std-1", 20, "release 1 not in force")
        person = next(o for o in generate_records(city_id, 20, seed=1) if o["type"] == "person")
        body = "33019919800101001"  # 330199 is no known birthplace: a warning, not an error
        odd = {
            **person,
            "person_id": body + id_check_char(body),
            "birth_date": "1980-01-01",
            "gender": "1",
        }
        status, answer = await _post(node, [odd])
        assert status == 200, answer
        assert answer["warnings"] == 1 and answer["standards"] == "std-1"
        assert answer["warning_details"][0]["field"] == "person_id"
        stored = await node.store.warnings(10)
        assert [(w["field"], w["rule_id"], w["version"]) for w in stored] == [
            ("person_id", "person.birthplace", 1)
        ]
    finally:
        await net.stop_all()


async def test_unknown_paths_and_methods_answer_json_errors(city: tuple[TestNet, Node]) -> None:
    _, node = city
    async with aiohttp.ClientSession() as s:
        async with s.get(node.config.node.url + "/no/such/path") as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"
        async with s.delete(node.config.node.url + "/v1/records") as r:
            assert r.status == 405
            assert (await r.json())["error"]["code"] == "method_not_allowed"
