"""Operator actions on the upward link, its poison batches and the poison records held aside
here: admin HTTP API (`/v1/admin/...`).

Every route starts with `require_operator` (an active token of scope `operator`, 401/403
otherwise, the refusal audited) and every action is audited as `operator_action` with the
operator token's name. Actions (all JSON):

- `GET  /v1/admin/links`                              the link(s) of this node, with state
- `POST /v1/admin/links/{peer}/retry`                 retry now: forget backoff and failures
- `POST /v1/admin/links/{peer}/pause`   {"reason"}    stop sending (persisted across restarts)
- `POST /v1/admin/links/{peer}/resume`  {"reason"}    send again
- `POST /v1/admin/links/{peer}/resend`  {"from_seq", "origin"?, "reason"}  re-queue batches
- `GET  /v1/admin/links/{peer}/errors?limit=N`        the last N errors of the link
- `GET  /v1/admin/quarantine[?all=1]`                 quarantined batches (all = with skipped)
- `GET  /v1/admin/quarantine/{batch_id}`              one batch: header, record types, decisions
- `POST /v1/admin/quarantine/{batch_id}/replay` {"reason"}  lift the quarantine, send again
- `POST /v1/admin/quarantine/{batch_id}/skip`   {"reason"}  give up on the batch (see link_admin)
- `POST /v1/admin/children/{child}/resend` {"from_seq", "origin"?, "reason"}  ask a child for
  batches again (carried by its next heartbeat's answer; taken as a repair here)
- `GET  /v1/admin/children/resend`                    those requests, pending or acknowledged
- `GET  /v1/admin/held[?all=1]`                       received poison records held aside here
- `GET  /v1/admin/held/{id}`                          one held record (type, seq, reason; no fields)
- `POST /v1/admin/held/{id}/replay` {"reason"}        re-validate with the rules in force, apply
- `POST /v1/admin/held/{id}/skip`   {"reason"}        leave the record out for good
- `POST /v1/admin/held/recheck`     {"reason"}        replay every held record that passes now

The work is done by `network_mgmt.link_admin` and the upstream queue; this module authenticates,
validates the body, audits and answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from network_mgmt import held_actions
from network_mgmt.link_admin import LinkAdmin, LinkAdminError, LinkControl
from network_mgmt.resend import TooManyRequests
from security.audit import AuditKind
from security.tokens import Scope, Verdict, authenticate
from sync.held import HeldError

if TYPE_CHECKING:
    from node.app import Node
    from sync.sender import UpstreamQueue

MAX_ADMIN_BODY = 16 * 1024


def _node(request: web.Request) -> Node:
    from node.http_api import NODE_KEY

    return request.app[NODE_KEY]


def _error(status: int, code: str, message: str) -> web.Response:
    from node.http_api import json_error

    return json_error(status, code, message)


async def _operator(request: web.Request) -> str | web.Response:
    """The operator token's name, or the refusal to send (audited by require_operator)."""
    from node.http_api import _bearer, require_operator

    refusal = await require_operator(request)
    if refusal is not None:
        return refusal
    node = _node(request)
    check = await authenticate(node.db, _bearer(request), Scope.OPERATOR, node.clock.time_ms())
    if check.verdict is not Verdict.ALLOWED or check.info is None:  # revoked in between
        return _error(401, "unauthenticated", "a valid operator token is required")
    return check.info.name


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    raw = await request.content.read(MAX_ADMIN_BODY + 1)
    if len(raw) > MAX_ADMIN_BODY:
        return _error(413, "too_large", f"body exceeds {MAX_ADMIN_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _error(400, "malformed", f"body is not JSON: {exc}")
    if not isinstance(data, dict):
        return _error(400, "malformed", "body must be a JSON object")
    return data


def _reason(data: dict[str, Any], required: bool) -> str | web.Response:
    reason = data.get("reason", "")
    if not isinstance(reason, str) or (required and not reason.strip()):
        return _error(400, "reason_required", "say why in 'reason' (it goes into the audit log)")
    return reason.strip()


async def _audit(node: Node, operator: str, code: str, peer: str = "", **detail: Any) -> None:
    if node.security is None:
        return
    clean: dict[str, str | int | bool] = {"operator": operator[:64]}
    for k, v in detail.items():
        clean[k] = v[:200] if isinstance(v, str) else v
    await node.security.emit(AuditKind.OPERATOR_ACTION, peer=peer, code=code, detail=clean)


def _link(node: Node, peer: str) -> UpstreamQueue | web.Response:
    up = node.upstream
    if up is None or up.parent.id != peer:
        return _error(404, "not_found", f"this node has no upward link to {peer}")
    return up


# -- links -----------------------------------------------------------------------------------------


async def get_links(request: web.Request) -> web.Response:
    who = await _operator(request)
    if isinstance(who, web.Response):
        return who
    node = _node(request)
    hb = node.heartbeats
    links = [hb.link_document()] if hb is not None and node.upstream is not None else []
    return web.json_response({"node": node.config.node_id, "links": links})


async def post_link_action(request: web.Request) -> web.Response:
    who = await _operator(request)
    if isinstance(who, web.Response):
        return who
    node = _node(request)
    peer, action = request.match_info["peer"], request.match_info["action"]
    up = _link(node, peer)
    if isinstance(up, web.Response):
        return up
    data = await _body(request)
    if isinstance(data, web.Response):
        return data
    reason = _reason(data, required=action in ("pause", "resend"))
    if isinstance(reason, web.Response):
        return reason
    hb = node.heartbeats
    assert hb is not None
    now = node.clock.time_ms()
    result: dict[str, Any] = {"peer": peer, "action": action}
    if action == "retry":
        await up.retry_now()
        await _audit(node, who, "link_retry", peer, reason=reason)
    elif action in ("pause", "resume"):
        paused = action == "pause"
        await hb.admin.set_paused(LinkControl(peer, paused, reason, who, now))
        up.paused = paused
        if not paused:
            up.poke()
        await _audit(node, who, f"link_{action}", peer, reason=reason)
    elif action == "resend":
        from_seq = data.get("from_seq")
        origin = data.get("origin", node.config.node_id)
        if not isinstance(from_seq, int) or isinstance(from_seq, bool) or from_seq < 1:
            return _error(400, "malformed", "'from_seq' must be an integer >= 1")
        if not isinstance(origin, str) or not origin:
            return _error(400, "malformed", "'origin' must be a node id")
        count = await hb.admin.resend_from(origin, None, from_seq)
        up.poke()
        result["requeued_batches"] = count
        await _audit(
            node,
            who,
            "link_resend",
            peer,
            origin=origin,
            from_seq=from_seq,
            batches=count,
            reason=reason,
        )
    else:
        return _error(404, "not_found", f"unknown link action {action!r}")
    result["link"] = hb.link_document()
    return web.json_response(result)


async def get_link_errors(request: web.Request) -> web.Response:
    who = await _operator(request)
    if isinstance(who, web.Response):
        return who
    node = _node(request)
    up = _link(node, request.match_info["peer"])
    if isinstance(up, web.Response):
        return up
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 50:
        return _error(400, "malformed", "limit must be an integer 1..50")
    hb = node.heartbeats
    assert hb is not None
    return web.json_response({"peer": up.parent.id, "errors": hb.errors_document(limit)})


# -- quarantine ------------------------------------------------------------------------------------


def _path_id(request: web.Request, key: str, what: str) -> int | web.Response:
    raw = request.match_info[key]
    if not raw.isdigit() or len(raw) > 12:
        return _error(400, "malformed", f"{what} id must be a positive integer")
    return int(raw)


def _include_all(request: web.Request) -> bool:
    return request.query.get("all", "") in ("1", "true", "yes")


@dataclass(frozen=True)
class _Decision:
    """A checked request to replay or skip one item: who asks, on which node, what and why."""

    operator: str
    node: Node
    item_id: int
    action: str
    reason: str


async def _decision(request: web.Request, key: str, what: str) -> _Decision | web.Response:
    """Operator token, item id, action (replay or skip) and a reason, or the refusal to send."""
    who = await _operator(request)
    if isinstance(who, web.Response):
        return who
    item_id = _path_id(request, key, what)
    if isinstance(item_id, web.Response):
        return item_id
    action = request.match_info["action"]
    if action not in ("replay", "skip"):
        return _error(404, "not_found", f"unknown action {action!r} on a {what}")
    data = await _body(request)
    if isinstance(data, web.Response):
        return data
    reason = _reason(data, required=True)
    if isinstance(reason, web.Response):
        return reason
    return _Decision(who, _node(request), item_id, action, reason)


async def get_quarantine(request: web.Request) -> web.Response:
    who = await _operator(request)
    if isinstance(who, web.Response):
        return who
    node = _node(request)
    hb = node.heartbeats
    assert hb is not None
    rows = await hb.admin.quarantined(include_skipped=_include_all(request), limit=1000)
    return web.json_response({"node": node.config.node_id, "quarantined": rows})


async def get_quarantined_batch(request: web.Request) -> web.Response:
    who = await _operator(request)
    if isinstance(who, web.Response):
        return who
    batch_id = _path_id(request, "batch_id", "batch")
    if isinstance(batch_id, web.Response):
        return batch_id
    hb = _node(request).heartbeats
    assert hb is not None
    try:
        return web.json_response(await hb.admin.inspect(batch_id))
    except LinkAdminError as exc:
        return _error(exc.status, exc.code, exc.message)


async def post_quarantine_action(request: web.Request) -> web.Response:
    d = await _decision(request, "batch_id", "batch")
    if isinstance(d, web.Response):
        return d
    node, batch_id = d.node, d.item_id
    hb = node.heartbeats
    assert hb is not None
    now = node.clock.time_ms()
    try:
        if d.action == "replay":
            doc = await hb.admin.replay(batch_id, d.reason, d.operator, now)
        else:
            doc = await hb.admin.skip(batch_id, d.reason, d.operator, now)
    except LinkAdminError as exc:
        return _error(exc.status, exc.code, exc.message)
    if node.upstream is not None:
        node.upstream.poke()
    await _audit(
        node,
        d.operator,
        f"batch_{d.action}",
        node.upstream.parent.id if node.upstream else "",
        batch_id=batch_id,
        origin=doc["origin"],
        first_seq=doc["first_seq"],
        last_seq=doc["last_seq"],
        reason=d.reason,
    )
    return web.json_response({"action": d.action, "batch": doc})


# -- poison records held aside here as a receiver (sync.held) -------------------------------------


def _link_admin(node: Node) -> LinkAdmin:
    hb = node.heartbeats
    assert hb is not None
    return hb.admin


async def get_held(request: web.Request) -> web.Response:
    who = await _operator(request)
    if isinstance(who, web.Response):
        return who
    node = _node(request)
    admin = _link_admin(node)
    rows = await admin.held_records(include_decided=_include_all(request), limit=1000)
    return web.json_response(
        {"node": node.config.node_id, "held": rows, "counts": await admin.held_counts()}
    )


async def get_held_record(request: web.Request) -> web.Response:
    who = await _operator(request)
    if isinstance(who, web.Response):
        return who
    held_id = _path_id(request, "held_id", "held record")
    if isinstance(held_id, web.Response):
        return held_id
    try:
        return web.json_response(await _link_admin(_node(request)).held_record(held_id))
    except HeldError as exc:
        return _error(exc.status, exc.code, exc.message)


async def post_held_action(request: web.Request) -> web.Response:
    d = await _decision(request, "held_id", "held record")
    if isinstance(d, web.Response):
        return d
    node, held_id = d.node, d.item_id
    admin = _link_admin(node)
    now = node.clock.time_ms()
    try:
        if d.action == "replay":
            doc = await held_actions.replay(
                admin, node.validator_for_origin, held_id, d.operator, d.reason, now
            )
        else:
            doc = await admin.skip_held(held_id, d.operator, d.reason, now)
    except HeldError as exc:
        if exc.code == "still_invalid":
            await _audit(node, d.operator, "held_replay_refused", held_id=held_id, reason=d.reason)
        return _error(exc.status, exc.code, exc.message)
    await _audit(
        node,
        d.operator,
        f"held_{d.action}",
        doc["origin"],
        held_id=held_id,
        seq=doc["seq"],
        record_type=doc["record_type"],
        reason=d.reason,
    )
    node.metrics.held_waiting.set((await admin.held_counts())["held"])
    return web.json_response({"action": d.action, "held": doc})


async def post_held_recheck(request: web.Request) -> web.Response:
    who = await _operator(request)
    if isinstance(who, web.Response):
        return who
    node = _node(request)
    data = await _body(request)
    if isinstance(data, web.Response):
        return data
    reason = _reason(data, required=True)
    if isinstance(reason, web.Response):
        return reason
    admin = _link_admin(node)
    result = await held_actions.recheck(
        admin, node.validator_for_origin, reason, node.clock.time_ms, operator=who
    )
    await _audit(
        node,
        who,
        "held_recheck",
        released=result.released,
        still_held=result.still_held,
        reason=reason,
    )
    node.metrics.held_waiting.set((await admin.held_counts())["held"])
    return web.json_response(
        {"action": "recheck", "released": result.released, "still_held": result.still_held}
    )


# -- asking a child for batches again (network_mgmt.resend) ---------------------------------------


async def post_child_resend(request: web.Request) -> web.Response:
    who = await _operator(request)
    if isinstance(who, web.Response):
        return who
    node = _node(request)
    child = request.match_info["child"]
    if child not in {c.id for c in node.config.children}:
        return _error(404, "not_found", f"{child} is not a child of this node")
    data = await _body(request)
    if isinstance(data, web.Response):
        return data
    reason = _reason(data, required=True)
    if isinstance(reason, web.Response):
        return reason
    from_seq = data.get("from_seq")
    origin = data.get("origin", child)
    if not isinstance(from_seq, int) or isinstance(from_seq, bool) or from_seq < 1:
        return _error(400, "malformed", "'from_seq' must be an integer >= 1")
    if not isinstance(origin, str) or node.config.route_of(origin) != child:
        return _error(400, "malformed", f"'origin' must be {child} or a node below it")
    hb = node.heartbeats
    assert hb is not None
    try:
        req = hb.resends.ask(child, origin, from_seq, who, reason, node.clock.time_ms())
    except TooManyRequests as exc:
        return _error(429, "rate_limited", str(exc))
    await _audit(
        node,
        who,
        "child_resend",
        child,
        origin=origin,
        from_seq=from_seq,
        request_id=req.request_id,
        reason=reason,
    )
    return web.json_response(
        {
            "request": req.document(),
            "delivery": f"with the answer to {child}'s next heartbeat (every "
            f"{node.config.network.heartbeat_interval_s:g} s); batches from seq {from_seq} "
            "are taken as a repair here for the next 10 minutes",
        }
    )


async def get_child_resends(request: web.Request) -> web.Response:
    who = await _operator(request)
    if isinstance(who, web.Response):
        return who
    node = _node(request)
    hb = node.heartbeats
    assert hb is not None
    return web.json_response(
        {"node": node.config.node_id, "requests": [r.document() for r in hb.resends.requests]}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/admin/links", get_links)
    app.router.add_get("/v1/admin/links/{peer}/errors", get_link_errors)
    app.router.add_post("/v1/admin/links/{peer}/{action}", post_link_action)
    app.router.add_get("/v1/admin/quarantine", get_quarantine)
    app.router.add_get("/v1/admin/quarantine/{batch_id}", get_quarantined_batch)
    app.router.add_post("/v1/admin/quarantine/{batch_id}/{action}", post_quarantine_action)
    app.router.add_get("/v1/admin/children/resend", get_child_resends)
    app.router.add_post("/v1/admin/children/{child}/resend", post_child_resend)
    app.router.add_get("/v1/admin/held", get_held)
    app.router.add_post("/v1/admin/held/recheck", post_held_recheck)
    app.router.add_get("/v1/admin/held/{held_id}", get_held_record)
    app.router.add_post("/v1/admin/held/{held_id}/{action}", post_held_action)
