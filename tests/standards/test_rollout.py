"""A release published at the ministry reaches every node of a running 3-level network within
seconds (verified end to end against the pinned ministry root), and records are then validated
with it everywhere: a new code is accepted and replicates up; a retired code is refused."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from hierarchy_config.standards import CodeEntry, EffectiveStandards, Release, default_release
from node.datagen import generate_records
from node.records import RecordInvalid
from node.validation import ReleaseValidator
from security.standards_admin import AdminFolder
from tests.support.network import TestNet, make_network, wait_until

NEW_CODE = "130"  # a new insurance type, only in release 2


def release_two(base: Release) -> Release:
    table = base.tables["CT_INSURANCE_TYPE"]
    added = CodeEntry(code=NEW_CODE, name="试点养老保险", level=1, valid_from=date(2026, 1, 1))
    tables = dict(base.tables)
    tables[table.id] = dataclasses.replace(table, entries=(*table.entries, added))
    return dataclasses.replace(base, version=2, tables=tables, note="adds insurance type 130")


async def releases(net: TestNet) -> set[str]:
    return {node.standards_version for node in net.nodes.values()}


async def test_published_release_reaches_every_node_and_is_enforced(tmp_path: Path) -> None:
    # The scheduled poll runs hourly here: only the change hint (long-poll) can deliver fast.
    net = make_network(tmp_path, cities_per_province=2)
    for node_id, cfg in net.configs.items():
        net.configs[node_id] = cfg.model_copy(
            update={"standards": cfg.standards.model_copy(update={"poll_interval_s": 3600.0})}
        )
    await net.init_all()
    await net.start_all()
    try:
        await wait_until(lambda: _all_at(net, "std-1"), 20, "release 1 did not reach every node")
        city = net.city_ids()[0]
        base = [
            o for o in generate_records(city, 40, seed=2) if o["type"] == "insurance_enrollment"
        ]
        assert base, "the generator made no enrollment"
        new = {**base[0], "insurance_type": NEW_CODE, "enroll_date": "2026-03-01"}
        with pytest.raises(RecordInvalid) as refused:
            net.nodes[city].validator.validate(new)
        assert refused.value.field == "insurance_type"

        # The administrators publish release 2 (2 of 3 keys) into the ministry's repository.
        admin = AdminFolder(net.layout.root / "standards-admin")
        data = release_two(default_release(1)).to_bytes()
        admin.repository().add_release(
            2,
            data,
            targets_keys=admin.all_admin_keys()[:2],
            online=admin.online(),
            now=datetime.now(UTC),
        )
        await wait_until(lambda: _all_at(net, "std-2"), 30, "release 2 did not reach every node")

        rec, _ = net.nodes[city].validator.validate(new)
        await net.nodes[city].ingest([rec])
        await net.wait_converged()
        held = await net.digests(net.ministry_id)
        assert held[city] == (await net.digests(city))[city]
        status = await net.nodes[net.ministry_id].status_dict()
        assert status["standards"]["release"] == 2
    finally:
        await net.stop_all()


def test_retired_code_is_refused_after_its_end_date() -> None:
    validator = ReleaseValidator(EffectiveStandards(default_release(1), ()))
    employer = next(o for o in generate_records("330100", 50, seed=3) if o["type"] == "employer")
    retired = {**employer, "region": "330103"}  # 下城区, retired at the end of 2021
    rec, _ = validator.validate({**retired, "reg_date": "2020-05-01"})
    assert rec.payload["region"] == "330103"
    with pytest.raises(RecordInvalid) as refused:
        validator.validate({**retired, "reg_date": "2023-05-01"})
    assert refused.value.field == "region"


async def _all_at(net: TestNet, version: str) -> bool:
    return await releases(net) == {version}
