"""Trust decisions on a federated query arriving from above (pure: no database, no socket)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nacl.signing import SigningKey

from node.stats.federated import NonceCache, QueryRejected, check_hop, make_hop, make_query
from node.stats.request import StatsRequest
from security.keys import NodeKey, load_signing_key
from sync.wire import Code
from tests.support.network import make_network

REQ = StatsRequest.parse("contributions_collected", "region", "2025", None, None)
NOW = 1_750_000_000_000
SKEW = 300_000


@pytest.fixture
def net_keys(tmp_path: Path) -> tuple[object, NodeKey, NodeKey]:
    net = make_network(tmp_path)
    city_cfg = net.configs[net.city_ids()[0]]
    province = net.configs[net.province_ids()[0]]
    return (
        city_cfg,
        load_signing_key(province.node.key_file),
        load_signing_key(city_cfg.node.key_file),
    )


def hop(
    key: NodeKey, sender: str, dest: str, *, origin: str | None = None, sent: int = NOW
) -> bytes:
    _, query, sig = make_query(key, origin or sender, REQ, sent, sent + 5000)
    return make_hop(key, sender, dest, query, sig, [origin or sender], sent)


def test_a_parents_query_is_accepted_once(net_keys: tuple[object, NodeKey, NodeKey]) -> None:
    config, province_key, _ = net_keys
    parent = config.parent.id  # type: ignore[attr-defined]
    me = config.node_id  # type: ignore[attr-defined]
    body = hop(province_key, parent, me)
    nonces = NonceCache()
    got = check_hop(config, body, NOW, SKEW, nonces)  # type: ignore[arg-type]
    assert got.origin == parent and got.request == REQ
    with pytest.raises(QueryRejected) as info:
        check_hop(config, body, NOW, SKEW, nonces)  # type: ignore[arg-type]
    assert info.value.code is Code.REPLAY


@pytest.mark.parametrize(
    ("case", "code", "status"),
    [
        ("stale", Code.STALE, 401),
        ("wrong_dest", Code.WRONG_DESTINATION, 400),
        ("forged", Code.BAD_SIGNATURE, 401),
        ("not_parent", Code.NOT_AUTHORISED, 403),
        ("bad_path", Code.NOT_AUTHORISED, 403),
        ("garbage", Code.MALFORMED, 400),
    ],
)
def test_refusals(
    net_keys: tuple[object, NodeKey, NodeKey], case: str, code: Code, status: int
) -> None:
    config, province_key, city_key = net_keys
    parent = config.parent.id  # type: ignore[attr-defined]
    me = config.node_id  # type: ignore[attr-defined]
    body = {
        "stale": lambda: hop(province_key, parent, me, sent=NOW - 2 * SKEW),
        "wrong_dest": lambda: hop(province_key, parent, "330900"),
        "forged": lambda: hop(NodeKey(SigningKey.generate()), parent, me),
        "not_parent": lambda: hop(city_key, "330200", me),
        "bad_path": lambda: hop(province_key, parent, me, origin="100000"),
        "garbage": lambda: b"\x81\xa1e\xc4\x01x",
    }[case]()
    with pytest.raises(QueryRejected) as info:
        check_hop(config, body, NOW, SKEW, NonceCache())  # type: ignore[arg-type]
    assert (info.value.code, info.value.status) == (code, status)
