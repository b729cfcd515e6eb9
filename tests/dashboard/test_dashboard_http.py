"""The dashboard's files as a running node serves them over real HTTP: content types, cache
validation (ETag / 304), the security headers, and nothing outside the allow-list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from network_mgmt.dashboard import ASSETS, CONTENT_SECURITY_POLICY
from node.app import Node
from tests.support.network import make_network


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    net = make_network(tmp_path, cities_per_province=1)
    await net.init_all()
    started = await net.start(net.ministry_id)
    try:
        yield started
    finally:
        await net.stop_all()


async def _get(
    node: Node, path: str, headers: dict[str, str] | None = None
) -> aiohttp.ClientResponse:
    async with (
        aiohttp.ClientSession() as s,
        s.get(node.config.node.url + path, headers=headers or {}, allow_redirects=False) as r,
    ):
        await r.read()
        return r


async def test_index_is_html_with_a_strict_policy(node: Node) -> None:
    r = await _get(node, "/")
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = r.headers["Content-Security-Policy"]
    assert csp == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert r.headers["Cache-Control"] == "no-cache"
    assert r.headers["ETag"].startswith('"')


async def test_every_asset_has_its_type_and_revalidates(node: Node) -> None:
    for name, content_type in sorted(ASSETS.items()):
        r = await _get(node, "/static/" + name)
        assert r.status == 200, name
        assert r.headers["Content-Type"] == content_type
        assert r.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        etag = r.headers["ETag"]
        again = await _get(node, "/static/" + name, {"If-None-Match": etag})
        assert again.status == 304, name
        assert again.headers["ETag"] == etag
        changed = await _get(node, "/static/" + name, {"If-None-Match": '"something-else"'})
        assert changed.status == 200, name


async def test_only_listed_files_are_served(node: Node) -> None:
    for path in (
        "/static/nothing.js",
        "/static/..%2Fdashboard.py",
        "/static/%2e%2e/dashboard.py",
        "/static/",
        "/static/py.typed",
        "/static/index.html/",
    ):
        r = await _get(node, path)
        assert r.status == 404, path


async def test_page_does_not_hide_the_api(node: Node) -> None:
    """The dashboard's routes sit beside the API: status and metrics still answer as before."""
    assert (await _get(node, "/v1/status")).status == 200
    assert (await _get(node, "/metrics")).status == 200
