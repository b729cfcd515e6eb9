"""A province's local codes, delegated by the ministry, reach its own subtree only; records using
them are accepted there and relayed to the ministry, which validates them with that province's
extension; another province's city refuses them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from hierarchy_config.standards import CodeEntry, Extension, ExtensionError
from node.datagen import generate_records
from node.records import RecordInvalid
from security.keys import NodeKey
from security.standards_admin import AdminFolder
from tests.support.network import TestNet, make_network, wait_until

LOCAL = "X3301"  # reserved prefix of 浙江 (330000)


def enrollment(city: str) -> dict[str, object]:
    objs = generate_records(city, 40, seed=4)
    base = next(o for o in objs if o["type"] == "insurance_enrollment")
    return {**base, "person_category": LOCAL}


def accepts(net: TestNet, node_id: str, obj: dict[str, object]) -> bool:
    try:
        net.nodes[node_id].validator.validate(obj)
    except RecordInvalid:
        return False
    return True


async def test_province_extension_applies_to_its_subtree_only(tmp_path: Path) -> None:
    net = make_network(tmp_path, provinces=2, cities_per_province=1)
    for node_id, cfg in net.configs.items():
        net.configs[node_id] = cfg.model_copy(
            update={"standards": cfg.standards.model_copy(update={"poll_interval_s": 0.2})}
        )
    await net.init_all()
    await net.start_all()
    try:
        zhejiang_city = next(c for c in net.city_ids() if c.startswith("33"))
        other_city = next(c for c in net.city_ids() if not c.startswith("33"))
        obj = enrollment(zhejiang_city)

        async def at_release_one() -> bool:
            return {n.standards_version for n in net.nodes.values()} == {"std-1"}

        await wait_until(at_release_one, 20, "release 1 did not reach every node")
        assert not accepts(net, zhejiang_city, obj)

        admin = AdminFolder(net.layout.root / "standards-admin")
        now = datetime.now(UTC)
        province_key = NodeKey.generate()
        repo = admin.repository()
        repo.delegate_province(
            "330000",
            province_key.verify_key,
            targets_keys=admin.all_admin_keys()[:2],
            online=admin.online(),
            now=now,
        )
        ext = Extension(
            province="330000",
            version=1,
            release_version=1,
            tables={"CT_PERSON_CATEGORY": (CodeEntry(code=LOCAL, name="试点就业人员", level=1),)},
        )
        repo.add_extension(
            "330000", 1, ext.to_bytes(), province_key=province_key, online=admin.online(), now=now
        )
        await wait_until(
            lambda: accepts(net, zhejiang_city, obj), 30, "the extension did not reach the city"
        )
        assert not accepts(net, other_city, {**obj, "agency_region": "320100"})

        rec, _ = net.nodes[zhejiang_city].validator.validate(obj)
        await net.nodes[zhejiang_city].ingest([rec])
        await net.wait_converged()
        ministry = await net.digests(net.ministry_id)
        assert ministry[zhejiang_city] == (await net.digests(zhejiang_city))[zhejiang_city]
        quarantined = (await net.nodes["330000"].status_dict())["quarantined_batches"]
        assert quarantined == 0
    finally:
        await net.stop_all()


def test_an_extension_cannot_shadow_a_ministry_code() -> None:
    from hierarchy_config.standards import EffectiveStandards, default_release

    shadow = Extension(
        province="330000",
        version=1,
        release_version=1,
        tables={"CT_PERSON_CATEGORY": (CodeEntry(code="11", name="改写", level=1),)},
    )
    with pytest.raises(ExtensionError):
        EffectiveStandards(default_release(1), (shadow,))
