"""`lsnet keys revoke` and `lsnet keys list` on a stopped node; refusals change nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hierarchy_config.network_init import NetworkLayout, init_network
from node.cli import main
from security.keys import load_signing_key


@pytest.fixture(autouse=True)
def plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("LSNET_KEY_PASSPHRASE", raising=False)


def lsnet(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def net(tmp_path: Path) -> NetworkLayout:
    layout = init_network(tmp_path / "net", provinces=1, cities_per_province=2, standards=False)
    for node in layout.nodes:
        assert lsnet("node", "init", "--config", node.config_path).exit_code == 0
    return layout


def kid_of(net: NetworkLayout, node_id: str) -> str:
    from hierarchy_config.loader import load_config

    return load_signing_key(load_config(net.by_id(node_id).config_path).node.key_file).kid


def test_revoke_and_list(net: NetworkLayout) -> None:
    province = net.by_id("330000").config_path
    city = net.cities()[0].id
    kid = kid_of(net, city)
    result = lsnet(
        "keys",
        "revoke",
        "--config",
        province,
        "--node",
        city,
        "--kid",
        kid,
        "--reason",
        "laptop stolen",
    )
    assert result.exit_code == 0, result.output
    assert f"revoked key {kid} of node {city}" in result.output
    listed = lsnet("keys", "list", "--config", province)
    assert listed.exit_code == 0, listed.output
    line = next(row for row in listed.output.splitlines() if kid in row)
    assert "REVOKED (laptop stolen)" in line
    # Revoking again changes nothing and still succeeds (idempotent).
    again = lsnet(
        "keys", "revoke", "--config", province, "--node", city, "--kid", kid, "--reason", "again"
    )
    assert again.exit_code == 0
    assert "REVOKED (laptop stolen)" in lsnet("keys", "list", "--config", province).output


def test_city_cannot_revoke_a_sibling(net: NetworkLayout) -> None:
    a, b = (c.id for c in net.cities())
    result = lsnet(
        "keys",
        "revoke",
        "--config",
        net.by_id(a).config_path,
        "--node",
        b,
        "--kid",
        kid_of(net, b),
        "--reason",
        "mischief",
    )
    assert result.exit_code == 2
    assert f"error: node {b} is not known at {a}" in result.stderr
    listed = lsnet("keys", "list", "--config", net.by_id(a).config_path)
    assert "REVOKED" not in listed.output
