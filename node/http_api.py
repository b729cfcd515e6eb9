"""HTTP routes of a node that are not node-to-node sync: record ingest for business systems,
status, health and Prometheus metrics. Every error is a JSON body `{"error": {"code", "message"}}`
with a stable code; nothing here writes unless the whole request is valid.

Ingest needs a bearer token: a scoped, revocable token from the database (`lsnet tokens create`,
security.tokens), or, legacy, one of the plain-text `api.ingest_tokens` of the configuration.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hierarchy_config.standards import Issue
from network_mgmt import security_feed as sec_feed
from network_mgmt.rollout import MAX_REPORT_BYTES, ReportRejected
from node.key_sync import ANNOUNCE_PATH, REVOCATIONS_PATH, KeySyncError
from node.key_sync import EVENTS_PATH as KEY_EVENTS_PATH
from node.peer_auth import BODY_KEY, PEER_KEY, peer_auth_middleware
from node.records import RecordInvalid, ValidRecord
from node.stats.http import add_stats_routes
from security.audit import AuditKind
from security.tokens import Scope, TokenCheck, Verdict, authenticate
from sync.ae_wire import REPAIR_PATH, RESTORE_PATH, SUMMARY_PATH
from sync.wire import CONTENT_TYPE

if TYPE_CHECKING:
    from node.app import Node


log = logging.getLogger("lsnet.http")


def json_error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _legacy_token(node: Node, token: str) -> bool:
    """Legacy: plain-text tokens from `api.ingest_tokens` in the node configuration. They keep
    working for existing installations but cannot be scoped, listed or revoked without editing
    the file and restarting; new business systems get `lsnet tokens create` tokens instead."""
    return any(
        hmac.compare_digest(token.encode(), t.encode()) for t in node.config.api.ingest_tokens
    )


# How each refusal of a token is answered: status, error code, message.
_REFUSALS: dict[Verdict, tuple[int, str, str]] = {
    Verdict.UNKNOWN: (
        401,
        "unauthenticated",
        "a valid ingest token is required (Authorization: Bearer ...)",
    ),
    Verdict.REVOKED: (
        401,
        "token_revoked",
        "this token was revoked; ask an operator for a new one",
    ),
    Verdict.WRONG_SCOPE: (403, "forbidden", "this token is not allowed to do this"),
}


async def _refuse_unless_authorised(
    node: Node, request: web.Request, scope: Scope
) -> web.Response | None:
    """None if the bearer token may act in `scope` (a database token, or a legacy configuration
    token for ingest), else the refusal to send, after its audit event."""
    token = _bearer(request)
    if token and scope is Scope.INGEST and _legacy_token(node, token):
        return None
    check = TokenCheck(Verdict.UNKNOWN)
    if token:
        check = await authenticate(node.db, token, scope, node.clock.time_ms())
    if check.verdict is Verdict.ALLOWED:
        return None
    status, code, message = _REFUSALS[check.verdict]
    if check.verdict is Verdict.UNKNOWN:
        message = f"a valid {scope.value} token is required (Authorization: Bearer ...)"
    if node.security is not None:
        detail: dict[str, str | int | bool] = {"path": request.path}
        if check.info is not None:
            detail["token_id"] = check.info.id
        await node.security.emit(
            AuditKind.REQUEST_REJECTED, peer=request.remote or "", code=code, detail=detail
        )
    return json_error(status, code, message)


async def require_operator(request: web.Request) -> web.Response | None:
    """None if the request carries an active `operator` token (Authorization: Bearer lsn_...),
    else the 401/403 answer to send (the refusal is audited). Every admin or operator endpoint
    calls this first."""
    return await _refuse_unless_authorised(request.app[NODE_KEY], request, Scope.OPERATOR)


async def post_records(request: web.Request) -> web.Response:
    node: Node = request.app[NODE_KEY]
    refusal = await _refuse_unless_authorised(node, request, Scope.INGEST)
    if refusal is not None:
        return refusal
    limit = node.config.limits.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return json_error(413, "too_large", f"body exceeds {limit} bytes")
    timeout_s = node.config.limits.body_read_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            raw = await request.read()
        data = json.loads(raw)
    except TimeoutError:
        return json_error(408, "slow_client", f"the body did not arrive within {timeout_s:g}s")
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, "too_large", f"body exceeds {limit} bytes")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return json_error(400, "malformed", f"body is not JSON: {exc}")
    if not isinstance(data, list):
        return json_error(400, "malformed", "body must be a JSON array of record objects")
    if len(data) > node.config.limits.max_ingest_records:
        return json_error(
            413, "too_large", f"at most {node.config.limits.max_ingest_records} records per request"
        )
    valid: list[ValidRecord] = []
    errors: list[dict[str, Any]] = []
    issues: list[tuple[Issue, ...]] = []
    details: list[dict[str, Any]] = []
    validator = node.validator
    for index, obj in enumerate(data):
        if not isinstance(obj, dict):
            errors.append({"index": index, "field": "", "reason": "must be a JSON object"})
            continue
        try:
            rec, warned = validator.validate(obj)
            valid.append(rec)
            issues.append(warned)
            details.extend(
                {"index": index, "field": w.field, "rule": w.rule_id, "message": w.message}
                for w in warned
            )
        except RecordInvalid as exc:
            errors.append({"index": index, "field": exc.field, "reason": exc.reason})
    if errors:
        return json_error(
            422,
            "invalid_record",
            f"{len(errors)} of {len(data)} records are invalid; nothing was stored",
            records=errors[:100],
        )
    result = await node.ingest(valid, issues)
    return web.json_response(
        {
            "accepted": len(valid),
            "warnings": len(details),
            "warning_details": details[:100],
            "standards": node.standards_version,
            "changed": result.changed,
            "unchanged": result.unchanged,
            "last_seq": result.last_seq,
        }
    )


async def get_status(request: web.Request) -> web.Response:
    node: Node = request.app[NODE_KEY]
    return web.json_response(await node.status_dict())


async def get_healthz(request: web.Request) -> web.Response:
    node: Node = request.app[NODE_KEY]
    return web.json_response(
        {"status": "ok", "node": node.config.node_id, "level": node.config.level.value}
    )


async def get_metrics(request: web.Request) -> web.Response:
    node: Node = request.app[NODE_KEY]
    await node.refresh_gauges()
    body = generate_latest(node.registry)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def get_standards_file(request: web.Request) -> web.Response:
    """A file of the verified standards repository this node serves to its children."""
    node: Node = request.app[NODE_KEY]
    if node.standards is None:
        return json_error(404, "not_found", "this node does not distribute standards")
    data = node.standards.served_file(request.match_info["path"])
    if data is None:
        return json_error(404, "not_found", "no such standards file")
    return web.Response(body=data, content_type="application/octet-stream")


async def get_standards_wait(request: web.Request) -> web.Response:
    """Long-poll: answers when what this node serves changes (or after `timeout` seconds), so
    children refresh within moments of a new release instead of at their next poll."""
    node: Node = request.app[NODE_KEY]
    if node.standards is None:
        return json_error(404, "not_found", "this node does not distribute standards")
    try:
        after = int(request.query.get("after", "-1"))
        timeout_s = min(max(float(request.query.get("timeout", "25")), 0.0), 25.0)
    except ValueError:
        return json_error(400, "malformed", "after must be an integer and timeout a number")
    generation = await node.standards.wait_for_change(after, timeout_s)
    return web.json_response({"generation": generation, "release": node.standards.version})


async def post_standards_report(request: web.Request) -> web.Response:
    """A child's signed report of the standards releases in force in its subtree."""
    node: Node = request.app[NODE_KEY]
    if node.rollout is None:
        return json_error(404, "not_found", "this node does not distribute standards")
    body = request.get(BODY_KEY) or await request.content.read(MAX_REPORT_BYTES + 1)
    if len(body) > MAX_REPORT_BYTES:
        return json_error(413, "too_large", f"report exceeds {MAX_REPORT_BYTES} bytes")
    try:
        taken = node.rollout.accept_report(
            body, node.clock.time_ms(), int(node.config.sync.max_clock_skew_s * 1000)
        )
    except ReportRejected as exc:
        node.metrics.rejected.labels(exc.code.value).inc()
        if node.security is not None:
            await node.security.emit(
                AuditKind.REQUEST_REJECTED,
                peer=request.remote or "",
                code=exc.code.value,
                detail={"path": "/v1/standards/report"},
            )
        status = {"unknown_sender": 401, "bad_signature": 401, "stale": 401}.get(
            exc.code.value, 400 if exc.code.value != "not_authorised" else 403
        )
        return json_error(status, exc.code.value, exc.message)
    return web.json_response({"taken": taken})


async def get_standards_rollout(request: web.Request) -> web.Response:
    """Which release every node of this subtree runs, who is behind, who does not report."""
    node: Node = request.app[NODE_KEY]
    if node.rollout is None:
        return json_error(404, "not_found", "this node does not distribute standards")
    return web.json_response(node.rollout.document(node.clock.time_ms()))


async def post_security_report(request: web.Request) -> web.Response:
    """A child's signed report of audit entries of its subtree; answered with a signed ack."""
    node: Node = request.app[NODE_KEY]
    if node.security_feed is None or not node.config.children:
        return json_error(404, "not_found", "this node has no children to receive reports from")
    body = request.get(BODY_KEY) or await request.content.read(sec_feed.MAX_REQUEST_BYTES + 1)
    try:
        reply, _ = await node.security_feed.accept(body)  # refuses oversized bodies first
    except sec_feed.ReportRejected as exc:
        node.metrics.rejected.labels(exc.code.value).inc()
        if node.security is not None:
            await node.security.emit(
                AuditKind.REQUEST_REJECTED,
                peer=request.remote or "",
                code=exc.code.value,
                detail={"path": sec_feed.REPORT_PATH},
            )
        return json_error(exc.status, exc.code.value, exc.message)
    return web.Response(body=reply, content_type=CONTENT_TYPE)


async def get_security_events(request: web.Request) -> web.Response:
    """Audit entries of this node's subtree (own log and security feed), newest first.
    Operators only: entries name addresses, token ids and operators."""
    node: Node = request.app[NODE_KEY]
    refusal = await require_operator(request)
    if refusal is not None:
        return refusal
    if node.security_feed is None:
        return json_error(404, "not_found", "this node keeps no security feed")
    origin = request.query.get("origin") or None
    kind = request.query.get("kind") or None
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= sec_feed.MAX_EVENTS_LIMIT:
        top = sec_feed.MAX_EVENTS_LIMIT
        return json_error(400, "malformed", f"limit must be an integer 1..{top}")
    events = await node.security_feed.events(origin=origin, kind=kind, limit=limit)
    return web.json_response({"node": node.config.node_id, "events": events})


async def _key_refusal(node: Node, request: web.Request, exc: KeySyncError) -> web.Response:
    node.metrics.rejected.labels(exc.code).inc()
    if node.security is not None and exc.status < 500:
        await node.security.emit(
            AuditKind.REQUEST_REJECTED,
            peer=request[PEER_KEY],
            code=exc.code,
            detail={"path": request.path},
        )
    return json_error(exc.status, exc.code, exc.message)


async def post_key_announcement(request: web.Request) -> web.Response:
    """A child announces a new key of itself or of its subtree (signed by the old key)."""
    node: Node = request.app[NODE_KEY]
    assert node.key_sync is not None
    try:
        rotation = await node.key_sync.accept_rotation(request[BODY_KEY], request[PEER_KEY])
    except KeySyncError as exc:
        return await _key_refusal(node, request, exc)
    return web.json_response({"node": rotation.node, "kid": rotation.new_kid})


async def post_key_revocations(request: web.Request) -> web.Response:
    """The parent or a child hands over revocations (a child: of keys of its subtree only)."""
    node: Node = request.app[NODE_KEY]
    assert node.key_sync is not None
    try:
        taken = await node.key_sync.accept_revocations(request[BODY_KEY], request[PEER_KEY])
    except KeySyncError as exc:
        return await _key_refusal(node, request, exc)
    return web.json_response({"taken": taken})


async def post_key_events(request: web.Request) -> web.Response:
    """A child fetches this node's rotations and revocations after the last id it saw."""
    node: Node = request.app[NODE_KEY]
    assert node.key_sync is not None
    try:
        data = await node.key_sync.events_after(request[BODY_KEY])
    except KeySyncError as exc:
        return await _key_refusal(node, request, exc)
    return web.Response(body=data, content_type=CONTENT_TYPE)


NODE_KEY: web.AppKey[Node] = web.AppKey("node")


@web.middleware
async def errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unexpected failures answer 500 with a stable JSON error, never a traceback; HTTP errors
    raised by aiohttp itself (404, 405, 413 …) get the same JSON shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status, "bad_request"
        )
        return json_error(exc.status, code, exc.reason)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return json_error(500, "internal", "internal error; the node's log has the details")


def build_app(node: Node) -> web.Application:
    app = web.Application(
        client_max_size=node.config.limits.max_body_bytes + 1024,
        middlewares=[peer_auth_middleware, errors_as_json],
    )
    app[NODE_KEY] = node
    app.router.add_post("/v1/sync/push", node.receiver.handle)
    if node.ae_server is not None:
        app.router.add_post(SUMMARY_PATH, node.ae_server.handle_summary)
        app.router.add_post(REPAIR_PATH, node.ae_server.handle_repair)
    if node.restore_server is not None:
        app.router.add_post(RESTORE_PATH, node.restore_server.handle)
    app.router.add_post("/v1/records", post_records)
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/v1/standards/files/{path:.+}", get_standards_file)
    app.router.add_get("/v1/standards/wait", get_standards_wait)
    app.router.add_post("/v1/standards/report", post_standards_report)
    app.router.add_get("/v1/standards/rollout", get_standards_rollout)
    app.router.add_post(sec_feed.REPORT_PATH, post_security_report)
    app.router.add_get(sec_feed.EVENTS_PATH, get_security_events)
    app.router.add_post(ANNOUNCE_PATH, post_key_announcement)
    app.router.add_post(REVOCATIONS_PATH, post_key_revocations)
    app.router.add_post(KEY_EVENTS_PATH, post_key_events)
    add_stats_routes(app, node)
    from network_mgmt import admin_api, tree_api

    tree_api.add_routes(app)
    admin_api.add_routes(app)
    from network_mgmt import dashboard

    dashboard.add_routes(app)  # the web page at / and its /static/ files
    return app
