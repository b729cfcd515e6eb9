"""End-to-end probes on the repair paths: anti-entropy digests agree between child and parent with
probes in the change log, a repair that resends batches holding probes never turns a probe into a
record, and a city restored from its province gets its probes back into its change log (they
hold seqs) but never into its records."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import Connection, delete, func, select

from network_mgmt.probe import PROBE_TYPE
from node.cli import main
from node.datagen import generate_records
from node.schema import apply_log, changelog, records
from tests.support.final import final_check
from tests.support.history import History, write_through
from tests.support.network import TestNet, make_network, wait_until

FAST: dict[str, object] = {
    "anti_entropy_interval_s": 0.3,
    "debounce_ms": 5,
    "retry_interval_s": 0.3,
}
PROBES: dict[str, object] = {"e2e_probe_interval_s": 0.4}


def _probe_rows(conn: Connection) -> int:
    query = select(func.count()).select_from(records).where(records.c.record_type == PROBE_TYPE)
    return int(conn.execute(query).scalar_one())


def _probe_seqs(conn: Connection) -> list[int]:
    query = select(changelog.c.seq).where(changelog.c.record_type == PROBE_TYPE)
    return [int(s) for s in conn.execute(query).scalars()]


def _repairs(conn: Connection, origin: str) -> list[tuple[int, int]]:
    query = select(apply_log.c.first_seq, apply_log.c.last_seq).where(
        apply_log.c.origin == origin, apply_log.c.kind == "repair"
    )
    return [(int(r.first_seq), int(r.last_seq)) for r in conn.execute(query)]


def _delete_first(origin: str) -> Callable[[Connection], None]:
    def body(conn: Connection) -> None:
        key = conn.execute(
            select(records.c.key).where(records.c.owner == origin).order_by(records.c.seq).limit(1)
        ).scalar_one()
        conn.execute(delete(records).where(records.c.owner == origin, records.c.key == key))

    return body


async def _records_around_a_probe(net: TestNet, history: History, city: str) -> None:
    """Records, then (once a probe of the city has reached its province) more records, so the
    city's change log interleaves records and probes; then wait for convergence."""
    province = net.nodes[net.province_ids()[0]]
    recs = generate_records(city, 120, seed=5)
    await write_through(history, net.nodes[city], "w1", recs[:60])
    written_ms = net.nodes[city].clock.time_ms()

    async def probe_arrived() -> bool:
        seen = await province.heartbeats.probes()  # type: ignore[union-attr]
        return city in seen and seen[city].sent_ms > written_ms

    await wait_until(probe_arrived, 20, "no probe of the city reached its province")
    await write_through(history, net.nodes[city], "w2", recs[60:])
    await net.wait_converged()
    probes = await net.nodes[city].db.read(_probe_seqs)
    last = (await net.nodes[city].store.meta()).last_seq
    record_seqs = set(range(1, last + 1)) - set(probes)
    assert len(record_seqs) == 120
    assert min(probes) < max(record_seqs), f"no probe between records: {probes}"


async def _same_as_origin(net: TestNet, holder: str, origin: str) -> bool:
    own = (await net.digests(origin))[origin]
    return (await net.digests(holder)).get(origin) == own


async def test_anti_entropy_agrees_and_repairs_with_probes(tmp_path: Path) -> None:
    net = make_network(tmp_path, cities_per_province=1, overrides=FAST, network=PROBES)
    await net.init_all()
    await net.start_all()
    history = History()
    city, province = net.city_ids()[0], net.province_ids()[0]
    try:
        await _records_around_a_probe(net, history, city)
        ae = net.nodes[city].anti_entropy
        assert ae is not None
        since = net.nodes[city].clock.time_ms()
        # Probes are in the change log and the signed batches, not in the digests: equal.
        await wait_until(
            lambda: ae.last is not None and ae.last.at_ms > since and ae.last.equal >= 1,
            10,
            "no anti-entropy comparison after convergence",
        )
        assert ae.last is not None and ae.last.content_differs == 0 and ae.last.parent_ahead == 0

        # A record deleted behind the system's back: the bucket's batches, probes included,
        # are resent and re-applied; the probes stay out of `records`.
        await net.nodes[province].db.write(_delete_first(city))
        await wait_until(lambda: _same_as_origin(net, province, city), 15, "not repaired")
        probes = set(await net.nodes[city].db.read(_probe_seqs))
        repaired = await net.nodes[province].db.read(_repairs, city)
        assert any(lo <= s <= hi for lo, hi in repaired for s in probes), (repaired, probes)
        for node_id in (city, province, net.ministry_id):
            assert await net.nodes[node_id].db.read(_probe_rows) == 0, node_id
        assert (await net.digests(net.ministry_id))[city].count == 120
        (await final_check(net, history)).assert_green()
    finally:
        await net.stop_all()


async def test_restore_brings_probes_back_into_the_change_log_only(tmp_path: Path) -> None:
    net = make_network(tmp_path, cities_per_province=1, overrides=FAST, network=PROBES)
    await net.init_all()
    await net.start_all()
    history = History()
    city, province = net.city_ids()[0], net.province_ids()[0]
    try:
        await _records_around_a_probe(net, history, city)
        before = (await net.digests(city))[city]
        await net.stop(city)
        meta = await net.nodes[province].sync_store.watermarks_for([city])
        (mark,) = [w.seq for w in meta]
        db_file = Path(net.configs[city].node.database.removeprefix("sqlite:///"))
        for f in db_file.parent.glob(db_file.name + "*"):
            f.unlink()
        config_path = net.layout.by_id(city).config_path
        result = await asyncio.to_thread(
            CliRunner().invoke,
            main,
            ["node", "recover", "--from-parent", "--config", str(config_path)],
        )
        assert result.exit_code == 0, result.output
        # Seqs compared with seqs: everything the province held, probes included.
        assert f"restored {mark} changes" in result.output

        node = await net.start(city)
        assert (await node.store.meta()).last_seq >= mark
        assert (await net.digests(city))[city] == before  # records compared with records
        assert await node.db.read(_probe_rows) == 0
        assert any(s <= mark for s in await node.db.read(_probe_seqs))
        more = generate_records(city, 150, seed=5)[120:]
        await write_through(history, node, "w3", more)
        await net.wait_converged()
        assert await _same_as_origin(net, net.ministry_id, city)
        (await final_check(net, history)).assert_green()
    finally:
        await net.stop_all()
