"""Anti-entropy between a child and its parent: find divergence and repair it without operators.

Periodically (the `anti-entropy` job) the child summarises every range it holds — its own records
and each relayed origin's, per epoch — as a top digest over bucket digests (`sync.ae_store`), and
sends the summaries to the parent (signed, `POST /v1/sync/summary`). The parent answers, per
range, its watermark and top digest, and its bucket digests where the tops differ at equal
positions. Then the child:

- parent behind (its watermark is lower, e.g. restored from an old backup) in two comparisons in
  a row at the same position: the child marks the batches above it unacknowledged again, and
  the normal queue resends them;
- equal positions, different content (e.g. a row deleted or changed behind the system's back):
  the child resends the stored signed batches covering the differing buckets
  (`POST /v1/sync/repair`); the parent verifies them like a push and re-applies them
  idempotently, even at or below its watermark (`sync.ae_store.repair_txn`);
- parent ahead (the child lost data): reported; `lsnet node recover --from-parent` is the fix.

A range whose own changes are still on their way (the parent's watermark is below the child's
last seq and nothing was acknowledged above it) is in flight, not divergent. Findings are
counted in metrics and kept in `last` for the status view. This module neither cuts nor pushes
ordinary batches (`sync.sender`) nor decides batch trust (`sync.verify`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from hierarchy_config.model import NodeConfig
from node.clock import Clock
from node.db import Database
from node.validation import RecordValidator
from security.keys import NodeKey
from security.signing import SignatureInvalid, sign, verify
from sync.ae_store import (
    RangeDigest,
    batches_covering_txn,
    child_ranges_txn,
    differing_spans,
    repair_txn,
    verdicts_txn,
)
from sync.ae_wire import (
    PURPOSE_AE_REPAIR,
    PURPOSE_AE_REPAIR_REPLY,
    PURPOSE_AE_SUMMARY,
    PURPOSE_AE_VERDICT,
    REPAIR_PATH,
    SUMMARY_PATH,
    RangeSummaries,
    RangeVerdicts,
)
from sync.child_gate import ChildGate
from sync.errors import BatchRejected, PeerUnavailable
from sync.metrics import SyncMetrics
from sync.receiver import ReceiveError
from sync.store import SyncStore
from sync.transport import Transport
from sync.verify import VerifiedBatch, verify_batch
from sync.wire import (
    CONTENT_TYPE,
    BatchStatus,
    Code,
    Push,
    PushReply,
    Sealed,
    SignedBatch,
    Watermark,
    WireError,
)

if TYPE_CHECKING:
    from node.security_events import SecurityEvents

log = logging.getLogger("lsnet.sync")


class AntiEntropyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        ns = "lsnet"
        self.runs = Counter(
            "anti_entropy_runs",
            "Anti-entropy comparisons with the parent, by outcome",
            ["peer", "outcome"],
            namespace=ns,
            registry=registry,
        )
        self.divergent = Gauge(
            "anti_entropy_divergent_ranges",
            "Ranges found different from the parent in the last comparison, by kind",
            ["peer", "kind"],
            namespace=ns,
            registry=registry,
        )
        self.repaired = Counter(
            "anti_entropy_repaired_batches",
            "Batches resent to the parent to repair a divergence",
            ["peer"],
            namespace=ns,
            registry=registry,
        )
        self.requeued = Counter(
            "anti_entropy_requeued_batches",
            "Acknowledged batches queued again because the parent no longer holds them",
            ["peer"],
            namespace=ns,
            registry=registry,
        )


@dataclass
class AntiEntropyRun:
    """What one comparison found and did (also the status view's `anti_entropy` section)."""

    at_ms: int = 0
    ranges: int = 0
    equal: int = 0
    in_flight: int = 0
    parent_behind: int = 0
    parent_ahead: int = 0
    content_differs: int = 0
    requeued_batches: int = 0
    repaired_batches: int = 0
    unrepaired: int = 0
    error: str = ""

    @property
    def divergent(self) -> int:
        return self.parent_behind + self.parent_ahead + self.content_differs

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "divergent": self.divergent}


class AntiEntropy:
    """The child side: compare with the parent and repair."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        key: NodeKey,
        db: Database,
        sync_store: SyncStore,
        transport: Transport,
        clock: Clock,
        metrics: AntiEntropyMetrics,
        on_requeued: Callable[[], None],
    ) -> None:
        assert config.parent is not None
        self.config = config
        self.parent = config.parent
        self.key = key
        self.db = db
        self.sync_store = sync_store
        self.transport = transport
        self.clock = clock
        self.metrics = metrics
        self.on_requeued = on_requeued
        self.last: AntiEntropyRun | None = None
        # (origin, epoch) -> the parent watermark last seen below what this node holds. Batches
        # are queued again only when two comparisons in a row show the same position: a push
        # acknowledged between the parent's answer and its processing is not a loss.
        self._behind: dict[tuple[str, str], int] = {}

    def _seal(self, envelope: bytes, purpose: str) -> bytes:
        return Sealed(envelope, sign(self.key, purpose, envelope)).to_bytes()

    def _open(self, answer: bytes, purpose: str) -> bytes:
        try:
            sealed = Sealed.from_bytes(answer)
            verify(self.parent.verify_key, purpose, sealed.envelope, sealed.signature)
        except (WireError, SignatureInvalid) as exc:
            raise PeerUnavailable(self.parent.id, f"unusable answer: {exc}") from None
        return sealed.envelope

    async def run_once(self) -> AntiEntropyRun:
        run = AntiEntropyRun(at_ms=self.clock.time_ms())
        try:
            await self._compare(run)
            outcome = "divergent" if run.divergent else "equal"
        except PeerUnavailable as exc:
            run.error = str(exc)
            outcome = "failed"
            log.info("AE [%s] comparison not done: %s", self.parent.id, exc)
        self.metrics.runs.labels(self.parent.id, outcome).inc()
        for kind in ("parent_behind", "parent_ahead", "content_differs"):
            self.metrics.divergent.labels(self.parent.id, kind).set(getattr(run, kind))
        self.last = run
        return run

    async def _compare(self, run: AntiEntropyRun) -> None:
        ranges: list[RangeDigest] = await self.db.read(child_ranges_txn)
        run.ranges = len(ranges)
        if not ranges:
            return
        nonce = os.urandom(16)
        msg = RangeSummaries(
            sender=self.config.node_id,
            destination=self.parent.id,
            sent_ms=self.clock.time_ms(),
            nonce=nonce,
            ranges=tuple(r.summary() for r in ranges),
        )
        answer = await self.transport.post(
            self.parent.id,
            self.parent.url + SUMMARY_PATH,
            self._seal(msg.to_bytes(), PURPOSE_AE_SUMMARY),
        )
        try:
            reply = RangeVerdicts.from_bytes(self._open(answer, PURPOSE_AE_VERDICT))
        except WireError as exc:
            raise PeerUnavailable(self.parent.id, f"unusable answer: {exc.message}") from None
        if (
            reply.responder != self.parent.id
            or reply.destination != self.config.node_id
            or reply.nonce != nonce
        ):
            raise PeerUnavailable(self.parent.id, "answer is not for this request")
        mine = {(r.origin, r.epoch): r for r in ranges}
        for verdict in reply.verdicts:
            held = mine.get((verdict.origin, verdict.epoch))
            if held is None:
                continue
            where = f"{verdict.origin} epoch {verdict.epoch[:8]}"
            ident = (verdict.origin, verdict.epoch)
            seen_behind = self._behind.pop(ident, None)
            if verdict.parent_seq < held.held_seq and seen_behind != verdict.parent_seq:
                self._behind[ident] = verdict.parent_seq  # look again next time
                run.in_flight += 1
            elif verdict.parent_seq < held.held_seq:
                _, requeued = await self.sync_store.apply_acks(
                    [Watermark(verdict.origin, verdict.epoch, verdict.parent_seq)]
                )
                if requeued:
                    run.parent_behind += 1
                    run.requeued_batches += requeued
                    self.metrics.requeued.labels(self.parent.id).inc(requeued)
                    log.warning(
                        "AE [%s] parent holds %s only up to seq %d of %d; %d batches queued again",
                        self.parent.id,
                        where,
                        verdict.parent_seq,
                        held.held_seq,
                        requeued,
                    )
                    self.on_requeued()
                else:
                    run.in_flight += 1
            elif verdict.parent_seq > held.held_seq:
                run.parent_ahead += 1
                log.error(
                    "AE [%s] parent holds %s up to seq %d, this node only %d: this node lost "
                    "data; restore it with 'lsnet node recover --from-parent'",
                    self.parent.id,
                    where,
                    verdict.parent_seq,
                    held.held_seq,
                )
            elif verdict.top == held.top:
                run.equal += 1
            else:
                run.content_differs += 1
                spans = differing_spans(held.buckets, verdict.buckets or {})
                log.warning(
                    "AE [%s] content of %s differs in %d buckets; resending them",
                    self.parent.id,
                    where,
                    len(spans),
                )
                covering = await self.db.read(
                    batches_covering_txn, verdict.origin, verdict.epoch, spans
                )
                if not covering:
                    run.unrepaired += 1
                    continue
                run.repaired_batches += await self._repair([b for _, b in covering])

    async def _repair(self, signed: list[SignedBatch]) -> int:
        step = max(1, self.config.limits.max_batches_per_transfer)
        budget = max(self.config.limits.max_body_bytes // 2, 1024)
        done = 0
        i = 0
        while i < len(signed):
            chunk: list[SignedBatch] = []
            size = 0
            while (
                i < len(signed)
                and len(chunk) < step
                and (not chunk or size + signed[i].size <= budget)
            ):
                chunk.append(signed[i])
                size += signed[i].size
                i += 1
            nonce = os.urandom(16)
            push = Push(
                sender=self.config.node_id,
                destination=self.parent.id,
                sent_ms=self.clock.time_ms(),
                nonce=nonce,
                batches=tuple(chunk),
            )
            answer = await self.transport.post(
                self.parent.id,
                self.parent.url + REPAIR_PATH,
                self._seal(push.to_bytes(), PURPOSE_AE_REPAIR),
            )
            try:
                reply = PushReply.from_bytes(self._open(answer, PURPOSE_AE_REPAIR_REPLY))
            except WireError as exc:
                raise PeerUnavailable(self.parent.id, f"unusable answer: {exc.message}") from None
            if reply.nonce != nonce or reply.destination != self.config.node_id:
                raise PeerUnavailable(self.parent.id, "answer is not for this request")
            applied = sum(1 for r in reply.results if r.status is BatchStatus.APPLIED)
            done += applied
            self.metrics.repaired.labels(self.parent.id).inc(applied)
        return done


class AntiEntropyServer:
    """The parent side: answer summaries and apply repairs from enrolled children."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        key: NodeKey,
        db: Database,
        clock: Clock,
        metrics: SyncMetrics,
        events: Callable[[], SecurityEvents | None],
        validator: Callable[[str], RecordValidator],
        on_applied: Callable[[], None],
    ) -> None:
        self.config = config
        self.key = key
        self.db = db
        self.clock = clock
        self.gate = ChildGate(config, clock, metrics, events)
        self.validator = validator
        self.on_applied = on_applied
        self.keys = config.subtree_keys()

    def _sealed(self, envelope: bytes, purpose: str) -> web.Response:
        body = Sealed(envelope, sign(self.key, purpose, envelope)).to_bytes()
        return web.Response(body=body, content_type=CONTENT_TYPE)

    def _authorise(self, sender: str, origin: str) -> None:
        if origin != sender and self.config.route_of(origin) != sender:
            raise ReceiveError(
                Code.NOT_AUTHORISED,
                f"node {sender} may not speak for origin {origin}",
                claimed=sender,
            )

    async def handle_summary(self, request: web.Request) -> web.Response:
        try:
            body = await self.gate.read(request)
            msg = self.gate.open(body, PURPOSE_AE_SUMMARY, RangeSummaries.from_bytes, request)
            self.gate.throttle(msg.sender)
            for r in msg.ranges:
                self._authorise(msg.sender, r.origin)
        except ReceiveError as exc:
            return await self.gate.refuse(request, exc, "anti-entropy summary")
        verdicts = await self.db.read(verdicts_txn, list(msg.ranges))
        reply = RangeVerdicts(self.config.node_id, msg.sender, msg.nonce, tuple(verdicts))
        return self._sealed(reply.to_bytes(), PURPOSE_AE_VERDICT)

    async def handle_repair(self, request: web.Request) -> web.Response:
        limits = self.config.limits

        def parse(data: bytes) -> Push:
            return Push.from_bytes(data, max_batches=limits.max_batches_per_transfer)

        try:
            body = await self.gate.read(request)
            push = self.gate.open(body, PURPOSE_AE_REPAIR, parse, request)
            self.gate.throttle(push.sender)
            verified: list[VerifiedBatch] = []
            for index, signed in enumerate(push.batches):
                try:
                    verified.append(
                        verify_batch(
                            signed,
                            sender=push.sender,
                            receiver=self.config.node_id,
                            keys=self.keys,
                            route_of=self.config.route_of,
                            limits=limits,
                            validate_records=self.config.sync.revalidate_records,
                            rules_for=self.validator,
                            hold_invalid=self.config.sync.holds_invalid,
                        )
                    )
                except BatchRejected as exc:
                    raise ReceiveError(
                        exc.code, exc.message, batch=index, claimed=push.sender
                    ) from None
        except ReceiveError as exc:
            return await self.gate.refuse(request, exc, "anti-entropy repair")
        results = await self.db.write(
            repair_txn, verified, self.clock.time_ms(), self.config.parent is not None
        )
        applied = [r for r in results if r.status is BatchStatus.APPLIED]
        if applied:
            log.warning(
                "AE [%s] repaired %d batches (%s)",
                push.sender,
                len(applied),
                ", ".join(sorted({r.origin for r in applied})),
            )
            self.on_applied()
        reply = PushReply(self.config.node_id, push.sender, push.nonce, tuple(results), ())
        return self._sealed(reply.to_bytes(), PURPOSE_AE_REPAIR_REPLY)
