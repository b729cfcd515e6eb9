"""`load_config`: a valid file loads; every bad file names itself, the field and the problem."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from hierarchy_config import ConfigError, Level, load_config
from security.keys import NodeKey

KEYS = {
    node_id: NodeKey.generate()
    for node_id in ("100000", "330000", "330100", "330200", "320000", "320100")
}


def pub(node_id: str) -> str:
    return KEYS[node_id].public


def node(node_id: str, level: str, port: int = 18400) -> dict[str, Any]:
    return {
        "id": node_id,
        "name": "test",
        "level": level,
        "listen": f"127.0.0.1:{port}",
        "database": "sqlite:///node.db",
        "key_file": "node.key",
    }


def ministry_doc() -> dict[str, Any]:
    return {
        "node": node("100000", "ministry"),
        "children": [
            {
                "id": "330000",
                "public_key": pub("330000"),
                "children": [
                    {"id": "330100", "public_key": pub("330100")},
                    {"id": "330200", "public_key": pub("330200")},
                ],
            },
            {
                "id": "320000",
                "public_key": pub("320000"),
                "children": [{"id": "320100", "public_key": pub("320100")}],
            },
        ],
    }


def city_doc() -> dict[str, Any]:
    return {
        "node": node("330100", "city", 18402),
        "parent": {"id": "330000", "url": "http://127.0.0.1:18401", "public_key": pub("330000")},
        "api": {"ingest_tokens": ["x" * 32]},
    }


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return path


def expect_error(path: Path, field: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.path == path
    assert err.field == field
    message = str(err)
    assert str(path) in message
    if field:
        assert f"'{field}'" in message
    return err


# -- valid files ---------------------------------------------------------------------------------


def test_valid_city_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, city_doc()))
    assert cfg.node_id == "330100"
    assert cfg.level is Level.CITY
    assert cfg.parent is not None and cfg.parent.id == "330000"
    assert bytes(cfg.parent.verify_key) == bytes(KEYS["330000"].verify_key)
    assert cfg.node.port == 18402
    assert cfg.api.ingest_tokens == ("x" * 32,)


def test_valid_ministry_loads_from_str_path(tmp_path: Path) -> None:
    cfg = load_config(str(write(tmp_path, ministry_doc())))
    assert cfg.level is Level.MINISTRY
    assert cfg.parent is None
    assert cfg.child_ids() == ("330000", "320000")


def test_relative_paths_resolve_against_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "deep" / "330100"
    folder.mkdir(parents=True)
    doc = city_doc()
    doc["node"]["key_file"] = "keys/node.key"
    path = folder / "node.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    cfg = load_config(path)
    assert cfg.node.key_file == (folder / "keys" / "node.key").resolve()
    assert cfg.node.database == f"sqlite:///{(folder / 'node.db').resolve()}"


def test_absolute_and_non_sqlite_paths_are_kept(tmp_path: Path) -> None:
    doc = city_doc()
    doc["node"]["key_file"] = str(tmp_path / "elsewhere.key")
    doc["node"]["database"] = "postgresql://u@db/lsnet"
    cfg = load_config(write(tmp_path, doc))
    assert cfg.node.key_file == tmp_path / "elsewhere.key"
    assert cfg.node.database == "postgresql://u@db/lsnet"


def test_subtree_keys_and_route_of_with_nested_cities(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ministry_doc()))
    keys = cfg.subtree_keys()
    assert set(keys) == {"330000", "330100", "330200", "320000", "320100"}
    for node_id, key in keys.items():
        assert bytes(key) == bytes(KEYS[node_id].verify_key)
    assert cfg.route_of("330200") == "330000"
    assert cfg.route_of("330000") == "330000"
    assert cfg.route_of("320100") == "320000"
    assert cfg.route_of("440100") is None
    assert cfg.route_of("100000") is None


# -- bad files -----------------------------------------------------------------------------------


def test_unknown_level(tmp_path: Path) -> None:
    doc = city_doc()
    doc["node"]["level"] = "town"
    err = expect_error(write(tmp_path, doc), "node.level")
    assert "town" in str(err)


def test_city_with_children(tmp_path: Path) -> None:
    doc = city_doc()
    doc["children"] = [{"id": "330102", "public_key": pub("330200")}]
    expect_error(write(tmp_path, doc), "children")


def test_nested_city_with_children(tmp_path: Path) -> None:
    doc = ministry_doc()
    doc["children"][0]["children"][1]["children"] = [{"id": "330102", "public_key": pub("330200")}]
    expect_error(write(tmp_path, doc), "children[0].children[1].children")


def test_city_without_parent(tmp_path: Path) -> None:
    doc = city_doc()
    del doc["parent"]
    err = expect_error(write(tmp_path, doc), "parent")
    assert "[parent]" in str(err)


def test_ministry_with_parent(tmp_path: Path) -> None:
    doc = ministry_doc()
    doc["parent"] = city_doc()["parent"]
    expect_error(write(tmp_path, doc), "parent")


def test_node_is_its_own_parent(tmp_path: Path) -> None:
    doc = city_doc()
    doc["parent"]["id"] = "330100"
    expect_error(write(tmp_path, doc), "parent.id")


def test_duplicate_child_id(tmp_path: Path) -> None:
    doc = ministry_doc()
    doc["children"][1]["id"] = "330000"
    err = expect_error(write(tmp_path, doc), "children[1].id")
    assert "duplicate" in str(err) and "children[0].id" in str(err)


def test_duplicate_between_province_and_nested_city(tmp_path: Path) -> None:
    doc = ministry_doc()
    doc["children"][0]["children"][0]["id"] = "320000"
    err = expect_error(write(tmp_path, doc), "children[1].id")
    assert "children[0].children[0].id" in str(err)


def test_child_duplicates_own_id(tmp_path: Path) -> None:
    doc = ministry_doc()
    doc["children"][1]["children"][0]["id"] = "100000"
    expect_error(write(tmp_path, doc), "children[1].children[0].id")


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("ed25519:not*base64!", id="bad-base64"),
        pytest.param("ed25519:" + base64.b64encode(b"\x01" * 16).decode(), id="wrong-length"),
        pytest.param(base64.b64encode(b"\x01" * 32).decode(), id="missing-prefix"),
    ],
)
def test_malformed_public_key(tmp_path: Path, key: str) -> None:
    doc = city_doc()
    doc["parent"]["public_key"] = key
    expect_error(write(tmp_path, doc), "parent.public_key")
    doc = ministry_doc()
    doc["children"][0]["children"][1]["public_key"] = key
    expect_error(write(tmp_path, doc), "children[0].children[1].public_key")


@pytest.mark.parametrize(
    "url", ["127.0.0.1:18401", "ftp://host:21", "http://:80", "http://h:99999"]
)
def test_malformed_url(tmp_path: Path, url: str) -> None:
    doc = city_doc()
    doc["parent"]["url"] = url
    expect_error(write(tmp_path, doc), "parent.url")
    doc = city_doc()
    doc["node"]["public_url"] = url
    expect_error(write(tmp_path, doc), "node.public_url")


@pytest.mark.parametrize("node_id", ["33010", "3301000", "33O100", ""])
def test_invalid_node_id(tmp_path: Path, node_id: str) -> None:
    doc = city_doc()
    doc["node"]["id"] = node_id
    err = expect_error(write(tmp_path, doc), "node.id")
    assert "6-digit" in str(err)


def test_unknown_field(tmp_path: Path) -> None:
    doc = city_doc()
    doc["node"]["colour"] = "red"
    err = expect_error(write(tmp_path, doc), "node.colour")
    assert "unknown field" in str(err)


def test_unknown_section(tmp_path: Path) -> None:
    doc = city_doc()
    doc["extra"] = {"a": 1}
    expect_error(write(tmp_path, doc), "extra")


def test_missing_required_field(tmp_path: Path) -> None:
    doc = city_doc()
    del doc["node"]["key_file"]
    err = expect_error(write(tmp_path, doc), "node.key_file")
    assert "missing" in str(err)


@pytest.mark.parametrize(
    "listen", ["127.0.0.1", ":18400", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", "h:²"]
)
def test_bad_listen_address(tmp_path: Path, listen: str) -> None:
    doc = city_doc()
    doc["node"]["listen"] = listen
    expect_error(write(tmp_path, doc), "node.listen")


def test_short_ingest_token(tmp_path: Path) -> None:
    doc = city_doc()
    doc["api"]["ingest_tokens"] = ["short"]
    expect_error(write(tmp_path, doc), "api.ingest_tokens")


def test_backoff_order(tmp_path: Path) -> None:
    doc = city_doc()
    doc["sync"] = {"backoff_initial_s": 10.0, "backoff_max_s": 5.0}
    expect_error(write(tmp_path, doc), "sync.backoff_initial_s")


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[node]\nid = "330100\n', encoding="utf-8")
    err = expect_error(path, "")
    assert "not valid TOML" in str(err)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_bytes('[node]\nname = "杭州"\n'.encode("gbk"))
    err = expect_error(path, "")
    assert "UTF-8" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    err = expect_error(tmp_path / "absent.toml", "")
    assert "not found" in str(err)
