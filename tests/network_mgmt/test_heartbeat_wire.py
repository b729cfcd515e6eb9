"""Pure heartbeat wire checks: what a parent accepts from a child, and what a child accepts back."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hierarchy_config.loader import load_config
from hierarchy_config.model import NodeConfig
from hierarchy_config.network_init import init_network
from network_mgmt.heartbeat_wire import (
    Heartbeat,
    HeartbeatNotAuthorised,
    HeartbeatRejected,
    HeartbeatReply,
    HeartbeatUnauthenticated,
    NodeStatus,
    QuarantinedBatch,
    RecentError,
    check_heartbeat,
    check_reply,
    clock_offset_ms,
    make_heartbeat,
    make_reply,
)
from security.keys import NodeKey, load_signing_key
from sync.wire import Sealed, packb

NOW = 1_790_000_000_000
SKEW = 300_000


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[NodeConfig, NodeKey]]:
    layout = init_network(
        tmp_path_factory.mktemp("hb") / "net", provinces=2, cities_per_province=1, base_port=30000
    )
    out = {}
    for entry in layout.nodes:
        cfg = load_config(entry.config_path)
        out[entry.id] = (cfg, load_signing_key(cfg.node.key_file))
    return out


def status(node_id: str, parent: str, **kw: object) -> NodeStatus:
    base = NodeStatus(
        node_id=node_id, parent=parent, level="city", name="", software_version="0.1.0",
        protocol_version=1, release="std-1", reported_ms=NOW, uptime_ms=1000, backlog=3,
        lag_ms=1500, last_push_ms=NOW - 10, db_bytes=-1, errors=0, security_events=2,
        quarantined=0, link_mode="live", next_retry_ms=0, clock_offset_ms=-12,
        recent_errors=(RecentError(NOW - 5, "HTTP 503"),),
    )  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


def ids(net: dict[str, tuple[NodeConfig, NodeKey]]) -> tuple[str, str, str, str]:
    """province, its city, the other province, the other city."""
    provinces = [n for n, (c, _) in net.items() if c.level.value == "province"]
    p1, p2 = sorted(provinces)
    c1 = net[p1][0].children[0].id
    c2 = net[p2][0].children[0].id
    return p1, c1, p2, c2


def test_round_trip_and_offset(net: dict[str, tuple[NodeConfig, NodeKey]]) -> None:
    p1, c1, _, _ = ids(net)
    parent_cfg, parent_key = net[p1]
    child_cfg, child_key = net[c1]
    sample = (QuarantinedBatch(7, c1, 11, 20, "invalid_record", "seq 12: bad gender", NOW - 9),)
    hb = Heartbeat(c1, p1, NOW, b"n" * 16, (status(c1, p1, quarantined=1, quarantine=sample),))
    got = check_heartbeat(parent_cfg, make_heartbeat(child_key, hb), NOW + 50, SKEW)
    assert got == hb and got.nodes[0].quarantine == sample
    # A heartbeat of an older node, without the sample, is still read.
    old = status(c1, p1).to_wire()
    del old["quarantine"]
    assert NodeStatus.from_wire(old).quarantine == ()
    reply = make_reply(parent_key, HeartbeatReply(p1, c1, b"n" * 16, NOW + 2000, 1))
    checked = check_reply(child_cfg, reply, b"n" * 16)
    assert checked.parent_ms == NOW + 2000
    # Sent at NOW, answered at NOW+100 (our clock), the parent said NOW+2000 → parent is ahead.
    assert clock_offset_ms(NOW, NOW + 100, checked.parent_ms) == 1950
    # NTP form: sent at NOW, arrived NOW+2010 (parent), answered NOW+2090 (parent), back at
    # NOW+110 (ours): 80 ms of the parent's work do not count; one-way delay 15 ms each.
    assert clock_offset_ms(NOW, NOW + 110, NOW + 2090, NOW + 2010) == 1995
    with pytest.raises(HeartbeatRejected):
        check_reply(child_cfg, reply, b"x" * 16)  # not the answer to this heartbeat
    with pytest.raises(HeartbeatUnauthenticated):
        check_reply(
            child_cfg, make_reply(child_key, HeartbeatReply(p1, c1, b"n" * 16, 1, 1)), b"n" * 16
        )


def test_province_forwards_its_subtree_but_not_others(
    net: dict[str, tuple[NodeConfig, NodeKey]],
) -> None:
    p1, c1, _, c2 = ids(net)
    ministry = next(c for c, _ in net.values() if c.level.value == "ministry")
    key = net[p1][1]
    mine = (status(p1, ministry.node_id, level="province"), status(c1, p1, health="down"))
    got = check_heartbeat(
        ministry,
        make_heartbeat(key, Heartbeat(p1, ministry.node_id, NOW, b"1" * 16, mine)),
        NOW,
        SKEW,
    )
    assert [n.node_id for n in got.nodes] == [p1, c1] and got.nodes[1].health == "down"
    foreign = (*mine, status(c2, "x"))
    with pytest.raises(HeartbeatNotAuthorised) as err:
        check_heartbeat(
            ministry,
            make_heartbeat(key, Heartbeat(p1, ministry.node_id, NOW, b"1" * 16, foreign)),
            NOW,
            SKEW,
        )
    assert err.value.status == 403


@pytest.mark.parametrize(
    "case", ["unknown_sender", "wrong_dest", "bad_signature", "stale", "not_first"]
)
def test_refusals(net: dict[str, tuple[NodeConfig, NodeKey]], case: str) -> None:
    p1, c1, p2, c2 = ids(net)
    parent_cfg = net[p1][0]
    key = net[c1][1]
    sender, dest, sent, nodes = c1, p1, NOW, (status(c1, p1),)
    if case == "unknown_sender":
        sender, key, nodes = c2, net[c2][1], (status(c2, p2),)
    elif case == "wrong_dest":
        dest = p2
    elif case == "bad_signature":
        key = net[p2][1]
    elif case == "stale":
        sent = NOW - SKEW - 1
    body = make_heartbeat(key, Heartbeat(sender, dest, sent, b"z" * 16, nodes))
    if case == "not_first":
        body = make_heartbeat(key, Heartbeat(sender, dest, sent, b"z" * 16, ()))
        with pytest.raises(HeartbeatRejected) as err:
            check_heartbeat(parent_cfg, body, NOW, SKEW)
        assert err.value.status == 400
        return
    with pytest.raises(HeartbeatUnauthenticated) as err2:
        check_heartbeat(parent_cfg, body, NOW, SKEW)
    assert err2.value.status == 401


def test_malformed_entries_are_refused(net: dict[str, tuple[NodeConfig, NodeKey]]) -> None:
    from security.signing import sign

    p1, c1, _, _ = ids(net)
    key = net[c1][1]
    good = status(c1, p1).to_wire()
    sample = [1, c1, 1, 2, "invalid_record", "r", NOW]
    for bad in (
        {**good, "backlog": -1},
        {**good, "health": "great"},
        {**good, "lag_ms": 1.5},
        "x",
        {**good, "quarantine": [sample[:6]]},
        {**good, "quarantine": [[*sample[:4], "x" * 65, "r", NOW]]},
        {**good, "quarantine": [sample] * 11},
        {**good, "quarantine": "none"},
    ):
        try:
            envelope = packb(
                {"v": 1, "sender": c1, "dest": p1, "sent": NOW, "nonce": b"a" * 16, "nodes": [bad]}
            )
        except TypeError:  # floats cannot even be packed by our canonical encoder
            continue
        body = Sealed(envelope, sign(key, "heartbeat", envelope)).to_bytes()
        with pytest.raises(HeartbeatRejected) as err:
            check_heartbeat(net[p1][0], body, NOW, SKEW)
        assert err.value.code.value == "malformed"
    with pytest.raises(HeartbeatRejected):
        check_heartbeat(net[p1][0], b"\xc1garbage", NOW, SKEW)
    with pytest.raises(HeartbeatRejected) as err:
        check_heartbeat(net[p1][0], b"x" * (4 * 1024 * 1024 + 1), NOW, SKEW)
    assert err.value.code.value == "too_large"


def test_reply_carries_resend_requests(net: dict[str, tuple[NodeConfig, NodeKey]]) -> None:
    p1, c1, _, _ = ids(net)
    asks = ((NOW, c1, 5), (NOW + 1, c1, 9))
    reply = make_reply(net[p1][1], HeartbeatReply(p1, c1, b"n" * 16, NOW, 1, NOW, asks))
    assert check_reply(net[c1][0], reply, b"n" * 16).resend == asks
    from security.signing import sign

    for bad in ([[1, c1]], [[1, c1, 0]], [[1, "", 3]], [[1, c1, 3]] * 17, "x"):
        envelope = packb(
            {"v": 1, "responder": p1, "dest": c1, "nonce": b"n" * 16, "time": NOW, "taken": 1,
             "received": NOW, "resend": bad}
        )  # fmt: skip
        body = Sealed(envelope, sign(net[p1][1], "heartbeat-reply", envelope)).to_bytes()
        with pytest.raises(HeartbeatRejected):
            check_reply(net[c1][0], body, b"n" * 16)


def test_resend_book() -> None:
    from network_mgmt.resend import REPAIR_WINDOW_MS, ResendBook, TooManyRequests

    book = ResendBook()
    first = book.ask("330100", "330100", 5, "dana", "lost rows", NOW)
    second = book.ask("330100", "330100", 9, "dana", "again", NOW)  # same ms: ids still grow
    assert second.request_id > first.request_id
    assert [r.request_id for r in book.pending("330100")] == [first.request_id, second.request_id]
    assert book.repair_wanted("330100", 5, NOW + 1)
    assert not book.repair_wanted("330100", 4, NOW + 1)  # ends before the seq asked for
    assert not book.repair_wanted("330200", 50, NOW + 1)
    assert not book.repair_wanted("330100", 50, NOW + REPAIR_WINDOW_MS + 1)
    done = book.acknowledge("330100", first.request_id, NOW + 5)
    assert [r.request_id for r in done] == [first.request_id]
    assert [r.request_id for r in book.pending("330100")] == [second.request_id]
    book.note_repaired("330100", 3, NOW + 6)
    assert {r.repaired_batches for r in book.requests} == {3}
    for i in range(15):
        book.ask("330200", "330200", 1, "dana", "x", NOW + i)
    book.ask("330200", "330200", 1, "dana", "x", NOW)
    with pytest.raises(TooManyRequests):
        book.ask("330200", "330200", 1, "dana", "x", NOW)
