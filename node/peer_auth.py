"""Node-to-node request authentication on the HTTP layer (issue 4, items 1 and 2).

Server side, `peer_auth_middleware`: for every node-to-node route (`PEER_ROUTES`) the request must
carry an RFC 9421 signature of a known, valid key (`security.http_signatures`); the checks run in
the order size → signature headers → key → clock → body → signature → nonce (replay) → role
(only a child may call a child route, only the parent a parent route). A refused request is
answered with a precise code, counted in `lsnet_sync_rejected_total{code}`, audited as a
security event, and counted against its address. The verified sender and body are handed to the
handler (`PEER_KEY`, `BODY_KEY`); every answer on these routes is signed for the request's nonce.

Client side, `PeerAuth.middleware`: an aiohttp client middleware that signs every request a node
makes to another node and verifies the answer's signature before anyone reads it; an answer
that does not verify raises `AnswerNotAuthentic` (an `aiohttp.ClientError`, so transports treat
it as an unavailable peer).

What this does not do: it does not decide what a verified child may put in a batch (the
receiver and `sync.verify` check origins and batch signatures) and it does not handle local
API tokens (`node.http_api`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from yarl import URL

from security.http_signatures import (
    HEADER_DESTINATION,
    RequestRefused,
    Signer,
    precheck_request,
    request_nonce,
    sign_request,
    sign_response,
    verify_claimed,
    verify_response,
)
from security.keyring import KeyRing
from security.ratelimit import NonceCache
from sync.wire import CONTENT_TYPE, packb

HEADER_ANNOUNCEMENT = "LSNet-Key-Announcement"

if TYPE_CHECKING:
    from node.app import Node
    from node.clock import Clock

log = logging.getLogger("lsnet.peer_auth")


class Role(StrEnum):
    CHILD = "child"  # only a direct child may call (upward traffic)
    PARENT = "parent"  # only the parent may call (downward traffic)
    NEIGHBOUR = "neighbour"  # the parent or a direct child


@dataclass(frozen=True)
class PeerRoute:
    method: str
    path: str  # exact path, or a prefix when it ends with "/"
    role: Role


# Every node-to-node route. Anything not listed here is local (tokens) or public read-only.
PEER_ROUTES: tuple[PeerRoute, ...] = (
    PeerRoute("POST", "/v1/sync/push", Role.CHILD),
    PeerRoute("GET", "/v1/standards/files/", Role.CHILD),
    PeerRoute("GET", "/v1/standards/wait", Role.CHILD),
    PeerRoute("POST", "/v1/standards/report", Role.CHILD),
    PeerRoute("POST", "/v1/security/report", Role.CHILD),
    PeerRoute("POST", "/v1/keys/announce", Role.CHILD),
    PeerRoute("POST", "/v1/keys/revocations", Role.NEIGHBOUR),
    PeerRoute("POST", "/v1/keys/events", Role.CHILD),
    PeerRoute("POST", "/v1/stats/query", Role.PARENT),  # federated queries travel down
    PeerRoute("POST", "/v1/sync/summary", Role.CHILD),  # anti-entropy
    PeerRoute("POST", "/v1/sync/repair", Role.CHILD),
    PeerRoute("POST", "/v1/sync/restore", Role.CHILD),  # restore from parent
    PeerRoute("POST", "/v1/network/heartbeat", Role.CHILD),
)

PEER_KEY: web.RequestKey[str] = web.RequestKey("lsnet_peer", str)
BODY_KEY: web.RequestKey[bytes] = web.RequestKey("lsnet_peer_body", bytes)
NONCE_KEY: web.RequestKey[str] = web.RequestKey("lsnet_peer_nonce", str)


def route_for(method: str, path: str) -> PeerRoute | None:
    for route in PEER_ROUTES:
        if route.method != method:
            continue
        if path == route.path or (route.path.endswith("/") and path.startswith(route.path)):
            return route
    return None


_STATUS = {
    "unauthenticated": 401,
    "unknown_sender": 401,
    "bad_signature": 401,
    "bad_digest": 401,
    "stale": 401,
    "replay": 401,
    "key_revoked": 401,
    "key_expired": 401,
    "key_not_yet_valid": 401,
    "wrong_destination": 421,
    "not_authorised": 403,
    "malformed": 400,
    "too_large": 413,
    "slow_client": 408,
    "rate_limited": 429,
}


class PeerGate:
    """The server-side state of peer authentication of one node: its nonce cache."""

    def __init__(self, window_s: float) -> None:
        self.nonces = NonceCache(window_s=window_s)


def _allowed(node: Node, route: PeerRoute, sender: str) -> bool:
    is_parent = node.config.parent is not None and node.config.parent.id == sender
    is_child = sender in node.config.child_ids()
    if route.role is Role.CHILD:
        return is_child
    if route.role is Role.PARENT:
        return is_parent
    return is_parent or is_child


async def _read_bounded(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The body, refusing more than `limit` bytes or a client slower than `timeout_s`."""
    buf = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_chunked(64 * 1024):
                buf.extend(chunk)
                if len(buf) > limit:
                    raise RequestRefused("too_large", f"body exceeds the limit of {limit} bytes")
    except TimeoutError:
        raise RequestRefused(
            "slow_client", f"the body did not arrive within {timeout_s:g}s"
        ) from None
    return bytes(buf)


def _node(request: web.Request) -> Node:
    from node.http_api import NODE_KEY

    return request.app[NODE_KEY]


@web.middleware
async def peer_auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    route = route_for(request.method, request.path)
    if route is None:
        return await handler(request)
    node = _node(request)
    address = request.remote or "?"
    now = node.clock.monotonic()
    limiter = node.receiver.per_address
    if limiter.retry_after(address) > 0 and not limiter.allow(address, now):
        refused = RequestRefused("rate_limited", "too many refused requests")
        return _refusal(node, refused, request.content_type == CONTENT_TYPE)
    nonce = ""
    try:
        limit = node.config.limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise RequestRefused(
                "too_large", f"body of {request.content_length} bytes; limit {limit}"
            )
        headers = [(k, v) for k, v in request.headers.items()]
        now_s = node.clock.time_ms() / 1000
        announced = request.headers.get(HEADER_ANNOUNCEMENT)
        if announced and node.key_sync is not None:
            node.key_sync.learn_from_header(announced)  # a rotated key, vouched for by the old
        claimed = precheck_request(
            headers,
            me=node.config.node_id,
            keys=node.keyring,
            now_s=now_s,
            max_skew_s=node.config.sync.max_clock_skew_s,
        )
        nonce = claimed.nonce
        body = await _read_bounded(request, limit, node.config.limits.body_read_timeout_s)
        url = "http://peer" + request.raw_path
        verified = verify_claimed(claimed, request.method, url, headers, body)
        if not node.peer_gate.nonces.add(verified.sender, verified.nonce.encode(), now):
            raise RequestRefused(
                "replay", f"request from {verified.sender} replays an earlier one", verified.sender
            )
        if not _allowed(node, route, verified.sender):
            raise RequestRefused(
                "not_authorised",
                f"node {verified.sender} may not call {request.method} {route.path} here "
                f"(only a {route.role.value} may)",
                verified.sender,
                verified.nonce,
            )
    except RequestRefused as exc:
        limiter.allow(address, now)  # count the refusal against the address
        await _audit(node, request, exc)
        answer = _refusal(node, exc, request.content_type == CONTENT_TYPE)
        # Signed for the nonce the request claims, so its sender can trust the refusal's code.
        nonce = nonce or exc.nonce
        return _signed(node, answer, nonce, exc.signer) if nonce and exc.signer else answer
    request[PEER_KEY] = verified.sender
    request[BODY_KEY] = body
    request[NONCE_KEY] = verified.nonce
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        from node.http_api import json_error

        response = json_error(exc.status, "not_found" if exc.status == 404 else "http", exc.reason)
    return _signed(node, response, verified.nonce, verified.sender)


def _refusal(node: Node, exc: RequestRefused, msgpack_body: bool) -> web.Response:
    """The refusal in the request's own format: msgpack for msgpack requests, else JSON."""
    from node.http_api import json_error

    node.metrics.rejected.labels(exc.code).inc()
    status = _STATUS.get(exc.code, 401)
    if msgpack_body:
        err = {"code": exc.code, "message": exc.message}
        return web.Response(status=status, body=packb({"error": err}), content_type=CONTENT_TYPE)
    return json_error(status, exc.code, exc.message)


def _signed(node: Node, response: web.StreamResponse, nonce: str, peer: str) -> web.StreamResponse:
    if not isinstance(response, web.Response):
        log.error("a peer route answered with a stream; it cannot be signed")
        return response
    body = response.body if isinstance(response.body, bytes) else b""
    headers = sign_response(
        Signer(node.config.node_id, node.key),
        response.status,
        body,
        nonce,
        peer,
        node.clock.time_ms() / 1000,
    )
    response.headers.update(headers)
    if node.peer_auth is not None and node.peer_auth.announcement:
        response.headers[HEADER_ANNOUNCEMENT] = node.peer_auth.announcement
    return response


async def _audit(node: Node, request: web.Request, exc: RequestRefused) -> None:
    from security.audit import AuditKind

    log.warning("IN [%s] refused %s %s: %s", request.remote, request.method, request.path, exc)
    if node.security is None:
        return
    detail: dict[str, str | int | bool] = {
        "path": request.path[:128],
        "method": request.method,
        "address": (request.remote or "")[:64],
    }
    if exc.signer:
        detail["claimed"] = exc.signer[:64]
    # Only a verified signature names the peer; otherwise the peer is the address.
    authentic = exc.code in ("replay", "not_authorised")
    await node.security.emit(
        AuditKind.REQUEST_REJECTED,
        peer=exc.signer if authentic and exc.signer else request.remote or "",
        code=exc.code,
        detail=detail,
    )


class AnswerNotAuthentic(aiohttp.ClientError):
    """A peer's answer that is unsigned, signed by someone else, or altered."""


@dataclass
class PeerAuth:
    """What a node needs to sign its requests to other nodes and check their answers."""

    node_id: str
    signer: Signer
    keyring: KeyRing
    clock: Clock
    peers_by_url: dict[str, str]  # base URL → node id (the parent, children with URLs)
    max_answer_bytes: int = 256 * 1024 * 1024
    # This node's own rotation announcement (base64), sent along while its key is new.
    announcement: str | None = None
    # Called with a neighbour's announcement found on an answer, before it is verified.
    on_announcement: Callable[[str], None] | None = None

    def destination(self, url: URL) -> str:
        text = str(url)
        for base, node_id in self.peers_by_url.items():
            if text.startswith(base.rstrip("/") + "/"):
                return node_id
        raise AnswerNotAuthentic(f"no known node serves {url.origin()}; cannot sign for it")

    async def middleware(
        self,
        req: aiohttp.ClientRequest,
        handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
    ) -> aiohttp.ClientResponse:
        destination = req.headers.get(HEADER_DESTINATION) or self.destination(req.url)
        raw = req.body
        body = raw if isinstance(raw, bytes) else await raw.as_bytes()
        signed = sign_request(
            self.signer,
            destination,
            req.method,
            str(req.url),
            body,
            self.clock.time_ms() / 1000,
        )
        for name, value in signed.items():
            req.headers[name] = value
        if self.announcement:
            req.headers[HEADER_ANNOUNCEMENT] = self.announcement
        nonce = request_nonce(signed)
        resp = await handler(req)
        length = resp.content_length
        if length is None or length > self.max_answer_bytes:
            resp.release()
            raise AnswerNotAuthentic(
                f"answer of {destination} has no or a too large Content-Length ({length})"
            )
        data = await resp.read()
        announced = resp.headers.get(HEADER_ANNOUNCEMENT)
        if announced and self.on_announcement is not None:
            self.on_announcement(announced)
        try:
            verify_response(
                resp.status,
                list(resp.headers.items()),
                data,
                me=self.node_id,
                peer=destination,
                request_nonce=nonce,
                keys=self.keyring,
                now_s=self.clock.time_ms() / 1000,
            )
        except RequestRefused as exc:
            log.warning("OUT [%s] answer refused: %s %s", destination, exc.code, exc.message)
            raise AnswerNotAuthentic(
                f"answer of {destination} (HTTP {resp.status}) is not authentic: {exc.message}"
            ) from None
        return resp
