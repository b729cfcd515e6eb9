"""The operators' web dashboard: a static page served by the node at `/`, plus its assets.

The page (network_mgmt/static/) is plain HTML, CSS and ES modules with no third-party code and
no CDN (the intranet has no internet). It reads the node's own JSON API from the browser:
`/v1/network/tree` (topology and health), `/v1/network/node/{id}` (drill-down),
`/v1/network/alerts`, `/v1/status` (throughput), `/v1/security/events` (security feed);
operator actions call `/v1/admin/...` with the operator token the user pasted into the page.
Lag and throughput charts come from a rolling history the page keeps in the browser (bounded;
lost on reload): the server keeps no samples.

This module only serves files: a fixed allow-list of names read once at start-up, each with its
content type, an ETag (answering 304 to a matching `If-None-Match`), `Cache-Control: no-cache`
(revalidate every time, so an upgraded node never serves a stale script), and strict security
headers: a Content-Security-Policy of `default-src 'self'` (no inline script or style, no
framing), `nosniff`, no referrer. It does not authenticate: the page and its assets are public on
the node's listen address like `/v1/status`; what needs an operator is decided by the API routes
the page calls (`require_operator`), never by the page.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

STATIC_PREFIX = "/static/"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

# Every file the dashboard serves, with its content type. Anything else is a 404: no directory
# listing, no path from the request ever reaches the file system.
ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "format.js": "text/javascript; charset=utf-8",
    "history.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "statcharts.js": "text/javascript; charset=utf-8",
    "tree.js": "text/javascript; charset=utf-8",
    "detail.js": "text/javascript; charset=utf-8",
    "events.js": "text/javascript; charset=utf-8",
    "alerts.js": "text/javascript; charset=utf-8",
    "stats.js": "text/javascript; charset=utf-8",
}

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Read every allowed file from the installed package (fails loudly if one is missing)."""
    root = resources.files("network_mgmt").joinpath("static")
    out = {}
    for name, content_type in ASSETS.items():
        body = root.joinpath(name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        out[name] = Asset(body, content_type, etag)
    return out


def _etag_matches(header: str, etag: str) -> bool:
    return any(tag.strip() in (etag, "*", "W/" + etag) for tag in header.split(","))


def _answer(request: web.Request, asset: Asset) -> web.Response:
    headers = {
        **SECURITY_HEADERS,
        "ETag": asset.etag,
        "Cache-Control": "no-cache",
    }
    if _etag_matches(request.headers.get("If-None-Match", ""), asset.etag):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = asset.content_type
    return web.Response(body=asset.body, headers=headers)


ASSETS_KEY: web.AppKey[dict[str, Asset]] = web.AppKey("dashboard_assets", dict)


async def get_index(request: web.Request) -> web.Response:
    return _answer(request, request.app[ASSETS_KEY]["index.html"])


async def get_asset(request: web.Request) -> web.Response:
    asset = request.app[ASSETS_KEY].get(request.match_info["name"])
    if asset is None:
        raise web.HTTPNotFound(reason="no such dashboard file")
    return _answer(request, asset)


def add_routes(app: web.Application) -> None:
    """Serve the dashboard at `/` and its files under `/static/` on this app."""
    app[ASSETS_KEY] = load_assets()
    app.router.add_get("/", get_index)
    app.router.add_get(STATIC_PREFIX + "{name}", get_asset)
