"""`init_network` writes a local network whose every file loads and whose keys match."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from hierarchy_config import Level, NodeConfig, load_config, regions
from hierarchy_config.model import MINISTRY_ID
from hierarchy_config.network_init import (
    NetworkInitError,
    NetworkLayout,
    init_network,
)
from security.keys import load_signing_key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def network(tmp_path: Path) -> NetworkLayout:
    return init_network(tmp_path / "net")


def configs(layout: NetworkLayout) -> dict[str, NodeConfig]:
    return {n.id: load_config(n.config_path) for n in layout.nodes}


def test_two_by_two_layout(network: NetworkLayout, tmp_path: Path) -> None:
    root = tmp_path / "net"
    assert network.root == root.resolve()
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert len(folders) == 8  # seven nodes and the standards admin folder
    assert "standards-admin" in folders
    pinned = (root / "standards-admin" / "root.json").read_bytes()
    for node in network.nodes:
        cfg = load_config(node.config_path)
        assert cfg.standards.trusted_root is not None
        assert cfg.standards.trusted_root.read_bytes() == pinned
        assert (cfg.standards.repository is not None) == (node.level is Level.MINISTRY)
    assert [n.id for n in network.nodes] == [
        "100000",
        "330000",
        "330100",
        "330200",
        "320000",
        "320100",
        "320200",
    ]
    assert sorted(n.id for n in network.nodes) == [f for f in folders if f != "standards-admin"]
    assert network.ministry().id == MINISTRY_ID
    assert network.ministry().name == "人力资源和社会保障部"
    assert [p.id for p in network.provinces()] == ["330000", "320000"]
    assert [c.id for c in network.cities()] == ["330100", "330200", "320100", "320200"]
    assert network.by_id("330100").name == "杭州市"
    assert network.by_id("330100").parent_id == "330000"
    assert [c.id for c in network.children_of("330000")] == ["330100", "330200"]
    with pytest.raises(KeyError):
        network.by_id("440100")


def test_every_config_loads_and_ids_are_real_codes(network: NetworkLayout) -> None:
    for node_id, cfg in configs(network).items():
        entry = network.by_id(node_id)
        assert cfg.node_id == node_id
        assert cfg.level is entry.level
        assert cfg.node.name == entry.name
        assert cfg.node.url == entry.url
        assert cfg.node.key_file == entry.config_path.parent / "node.key"
        assert cfg.node.database == f"sqlite:///{entry.config_path.parent / 'node.db'}"
        assert len(cfg.api.ingest_tokens) == 1
        if node_id != MINISTRY_ID:
            assert regions.is_known_region(node_id, 2024)
            assert cfg.parent is not None and cfg.parent.id == entry.parent_id
            assert cfg.parent.url == network.by_id(cfg.parent.id).url
        else:
            assert cfg.parent is None
    cfgs = configs(network)
    assert cfgs["330100"].children == ()
    assert cfgs["330000"].child_ids() == ("330100", "330200")
    ministry = cfgs[MINISTRY_ID]
    assert ministry.child_ids() == ("330000", "320000")
    assert set(ministry.subtree_keys()) == {n.id for n in network.nodes} - {MINISTRY_ID}
    assert ministry.route_of("320200") == "320000"


def test_tokens_are_distinct(network: NetworkLayout) -> None:
    tokens = [t for cfg in configs(network).values() for t in cfg.api.ingest_tokens]
    assert len(set(tokens)) == len(tokens) == 7


def test_keys_are_private_and_match_the_enrolment(network: NetworkLayout) -> None:
    cfgs = configs(network)
    public = {}
    for node_id, cfg in cfgs.items():
        assert mode(cfg.node.key_file) == 0o600
        assert mode(network.by_id(node_id).config_path) == 0o600
        public[node_id] = load_signing_key(cfg.node.key_file).public
    assert len(set(public.values())) == 7
    for cfg in cfgs.values():
        if cfg.parent is not None:
            assert cfg.parent.public_key == public[cfg.parent.id]
        for child in (c for top in cfg.children for c in top.walk()):
            assert child.public_key == public[child.id]


def test_ports_are_distinct_and_consecutive(network: NetworkLayout) -> None:
    ports = [load_config(n.config_path).node.port for n in network.nodes]
    assert ports == list(range(18400, 18407))
    assert [n.url for n in network.nodes][:2] == [
        "http://127.0.0.1:18400",
        "http://127.0.0.1:18401",
    ]


def test_network_json_round_trips(network: NetworkLayout, tmp_path: Path) -> None:
    data = json.loads((tmp_path / "net" / "network.json").read_text(encoding="utf-8"))
    assert data[0] == {
        "id": "100000",
        "name": "人力资源和社会保障部",
        "level": "ministry",
        "parent": None,
        "url": "http://127.0.0.1:18400",
        "config": "100000/node.toml",
    }
    assert NetworkLayout.load(tmp_path / "net") == network


def test_layout_load_errors(tmp_path: Path) -> None:
    with pytest.raises(NetworkInitError, match="not found"):
        NetworkLayout.load(tmp_path)
    (tmp_path / "network.json").write_text('[{"id": "100000"}]', encoding="utf-8")
    with pytest.raises(NetworkInitError, match="malformed"):
        NetworkLayout.load(tmp_path)
    (tmp_path / "network.json").write_text("{", encoding="utf-8")
    with pytest.raises(NetworkInitError, match="cannot read"):
        NetworkLayout.load(tmp_path)


def test_options(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()  # an existing empty folder is fine
    layout = init_network(
        out, provinces=1, cities_per_province=3, base_port=20000, host="localhost"
    )
    assert [n.id for n in layout.nodes] == ["100000", "330000", "330100", "330200", "330300"]
    assert layout.by_id("330300").url == "http://localhost:20004"
    assert load_config(layout.by_id("330300").config_path).node.listen == "localhost:20004"


def test_provinces_beyond_the_preference_list_skip_municipalities(tmp_path: Path) -> None:
    layout = init_network(tmp_path / "net", provinces=12, cities_per_province=1)
    ids = [p.id for p in layout.provinces()]
    assert ids[:10] == [
        "330000",
        "320000",
        "440000",
        "370000",
        "410000",
        "510000",
        "420000",
        "430000",
        "350000",
        "340000",
    ]
    assert ids[10:] == ["130000", "140000"]
    assert len(layout.cities()) == 12


def test_provinces_with_too_few_prefectures_are_skipped(tmp_path: Path) -> None:
    # Only Guangdong and Sichuan have 18 or more prefectures in the data (Henan has 17).
    big = [p.code for p in regions.provinces() if len(regions.prefectures(p.code)) >= 18]
    assert big == ["440000", "510000"]
    layout = init_network(tmp_path / "net", provinces=2, cities_per_province=18)
    assert [p.id for p in layout.provinces()] == big
    assert len(layout.cities()) == 36
    with pytest.raises(NetworkInitError, match="only 2 provinces"):
        init_network(tmp_path / "net3", provinces=3, cities_per_province=18)
    assert not (tmp_path / "net3").exists()


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "net"
    out.mkdir()
    (out / "something").write_text("keep me", encoding="utf-8")
    with pytest.raises(NetworkInitError, match="not an empty folder"):
        init_network(out)
    assert [p.name for p in out.iterdir()] == ["something"]


def test_refuses_a_file(tmp_path: Path) -> None:
    out = tmp_path / "net"
    out.write_text("", encoding="utf-8")
    with pytest.raises(NetworkInitError, match="not an empty folder"):
        init_network(out)


def test_refuses_a_second_run(network: NetworkLayout) -> None:
    with pytest.raises(NetworkInitError):
        init_network(network.root)


@pytest.mark.parametrize(
    ("provinces", "cities", "match"),
    [
        (0, 2, "at least 1"),
        (2, 0, "at least 1"),
        (-1, 2, "at least 1"),
        (100, 1, "only 27 provinces"),
        (1, 100, "more than any province has"),
    ],
)
def test_refuses_impossible_sizes(tmp_path: Path, provinces: int, cities: int, match: str) -> None:
    out = tmp_path / "net"
    with pytest.raises(NetworkInitError, match=match):
        init_network(out, provinces=provinces, cities_per_province=cities)
    assert not out.exists()


@pytest.mark.parametrize("base_port", [65530, 0, 70000])
def test_refuses_ports_out_of_range(tmp_path: Path, base_port: int) -> None:
    with pytest.raises(NetworkInitError, match="65535"):
        init_network(tmp_path / "net", base_port=base_port)
    assert not (tmp_path / "net").exists()


def test_last_port_may_be_65535(tmp_path: Path) -> None:
    layout = init_network(tmp_path / "net", base_port=65535 - 6)
    assert layout.nodes[-1].url.endswith(":65535")


def test_ipv6_host_is_bracketed_in_urls(tmp_path: Path) -> None:
    layout = init_network(tmp_path / "net", provinces=1, cities_per_province=1, host="::1")
    assert layout.ministry().url == "http://[::1]:18400"
    cfg = load_config(layout.by_id("330100").config_path)
    assert cfg.parent is not None and cfg.parent.url == "http://[::1]:18401"


def test_refuses_a_bad_host(tmp_path: Path) -> None:
    with pytest.raises(NetworkInitError, match="host"):
        init_network(tmp_path / "net", host="")


def test_levels(network: NetworkLayout) -> None:
    assert {n.level for n in network.nodes} == set(Level)
