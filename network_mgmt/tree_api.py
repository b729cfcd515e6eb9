"""HTTP routes of the tree view: the node-to-node heartbeat and the public, read-only documents.

- `POST /v1/network/heartbeat` (node-to-node): a child's signed heartbeat; answered with the
  parent's signed reply (carrying its clock). Refusals are audited like every node-to-node one.
- `GET /v1/network/tree` (public, read-only JSON): every node of this node's subtree with health,
  lag, backlog, release, … (field names are a contract with the dashboard).
- `GET /v1/network/node/{node_id}` (public): one node's entry plus its links, recent errors and
  quarantined batches (fully for this node; for others what their heartbeats carried).
- `GET /v1/network/alerts` (public): the alert conditions computed from the tree.

Operator actions live in `network_mgmt.admin_api`. This module only glues decode, decide, answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from network_mgmt.alerts import compute_alerts
from network_mgmt.heartbeat_wire import HEARTBEAT_PATH, MAX_HEARTBEAT_BYTES, HeartbeatRejected
from node.peer_auth import BODY_KEY
from security.audit import AuditKind
from sync.wire import CONTENT_TYPE

if TYPE_CHECKING:
    from network_mgmt.heartbeat import Heartbeats
    from node.app import Node

TREE_PATH = "/v1/network/tree"
NODE_PATH = "/v1/network/node/{node_id}"
ALERTS_PATH = "/v1/network/alerts"


def _node(request: web.Request) -> Node:
    from node.http_api import NODE_KEY

    return request.app[NODE_KEY]


def _heartbeats(node: Node) -> Heartbeats | web.Response:
    from node.http_api import json_error

    hb = node.heartbeats
    if hb is None:
        return json_error(503, "not_ready", "network view is not running on this node")
    return hb


async def post_heartbeat(request: web.Request) -> web.Response:
    from node.http_api import json_error

    node = _node(request)
    hb = _heartbeats(node)
    if isinstance(hb, web.Response):
        return hb
    if not node.config.children:
        return json_error(404, "not_found", "this node has no children to receive heartbeats from")
    # Read and verified (RFC 9421, a direct child only) by the peer-auth middleware.
    body = request[BODY_KEY][: MAX_HEARTBEAT_BYTES + 1]
    try:
        reply = await hb.accept(body)
    except HeartbeatRejected as exc:
        node.metrics.rejected.labels(exc.code.value).inc()
        if node.security is not None:
            await node.security.emit(
                AuditKind.REQUEST_REJECTED,
                peer=request.remote or "",
                code=exc.code.value,
                detail={"path": HEARTBEAT_PATH},
            )
        return json_error(exc.status, exc.code.value, exc.message)
    return web.Response(body=reply, content_type=CONTENT_TYPE)


async def get_tree(request: web.Request) -> web.Response:
    hb = _heartbeats(_node(request))
    if isinstance(hb, web.Response):
        return hb
    return web.json_response(await hb.tree_document())


async def get_node(request: web.Request) -> web.Response:
    from node.http_api import json_error

    hb = _heartbeats(_node(request))
    if isinstance(hb, web.Response):
        return hb
    node_id = request.match_info["node_id"]
    doc = await hb.node_document(node_id)
    if doc is None:
        return json_error(404, "not_found", f"node {node_id} is not in this node's subtree")
    return web.json_response(doc)


async def get_alerts(request: web.Request) -> web.Response:
    node = _node(request)
    hb = _heartbeats(node)
    if isinstance(hb, web.Response):
        return hb
    tree = await hb.tree_document()
    return web.json_response(
        {
            "root": tree["root"],
            "generated_ms": tree["generated_ms"],
            "alerts": compute_alerts(tree, node.config.network),
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post(HEARTBEAT_PATH, post_heartbeat)
    app.router.add_get(TREE_PATH, get_tree)
    app.router.add_get(NODE_PATH, get_node)
    app.router.add_get(ALERTS_PATH, get_alerts)
