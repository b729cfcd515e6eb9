"""HTTP routes of the statistics package.

* `GET /v1/stats/indicators` (operator token): the indicators of the release in force, with
  their dimensions, replication modes and minimum cell sizes.
* `GET /v1/stats/run/{indicator}?by=region,period&period=2025-01..2025-12&region=330000
  &level=prefecture&federated=1&timeout=10` (operator token): the answer document of
  `node.stats.compute.result_document` (JSON; what dashboard charts read).
* `POST /v1/stats/query` (node-to-node, signed msgpack from the parent): a federated query;
  answered with this subtree's signed partial aggregates.

Errors are `{"error": {"code", "message"}}` (JSON for operators, msgpack node-to-node).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from aiohttp import web

from node.peer_auth import BODY_KEY, PEER_KEY
from node.stats.federated import MAX_QUERY_BYTES, QUERY_PATH
from node.stats.request import StatsError, StatsRequest
from sync.wire import CONTENT_TYPE

if TYPE_CHECKING:
    from node.app import Node
    from node.stats.service import StatsService

__all__ = ["add_stats_routes"]

MAX_TIMEOUT_S = 120.0


def add_stats_routes(app: web.Application, node: Node) -> None:
    from node.http_api import json_error, require_operator

    def service() -> StatsService:
        assert node.stats is not None
        return node.stats

    async def get_indicators(request: web.Request) -> web.Response:
        refusal = await require_operator(request)
        if refusal is not None:
            return refusal
        release = service().release()
        return web.json_response(
            {
                "node": node.config.node_id,
                "standards": f"std-{release.version}",
                "indicators": service().catalogue(),
            }
        )

    async def get_run(request: web.Request) -> web.Response:
        refusal = await require_operator(request)
        if refusal is not None:
            return refusal
        q = request.query
        try:
            timeout = float(q.get("timeout", "10"))
        except ValueError:
            timeout = -1.0
        if not 0 < timeout <= MAX_TIMEOUT_S:
            return json_error(400, "bad_request", f"timeout must be 0 to {MAX_TIMEOUT_S} seconds")
        now = dt.datetime.fromtimestamp(node.clock.time_ms() / 1000, tz=dt.UTC)
        period = q.get("period") or str(now.year)
        try:
            stats_request = StatsRequest.parse(
                request.match_info["indicator"],
                q.get("by", ""),
                period,
                q.get("region") or None,
                q.get("level") or None,
            )
            doc = await service().run(
                stats_request,
                federated=q.get("federated", "0").lower() in ("1", "true", "yes"),
                timeout_s=timeout,
            )
        except StatsError as exc:
            return json_error(404 if exc.code == "not_found" else 400, exc.code, exc.message)
        return web.json_response(doc)

    async def post_query(request: web.Request) -> web.Response:
        # Read and verified (RFC 9421, from the parent only) by the peer-auth middleware.
        body = request[BODY_KEY][: MAX_QUERY_BYTES + 1]
        status, reply = await service().answer_query(body, request[PEER_KEY])
        return web.Response(status=status, body=reply, content_type=CONTENT_TYPE)

    app.router.add_get("/v1/stats/indicators", get_indicators)
    app.router.add_get("/v1/stats/run/{indicator}", get_run)
    app.router.add_post(QUERY_PATH, post_query)
