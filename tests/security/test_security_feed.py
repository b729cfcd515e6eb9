"""The security feed over real HTTP: a city's audit entry reaches the ministry through the
province, still verifiable against the city's key; forged, misaddressed-by-subtree and altered
reports are refused with nothing stored."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import Connection, func, select

from network_mgmt.security_feed import EVENTS_PATH, REPORT_PATH, FeedEntry, make_report
from node.app import Node
from node.schema import security_feed
from security.audit import PURPOSE_AUDIT, AuditKind, entry_hash
from security.keys import NodeKey
from security.signing import sign
from security.tokens import Scope, create_token
from tests.support.network import TestNet, make_network
from tests.support.peer import signing_session

_TOKENS: dict[str, str] = {}


async def operator_token(node: Node) -> str:
    """An operator token of `node` (made once per node database)."""
    where = str(node.config.node.database)
    if where not in _TOKENS:
        _TOKENS[where], _ = await create_token(
            node.db, name="ops", scope=Scope.OPERATOR, created_by="t", now_ms=node.clock.time_ms()
        )
    return _TOKENS[where]


async def events(node: Node, **query: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {await operator_token(node)}"}
    async with (
        aiohttp.ClientSession() as s,
        s.get(node.config.node.url + EVENTS_PATH, params=query, headers=headers) as r,
    ):
        assert r.status == 200, await r.text()
        doc: dict[str, Any] = await r.json()
        assert doc["node"] == node.config.node_id
        found: list[dict[str, Any]] = doc["events"]
        return found


async def post_report(
    target: Node, body: bytes, sender: Node, key: NodeKey | None = None
) -> tuple[int, str]:
    """Post as `sender` would (its HTTP signature; `key` for a forger without its key)."""
    async with (
        signing_session(sender.config.node_id, key or sender.key, target.config.node_id) as s,
        s.post(target.config.node.url + REPORT_PATH, data=body) as r,
    ):
        if r.status == 200:
            return 200, ""
        return r.status, (await r.json())["error"]["code"]


async def started(tmp_path: Path) -> tuple[TestNet, Node, Node, Node]:
    net = make_network(tmp_path, provinces=1, cities_per_province=1)
    await net.init_all()
    await net.start_all()
    ministry = net.nodes[net.ministry_id]
    province = net.nodes[net.province_ids()[0]]
    city = net.nodes[net.city_ids()[0]]
    return net, ministry, province, city


async def reject_bad_token_at(city: Node) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            city.config.node.url + "/v1/records",
            json=[],
            headers={"Authorization": "Bearer not-the-token-not-the-token"},
        ) as r,
    ):
        assert r.status == 401


async def feed_rows(node: Node) -> int:
    def count(conn: Connection) -> int:
        return int(conn.execute(select(func.count()).select_from(security_feed)).scalar_one())

    return await node.db.read(count)


async def own_entry(node: Node) -> FeedEntry:
    assert node.security is not None
    entries = await node.security.audit.entries(limit=1)
    return FeedEntry.from_audit(entries[0])


async def test_city_event_reaches_the_ministry_verified(tmp_path: Path) -> None:
    net, ministry, province, city = await started(tmp_path)
    try:
        await reject_bad_token_at(city)
        await city.report_security()
        await province.report_security()

        seen = await events(ministry, origin=city.config.node_id, kind="request_rejected")
        assert [(e["origin"], e["code"], e["verified"]) for e in seen] == [
            (city.config.node_id, "unauthenticated", True)
        ]
        # The ministry's view covers every level: its own log, the province's and the city's.
        origins = {e["origin"] for e in await events(ministry, limit="1000")}
        assert origins == {ministry.config.node_id, province.config.node_id, city.config.node_id}
        newest_first = [e["time_ms"] for e in await events(ministry, limit="1000")]
        assert newest_first == sorted(newest_first, reverse=True)
        held = ministry.registry.get_sample_value(
            "lsnet_security_feed_entries", {"origin": city.config.node_id}
        )
        assert held is not None and held >= 1

        # Acknowledged rows are not sent again: a second run forwards nothing old.
        assert province.security_feed is not None
        assert await province.security_feed.next_report() is None
    finally:
        await net.stop_all()


async def test_report_signed_by_the_wrong_key_is_refused(tmp_path: Path) -> None:
    net, ministry, province, _ = await started(tmp_path)
    try:
        entry = await own_entry(province)
        forger = NodeKey.generate()
        body, _ = make_report(
            forger,
            province.config.node_id,
            ministry.config.node_id,
            [entry],
            province.clock.time_ms(),
        )
        assert await post_report(ministry, body, province, forger) == (401, "bad_signature")
        assert await feed_rows(ministry) == 0
        assert ministry.security is not None
        refused = await ministry.security.audit.entries(kind=AuditKind.REQUEST_REJECTED)
        assert [e.code for e in refused] == ["bad_signature"]
    finally:
        await net.stop_all()


async def test_entry_outside_the_senders_subtree_is_refused(tmp_path: Path) -> None:
    net, _, province, city = await started(tmp_path)
    try:
        # The city claims one of its parent's entries: the province is not in its subtree.
        entry = await own_entry(province)
        body, _ = make_report(
            city.key, city.config.node_id, province.config.node_id, [entry], city.clock.time_ms()
        )
        assert await post_report(province, body, city) == (403, "not_authorised")
        assert await feed_rows(province) == 0
    finally:
        await net.stop_all()


async def test_province_altering_a_city_entry_is_caught_at_the_ministry(tmp_path: Path) -> None:
    net, ministry, province, city = await started(tmp_path)
    try:
        real = await own_entry(city)
        altered = dataclasses.replace(real, code="nothing_to_see")
        body, _ = make_report(
            province.key,
            province.config.node_id,
            ministry.config.node_id,
            [altered],
            province.clock.time_ms(),
        )
        assert await post_report(ministry, body, province) == (422, "bad_digest")
        assert await feed_rows(ministry) == 0
    finally:
        await net.stop_all()


async def test_entry_under_an_unknown_key_is_kept_but_unverified(tmp_path: Path) -> None:
    net, ministry, province, city = await started(tmp_path)
    try:
        real = await own_entry(city)
        rotated = NodeKey.generate()  # e.g. the city's key after a rotation the ministry missed
        fields = dataclasses.replace(real, seq=real.seq + 1000, kid=rotated.kid)
        digest = entry_hash(
            seq=fields.seq,
            time_ms=fields.time_ms,
            node=fields.origin,
            kid=fields.kid,
            kind=fields.kind,
            peer=fields.peer,
            code=fields.code,
            detail=fields.detail,
            prev_hash=fields.prev_hash,
        )
        entry = dataclasses.replace(
            fields, hash=digest, signature=sign(rotated, PURPOSE_AUDIT, digest)
        )
        body, _ = make_report(
            province.key,
            province.config.node_id,
            ministry.config.node_id,
            [entry],
            province.clock.time_ms(),
        )
        assert await post_report(ministry, body, province) == (200, "")
        seen = await events(ministry, origin=city.config.node_id)
        assert [(e["seq"], e["verified"]) for e in seen] == [(entry.seq, False)]
    finally:
        await net.stop_all()


async def test_security_view_needs_an_operator_token(tmp_path: Path) -> None:
    net, ministry, _, _ = await started(tmp_path)
    try:
        url = ministry.config.node.url + EVENTS_PATH
        ingest, _ = await create_token(
            ministry.db, name="feeder", scope=Scope.INGEST, created_by="t", now_ms=0
        )
        async with aiohttp.ClientSession() as s:
            async with s.get(url) as r:
                assert r.status == 401
                assert (await r.json())["error"]["code"] == "unauthenticated"
            async with s.get(url, headers={"Authorization": f"Bearer {ingest}"}) as r:
                assert r.status == 403
        assert ministry.security is not None
        refused = await ministry.security.audit.entries(kind=AuditKind.REQUEST_REJECTED)
        assert sorted(e.code for e in refused) == ["forbidden", "unauthenticated"]
    finally:
        await net.stop_all()


async def test_withheld_city_entries_show_as_missing_at_the_ministry(tmp_path: Path) -> None:
    net, ministry, province, city = await started(tmp_path)
    try:
        for node in (city, province):
            node.jobs.stop()  # no regular forwarding: the test plays the province
        await reject_bad_token_at(city)
        await reject_bad_token_at(city)
        assert city.security is not None and ministry.security_feed is not None
        own = sorted(await city.security.audit.entries(limit=10), key=lambda e: e.seq)
        assert len(own) >= 3
        # The province forwards the city's first and third entries but withholds the second.
        kept = [FeedEntry.from_audit(own[0]), FeedEntry.from_audit(own[2])]
        body, _ = make_report(
            province.key,
            province.config.node_id,
            ministry.config.node_id,
            kept,
            province.clock.time_ms(),
        )
        assert await post_report(ministry, body, province) == (200, "")
        await ministry.security_feed.refresh_gauge()
        missing = ministry.registry.get_sample_value(
            "lsnet_security_feed_missing_entries", {"origin": city.config.node_id}
        )
        assert missing == 1
    finally:
        await net.stop_all()
