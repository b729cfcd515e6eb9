"""Schema evolution without downtime: a release that adds an optional field and a record type
goes into force in a running network; records written under the old release stay valid and
untouched, and new records may use the additions everywhere (city, province, ministry)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from hierarchy_config.standards import FieldDef, RecordSchema, Release, default_release
from node.datagen import generate_records
from security.standards_admin import AdminFolder
from tests.support.network import TestNet, make_network, wait_until


def release_two(base: Release) -> Release:
    person = base.schemas["person"]
    email = FieldDef(name="email", type="str", max_len=80, title="电子邮箱")
    schemas = dict(base.schemas)
    schemas["person"] = dataclasses.replace(person, fields=(*person.fields, email))
    schemas["training_voucher"] = RecordSchema(
        name="training_voucher",
        system="skills",
        title="职业培训补贴券",
        fields=(
            FieldDef(name="voucher_no", type="str", required=True, max_len=20),
            FieldDef(name="person_id", type="person_id", required=True, max_len=18),
            FieldDef(name="amount", type="dec(10,2)", required=True),
        ),
        natural_key=("voucher_no",),
    )
    return dataclasses.replace(base, version=2, schemas=schemas)


async def all_at(net: TestNet, version: str) -> bool:
    return {n.standards_version for n in net.nodes.values()} == {version}


async def test_added_field_and_type_apply_without_downtime(tmp_path: Path) -> None:
    net = make_network(tmp_path, cities_per_province=1)
    await net.init_all()
    await net.start_all()
    city = net.city_ids()[0]
    try:
        await wait_until(lambda: all_at(net, "std-1"), 20, "release 1 did not reach every node")
        old = generate_records(city, 30, seed=6)
        await net.ingest(city, old)
        await net.wait_converged()
        before = await net.digests(net.ministry_id)

        admin = AdminFolder(net.layout.root / "standards-admin")
        admin.repository().add_release(
            2,
            release_two(default_release(1)).to_bytes(),
            targets_keys=admin.all_admin_keys()[1:],
            online=admin.online(),
            now=datetime.now(UTC),
        )
        await wait_until(lambda: all_at(net, "std-2"), 30, "release 2 did not reach every node")
        # Nothing written under release 1 changed, and every old record is still valid.
        assert await net.digests(net.ministry_id) == before
        validator = net.nodes[city].validator
        for obj in old:
            validator.validate(obj)
        person = next(o for o in old if o["type"] == "person")
        voucher = {
            "type": "training_voucher",
            "voucher_no": "V2026000001",
            "person_id": person["person_id"],
            "amount": "1200",
        }
        recs = [
            validator.validate({**person, "email": "a@example.cn"})[0],
            validator.validate(voucher)[0],
        ]
        await net.nodes[city].ingest(recs)
        await net.wait_converged()
        held = await net.digests(net.ministry_id)
        assert held[city] == (await net.digests(city))[city]
        assert held[city].count == before[city].count + 1  # the voucher; the person is updated
        status = await net.nodes[net.province_ids()[0]].status_dict()
        assert status["quarantined_batches"] == 0
    finally:
        await net.stop_all()
