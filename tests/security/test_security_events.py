"""Security-relevant events land in the node's signed audit chain and in the security metrics:
a start, a forged push, a bad ingest token, a standards release put in force."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from node.clock import SystemClock
from security.audit import AuditKind
from security.keys import NodeKey
from tests.support.network import make_network, wait_until
from tests.support.peer import signing_session
from tests.sync.helpers import seal_push


async def test_refusals_and_releases_are_audited_and_counted(tmp_path: Path) -> None:
    net = make_network(tmp_path, cities_per_province=1)
    await net.init_all()
    await net.start_all()
    try:
        province_id, city_id = net.province_ids()[0], net.city_ids()[0]
        province, city = net.nodes[province_id], net.nodes[city_id]
        assert province.security is not None and city.security is not None
        forger = NodeKey.generate()
        forged = seal_push(
            forger,
            sender=city_id,
            destination=province_id,
            batches_=(),
            sent_ms=SystemClock().time_ms(),
        )
        url = province.config.node.url + "/v1/sync/push"
        async with (
            signing_session(city_id, forger, province_id) as f,
            f.post(url, data=forged) as r,
        ):
            assert r.status == 401
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                city.config.node.url + "/v1/records",
                json=[],
                headers={"Authorization": "Bearer not-the-token-not-the-token"},
            ) as r,
        ):
            assert r.status == 401

        entries = await province.security.audit.entries(kind=AuditKind.REQUEST_REJECTED)
        # Not authenticated: the peer is the address; the claimed sender is kept as detail.
        assert [(e.peer, e.code) for e in entries] == [("127.0.0.1", "bad_signature")]
        assert entries[0].detail_map()["claimed"] == city_id
        counted = province.registry.get_sample_value(
            "lsnet_security_events_total",
            {"kind": "request_rejected", "peer": "external", "code": "bad_signature"},
        )
        assert counted == 1
        city_rejections = await city.security.audit.entries(kind=AuditKind.REQUEST_REJECTED)
        assert [e.code for e in city_rejections] == ["unauthenticated"]

        async def in_force_audited() -> bool:
            assert city.security is not None
            return bool(await city.security.audit.entries(kind=AuditKind.STANDARDS_IN_FORCE))

        await wait_until(in_force_audited, 20, "the release in force was not audited")
        assert await city.security.audit.entries(kind=AuditKind.CONFIG_LOADED)
        report = await province.security.audit.verify()
        assert report.intact, report.summary()
    finally:
        await net.stop_all()
