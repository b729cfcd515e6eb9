"""TLS between nodes with operator certificates: a CA made in the test signs the nodes'
certificates; the tree syncs over HTTPS with mutual TLS, and a node that does not trust the CA
(or has no client certificate) cannot talk to its parent."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from hierarchy_config.model import NodeConfig
from node.datagen import generate_records
from tests.support.network import TestNet, make_network, wait_until


def with_tls(cfg: NodeConfig, files: dict[str, Path | None], mutual: bool) -> NodeConfig:
    node = cfg.node.model_copy(update={"public_url": f"https://{cfg.node.listen}"})
    update: dict[str, object] = {
        "node": node,
        "tls": cfg.tls.model_copy(update={**files, "require_client_cert": mutual}),
    }
    if cfg.parent is not None:
        update["parent"] = cfg.parent.model_copy(
            update={"url": cfg.parent.url.replace("http://", "https://")}
        )
    return cfg.model_copy(update=update)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    out = {
        "ca_file": tmp_path / "ca.pem",
        "cert_file": tmp_path / "node.pem",
        "key_file": tmp_path / "node-key.pem",
    }
    ca.cert_pem.write_to_path(str(out["ca_file"]))
    cert.cert_chain_pems[0].write_to_path(str(out["cert_file"]))
    for blob in cert.cert_chain_pems[1:]:
        blob.write_to_path(str(out["cert_file"]), append=True)
    cert.private_key_pem.write_to_path(str(out["key_file"]))
    return out


def tls_network(
    tmp_path: Path, pki: dict[str, Path], *, city_files: dict[str, Path | None] | None = None
) -> TestNet:
    net = make_network(tmp_path, cities_per_province=1)
    for node_id, cfg in net.configs.items():
        files: dict[str, Path | None] = dict(pki)
        if city_files is not None and node_id in net.city_ids():
            files = city_files
        net.configs[node_id] = with_tls(cfg, files, mutual=True)
    return net


async def test_tree_syncs_over_mutual_tls(tmp_path: Path, pki: dict[str, Path]) -> None:
    net = tls_network(tmp_path, pki)
    await net.init_all()
    await net.start_all()
    try:
        city = net.city_ids()[0]
        await net.ingest(city, generate_records(city, 50, seed=8))
        await net.wait_converged()
        assert (await net.digests(net.ministry_id))[city] == (await net.digests(city))[city]
        await wait_until(
            lambda: net.nodes[city].standards_version == "std-1", 20, "standards over TLS"
        )
    finally:
        await net.stop_all()


@pytest.mark.parametrize("missing", ["ca_file", "cert_file"])
async def test_untrusted_or_anonymous_client_is_refused(
    tmp_path: Path, pki: dict[str, Path], missing: str
) -> None:
    files: dict[str, Path | None] = dict(pki)
    files[missing] = None
    if missing == "cert_file":
        files["key_file"] = None
    net = tls_network(tmp_path, pki, city_files=files)
    # Without a client certificate the city is no TLS server either: serve plain on its port.
    city = net.city_ids()[0]
    if missing == "cert_file":
        cfg = net.configs[city]
        net.configs[city] = cfg.model_copy(
            update={
                "node": cfg.node.model_copy(update={"public_url": f"http://{cfg.node.listen}"}),
                "tls": cfg.tls.model_copy(update={"require_client_cert": False}),
            }
        )
    await net.init_all()
    await net.start_all()
    try:
        await net.ingest(city, generate_records(city, 5, seed=1))
        queue = net.nodes[city].upstream
        assert queue is not None
        await wait_until(lambda: queue.state.failures >= 1, 20, "the transfer did not fail")
        assert queue.state.mode == "backing_off"
        if missing == "ca_file":  # the city does not trust the parent's certificate
            assert "certificate" in queue.state.last_error.lower()
        # (without a client certificate the parent ends the handshake: a reset or TLS alert)
        held = (await net.digests(net.province_ids()[0])).get(city)
        assert held is None
    finally:
        await net.stop_all()
