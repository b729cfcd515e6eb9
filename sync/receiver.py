"""HTTP handler that receives pushes from children: decode, decide, store, answer.

Order of checks: body size (before reading it all), envelope shape and protocol version, the
sender is an enrolled child, the envelope is for this node, the sender's signature, the send time
within the allowed clock skew, then every batch (`sync.verify.verify_batch`) — all before
anything is written. Any failure answers 4xx with a stable code (and the batch index when one
batch was the cause) and writes nothing. Then each batch is applied in its own transaction and
the answer, signed by this node, carries a verdict per batch and this node's watermarks for the
sender's whole subtree.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hierarchy_config.model import NodeConfig
from node.clock import Clock
from node.validation import BuiltinValidator, RecordValidator
from security.audit import AuditKind
from security.keyring import KeyRing
from security.keys import NodeKey
from security.ratelimit import RateLimiter
from security.signing import sign
from sync.apply_worker import ApplyJob, ApplyWorker, ApplyWorkerDown
from sync.errors import ApplyFailed, BatchRejected
from sync.metrics import SyncMetrics
from sync.store import SyncStore
from sync.verify import VerifiedBatch, verify_batch
from sync.wire import (
    ACCEPTS_DIGEST,
    CONTENT_TYPE,
    PURPOSE_PUSH,
    PURPOSE_PUSH_REPLY,
    BatchHeader,
    BatchStatus,
    Code,
    Push,
    PushReply,
    Sealed,
    WireError,
    packb,
)

if TYPE_CHECKING:
    from node.security_events import SecurityEvents

log = logging.getLogger("lsnet.sync")

STATUS_FOR = {
    Code.MALFORMED: 400,
    Code.UNSUPPORTED_VERSION: 400,
    Code.TOO_LARGE: 413,
    Code.UNKNOWN_SENDER: 401,
    Code.BAD_SIGNATURE: 401,
    Code.WRONG_DESTINATION: 421,
    Code.STALE: 401,
    Code.RATE_LIMITED: 429,
    Code.REPLAY: 401,
    Code.NOT_AUTHORISED: 403,
    Code.KEY_REVOKED: 401,
    Code.KEY_EXPIRED: 401,
    Code.KEY_NOT_YET_VALID: 401,
}


class ReceiveError(Exception):
    def __init__(
        self, code: Code, message: str, batch: int | None = None, claimed: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.batch = batch
        self.claimed = claimed  # the sender the request names, not yet authenticated


def error_response(code: Code, message: str, batch: int | None = None) -> web.Response:
    err: dict[str, Any] = {"code": code.value, "message": message}
    if batch is not None:
        err["batch"] = batch
    # A refusal caused by one batch is about its content, not the request: 422 whatever the code
    # (a forged batch behind a valid envelope is not an authentication failure of the sender).
    status = 422 if batch is not None else STATUS_FOR.get(code, 400)
    return web.Response(status=status, body=packb({"error": err}), content_type=CONTENT_TYPE)


def limited_response(retry_after_s: float, message: str) -> web.Response:
    """429 rate_limited with a Retry-After header (whole seconds, at least 1)."""
    resp = error_response(Code.RATE_LIMITED, message)
    resp.headers["Retry-After"] = str(max(1, int(retry_after_s + 0.999)))
    return resp


class PushReceiver:
    def __init__(
        self,
        *,
        config: NodeConfig,
        key: NodeKey,
        store: SyncStore,
        clock: Clock,
        metrics: SyncMetrics,
        on_applied: Callable[[], None],
        validator: Callable[[str], RecordValidator] = lambda origin: BuiltinValidator(),
    ) -> None:
        self.validator = validator
        self.config = config
        self.key = key
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.on_applied = on_applied
        self.events: SecurityEvents | None = None
        # Set by the node: whether a batch (origin, last seq, now ms) is to be taken as a repair,
        # because this node's operator asked the child for it again (network_mgmt.resend).
        self.repair_wanted: Callable[[str, int, int], bool] | None = None
        self.on_repaired: Callable[[str, int], None] | None = None
        # Set by the node when `[sync] apply_process` is on (sync.apply_worker, ADR 0014).
        self.apply_worker: ApplyWorker | None = None
        limits = config.limits
        self.per_peer = RateLimiter(limits.peer_requests_per_s, limits.peer_burst)
        self.per_address = RateLimiter(limits.bad_requests_per_s, limits.bad_burst)
        self.children = {c.id: c for c in config.children}
        from sync.child_gate import ChildGate  # built on this module's errors

        self.gate = ChildGate(config, clock, metrics, lambda: self.events)
        self._handing_over = asyncio.Lock()
        self.gate.keyring = KeyRing.from_keys(config.subtree_keys())  # the node passes its own

    @property
    def keyring(self) -> KeyRing:
        """The key ring the envelope and the batches are checked with (the node's own)."""
        assert self.gate.keyring is not None
        return self.gate.keyring

    @keyring.setter
    def keyring(self, ring: KeyRing) -> None:
        self.gate.keyring = ring

    async def handle(self, request: web.Request) -> web.Response:
        address = request.remote or "?"
        now = self.clock.monotonic()
        if self.per_address.retry_after(address) > 0 and not self.per_address.allow(address, now):
            # This address keeps sending refused requests: answer without reading them.
            self.metrics.rejected.labels(Code.RATE_LIMITED.value).inc()
            return limited_response(
                self.per_address.retry_after(address), "too many refused requests"
            )
        sender = ""
        job: ApplyJob | None = None
        try:
            # The same door as the other child routes: size, sender, destination, envelope
            # signature, clock, nonce, and the HTTP signer being the sender.
            read_started = self.clock.monotonic()
            body = await self.gate.read(request)
            verify_started = self.clock.monotonic()
            self.metrics.receive_latency.labels("read").observe(verify_started - read_started)
            push = self.gate.open(body, PURPOSE_PUSH, self._parse, request)
            sender = push.sender
            if not self.per_peer.allow(push.sender, now):
                raise ReceiveError(
                    Code.RATE_LIMITED, f"node {push.sender} exceeds its request rate"
                )
            # With an apply process, each batch is written there while the next is verified
            # here; a batch that fails verification aborts the job and nothing is written.
            repair = self._is_repair(push)
            subtree = [c.id for c in self.children[push.sender].walk()]
            # One push at a time is verified and handed over (the apply process writes one job
            # at a time, in the order the jobs were handed over); between batches the event loop
            # is free, e.g. to answer the push before this one once it is written (ADR 0015).
            async with self._handing_over:
                job = None if repair else self._begin_job(push)
                try:
                    verified = await self._verify_all(push, job.feed if job is not None else None)
                except BaseException:
                    if job is not None:
                        job.abort()  # whatever the child wrote of this push is rolled back
                        job = None
                    raise
                written = job.end(subtree) if job is not None else None
            self.metrics.receive_latency.labels("verify").observe(
                self.clock.monotonic() - verify_started
            )
        except BaseException as exc:
            if job is not None:
                job.abort()  # whatever the child wrote of this push is rolled back
            if not isinstance(exc, ReceiveError):
                raise
            if exc.code is Code.RATE_LIMITED:
                self.metrics.rejected.labels(exc.code.value).inc()
                return limited_response(self.per_peer.retry_after(sender), exc.message)
            self.per_address.allow(address, now)  # count the refusal against the address
            self.metrics.rejected.labels(exc.code.value).inc()
            if self.events is not None:
                kind = AuditKind.REQUEST_REJECTED if exc.batch is None else AuditKind.BATCH_REJECTED
                detail: dict[str, str | int | bool] = {"address": address[:64]}
                if exc.claimed:
                    detail["claimed"] = exc.claimed[:64]
                if exc.batch is not None:
                    detail["batch"] = exc.batch
                await self.events.emit(
                    kind, peer=sender or address, code=exc.code.value, detail=detail
                )
            log.warning(
                "IN [%s] refused push: %s %s",
                request.remote,
                exc.code.value,
                exc.message,
            )
            return error_response(exc.code, exc.message, exc.batch)
        started = self.clock.monotonic()
        now_ms = self.clock.time_ms()
        keep = self.config.parent is not None
        if written is not None:
            try:
                applied = await written
                if len(applied.results) != len(verified):  # never expected: answer "send again"
                    raise ApplyFailed(
                        f"the apply process answered for {len(applied.results)} of "
                        f"{len(verified)} batches"
                    )
            except ApplyFailed as exc:
                log.error("IN [%s] push verified but not written: %s", push.sender, exc)
                self.metrics.rejected.labels(Code.INTERNAL.value).inc()
                err = {"code": Code.INTERNAL.value, "message": f"not written, send again: {exc}"}
                return web.Response(
                    status=503, body=packb({"error": err}), content_type=CONTENT_TYPE
                )
            results, marks = applied.results, applied.marks
            self.metrics.apply_latency.observe(applied.seconds)
        elif repair:
            from sync.ae_store import repair_push_txn  # anti-entropy's apply, built on sync.store

            results, marks = await self.store.db.write(
                repair_push_txn, verified, now_ms, keep, subtree
            )
            if self.on_repaired is not None:
                for origin, n in Counter(vb.header.origin for vb in verified).items():
                    self.on_repaired(origin, n)
        else:
            results, marks = await self.store.apply_push(verified, now_ms, keep, subtree)
        if written is None:
            self.metrics.apply_latency.observe(self.clock.monotonic() - started)
        applied_any = False
        for vb, res in zip(verified, results, strict=True):
            self.metrics.batches_received.labels(vb.header.origin, res.status.value).inc()
            if res.status is BatchStatus.APPLIED:
                applied_any = True
                self.metrics.records_applied.labels(vb.header.origin).inc(vb.header.count)
                self.metrics.watermark.labels(vb.header.origin).set(vb.header.last_seq)
                if vb.held:
                    await self._note_held(push.sender, vb)
            elif res.status is BatchStatus.REJECTED:
                self.metrics.rejected.labels(res.code).inc()
                if self.events is not None:
                    await self.events.emit(
                        AuditKind.BATCH_REJECTED,
                        peer=push.sender,
                        code=res.code,
                        detail={"origin": res.origin, "first_seq": res.first_seq},
                    )
                log.warning(
                    "IN [%s] rejected batch of %s: %s", push.sender, vb.header.origin, res.message
                )
        if applied_any:
            self.on_applied()
        reply = PushReply(
            responder=self.config.node_id,
            destination=push.sender,
            nonce=push.nonce,
            results=tuple(results),
            watermarks=tuple(marks),
            accepts=(ACCEPTS_DIGEST,) if self.gate.accepts_digest else (),
        )
        envelope = reply.to_bytes()
        sealed = Sealed(envelope, sign(self.key, PURPOSE_PUSH_REPLY, envelope))
        return web.Response(body=sealed.to_bytes(), content_type=CONTENT_TYPE)

    async def _note_held(self, sender: str, vb: VerifiedBatch) -> None:
        """Count, log and audit the poison records of an applied batch that were held aside."""
        origin = vb.header.origin
        for h in vb.held:
            self.metrics.records_held.labels(origin, h.code).inc()
        self.metrics.held_waiting.inc(len(vb.held))
        log.warning(
            "IN [%s] held %d invalid records of %s [%d, %d] aside (first: %s); see "
            "'lsnet links held list'",
            sender,
            len(vb.held),
            origin,
            vb.header.first_seq,
            vb.header.last_seq,
            vb.held[0].message,
        )
        if self.events is not None:
            await self.events.emit(
                AuditKind.RECORDS_HELD,
                peer=sender,
                code=vb.held[0].code,
                detail={
                    "origin": origin,
                    "first_seq": vb.header.first_seq,
                    "last_seq": vb.header.last_seq,
                    "held": len(vb.held),
                },
            )

    def _parse(self, envelope: bytes) -> Push:
        return Push.from_bytes(envelope, max_batches=self.config.limits.max_batches_per_transfer)

    def _is_repair(self, push: Push) -> bool:
        """Whether a batch of this push is an anti-entropy repair this node asked for (then the
        push takes `sync.ae_store`'s path). Read from the headers before verification; a push
        whose header does not parse is refused by verification, so the answer is unused."""
        wanted = self.repair_wanted
        if wanted is None:
            return False
        now_ms = self.clock.time_ms()
        try:
            headers = [BatchHeader.from_bytes(signed.header_bytes) for signed in push.batches]
        except WireError:
            return False
        return any(wanted(h.origin, h.last_seq, now_ms) for h in headers)

    def _begin_job(self, push: Push) -> ApplyJob | None:
        """A job on the apply process for this push, or None to apply it in this process."""
        worker = self.apply_worker
        if worker is None or not worker.running or not push.batches:
            return None
        try:
            return worker.begin(self.clock.time_ms(), self.config.parent is not None)
        except ApplyWorkerDown:
            return None

    async def _verify_all(
        self, push: Push, feed: Callable[[VerifiedBatch], None] | None = None
    ) -> list[VerifiedBatch]:
        out = []
        for index, signed in enumerate(push.batches):
            if index:
                await asyncio.sleep(0)  # let the loop answer, read and accept between batches
            try:
                out.append(
                    verify_batch(
                        signed,
                        sender=push.sender,
                        receiver=self.config.node_id,
                        keys=self.keyring,
                        route_of=self.config.route_of,
                        limits=self.config.limits,
                        validate_records=self.config.sync.revalidate_records,
                        rules_for=self.validator,
                        hold_invalid=self.config.sync.holds_invalid,
                    )
                )
            except BatchRejected as exc:
                raise ReceiveError(exc.code, exc.message, batch=index) from None
            if feed is not None:
                feed(out[-1])
        return out
