"""The door of the node-to-node routes that children call (the push, anti-entropy summaries
and repairs, restore-from-parent): read the body within the size limit, then — before
anything else happens — the message shape, the sender is an enrolled direct child, the message
is for this node, the child's signature under the route's purpose (over the envelope or, when
the message says so, over its SHA-256 digest: ADR 0016), the send time within the
allowed clock skew, and a fresh nonce. A refusal answers 4xx with a stable code, is counted and
goes to the audit log; nothing is written. `throttle` keeps each child within its request rate
on the gate's routes (`limits.peer_requests_per_s`, `limits.peer_burst`, as the push): beyond
it the answer is 429 `rate_limited` with Retry-After, counted but not audited (it is load, not
an attack), and the handler does no work.

It does not decide what the message asks for (`sync.receiver`, `sync.anti_entropy` and
`sync.restore` do) and does not talk to the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from aiohttp import web

from hierarchy_config.model import NodeConfig
from node.clock import Clock
from security.audit import AuditKind
from security.keyring import KeyRing, trusted_keys
from security.ratelimit import NonceCache, RateLimiter
from security.signing import SignatureInvalid, verify_any, verify_digest_any
from sync.metrics import SyncMetrics
from sync.receiver import ReceiveError, error_response, limited_response
from sync.wire import Code, Sealed, WireError

if TYPE_CHECKING:
    from node.security_events import SecurityEvents

log = logging.getLogger("lsnet.sync")


class ChildMessage(Protocol):
    @property
    def sender(self) -> str: ...
    @property
    def destination(self) -> str: ...
    @property
    def sent_ms(self) -> int: ...
    @property
    def nonce(self) -> bytes: ...


M = TypeVar("M", bound=ChildMessage)


class ChildGate:
    def __init__(
        self,
        config: NodeConfig,
        clock: Clock,
        metrics: SyncMetrics,
        events: Callable[[], SecurityEvents | None],
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.events = events
        self.children = {c.id: c for c in config.children}
        self.nonces = NonceCache(window_s=2 * config.sync.max_clock_skew_s)
        self.per_peer = RateLimiter(config.limits.peer_requests_per_s, config.limits.peer_burst)
        self.keyring: KeyRing | None = None  # the node's key ring (rotations, revocations)
        self._signer: dict[int, str] = {}
        # Whether a signature over the envelope's sha256 digest is accepted (ADR 0016); push
        # replies tell the children. False makes this node answer like one of protocol 1 only.
        self.accepts_digest = True

    async def read(self, request: web.Request) -> bytes:
        from node.peer_auth import BODY_KEY, PEER_KEY

        if (
            isinstance(request, web.Request) and BODY_KEY in request
        ):  # read and verified (RFC 9421) by the peer-auth middleware
            self._signer[id(request)] = request[PEER_KEY]
            return request[BODY_KEY]
        limit = self.config.limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ReceiveError(
                Code.TOO_LARGE, f"body of {request.content_length} bytes; limit {limit}"
            )
        buf = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            buf.extend(chunk)
            if len(buf) > limit:
                raise ReceiveError(Code.TOO_LARGE, f"body exceeds the limit of {limit} bytes")
        return bytes(buf)

    def open(
        self,
        body: bytes,
        purpose: str,
        parse: Callable[[bytes], M],
        request: web.Request | None = None,
    ) -> M:
        signer = self._signer.pop(id(request), None) if request is not None else None
        try:
            sealed = Sealed.from_bytes(body)
            msg = parse(sealed.envelope)
        except WireError as exc:
            raise ReceiveError(exc.code, exc.message) from None
        claimed = msg.sender
        child = self.children.get(claimed)
        if child is None:
            raise ReceiveError(
                Code.UNKNOWN_SENDER, f"node {claimed} is not an enrolled child", claimed=claimed
            )
        if msg.destination != self.config.node_id:
            raise ReceiveError(
                Code.WRONG_DESTINATION,
                f"message is addressed to {msg.destination}, this is {self.config.node_id}",
                claimed=claimed,
            )
        try:
            keys = trusted_keys(self.keyring, claimed, child.verify_key, self.clock.time_ms())
            if sealed.digest and not self.accepts_digest:
                raise SignatureInvalid("this node verifies signatures over the bytes only")
            check = verify_digest_any if sealed.digest else verify_any
            check(keys, purpose, sealed.envelope, sealed.signature)
        except SignatureInvalid:
            raise ReceiveError(
                Code.BAD_SIGNATURE,
                f"{purpose} message is not signed by {claimed}'s enrolled key",
                claimed=claimed,
            ) from None
        skew_ms = abs(self.clock.time_ms() - msg.sent_ms)
        if skew_ms > self.config.sync.max_clock_skew_s * 1000:
            raise ReceiveError(
                Code.STALE,
                f"message was sent {skew_ms / 1000:.0f}s away from this node's clock; "
                "check the clocks",
                claimed=claimed,
            )
        if not self.nonces.add(claimed, msg.nonce, self.clock.monotonic()):
            raise ReceiveError(
                Code.REPLAY,
                f"{purpose} message from {claimed} replays an earlier one",
                claimed=claimed,
            )
        # Authentic as the child it names; the node that signed the HTTP request must be it.
        if signer is not None and signer != claimed:
            raise ReceiveError(
                Code.NOT_AUTHORISED,
                f"node {signer} sent a message that claims to come from {claimed}",
                claimed=claimed,
            )
        signed = "sha256" if sealed.digest else "bytes"
        self.metrics.sealed_received.labels(claimed, purpose, signed).inc()
        return msg

    def throttle(self, sender: str) -> None:
        """Raise `rate_limited` if `sender` (authenticated by `open`) exceeds its request rate."""
        if not self.per_peer.allow(sender, self.clock.monotonic()):
            raise ReceiveError(
                Code.RATE_LIMITED, f"node {sender} exceeds its request rate", claimed=sender
            )

    async def refuse(self, request: web.Request, exc: ReceiveError, what: str) -> web.Response:
        address = request.remote or "?"
        self.metrics.rejected.labels(exc.code.value).inc()
        if exc.code is Code.RATE_LIMITED:
            return limited_response(self.per_peer.retry_after(exc.claimed), exc.message)
        events = self.events()
        if events is not None:
            detail: dict[str, str | int | bool] = {"address": address[:64], "route": what}
            if exc.claimed:
                detail["claimed"] = exc.claimed[:64]
            if exc.batch is not None:
                detail["batch"] = exc.batch
            kind = AuditKind.REQUEST_REJECTED if exc.batch is None else AuditKind.BATCH_REJECTED
            await events.emit(kind, peer=exc.claimed or address, code=exc.code.value, detail=detail)
        log.warning("IN [%s] refused %s: %s %s", address, what, exc.code.value, exc.message)
        return error_response(exc.code, exc.message, exc.batch)
