"""The queue towards the parent: one object per upstream peer, a bounded window of transfers.

Modes: LIVE (nothing waiting; new local changes trigger a push after a short debounce),
CATCHING_UP (a backlog is streamed in bounded transfers, back to back) and BACKING_OFF (the
parent failed; wait a jittered, bounded delay that any success resets; the attempts after a
failure carry one batch each until one is answered). The mode, failure count,
backoff deadline, last success and last error are persisted in `links`, so a restarted node
resumes where it stopped. Batches are acknowledged only from the parent's signed watermarks; a
batch the parent refuses for its content is quarantined with the reason, never dropped.

While catching up, up to `[sync] pushes_in_flight` transfers may be on the way at once (ADR 0015):
the next push leaves while the parent still verifies and writes the previous one. Answers are
taken strictly in the order the pushes left; when one fails, the pushes sent after it are
abandoned (their batches are simply sent again: the parent's watermarks make that harmless).

This module does not decide trust on the receiving side (see `sync.verify`) and does not talk
HTTP itself (see `sync.transport`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from hierarchy_config.model import LimitsConfig, ParentConfig, SyncConfig
from node.clock import Clock
from security.audit import AuditKind
from security.keyring import KeyRing, trusted_keys
from security.keys import NodeKey
from security.signing import SignatureInvalid, sign, sign_digest, verify_any
from sync.errors import PeerRejected, PeerUnavailable
from sync.metrics import SyncMetrics
from sync.store import LinkState, PendingBatch, SyncStore
from sync.transport import Transport
from sync.wire import (
    ACCEPTS_DIGEST,
    PURPOSE_PUSH,
    PURPOSE_PUSH_REPLY,
    BatchStatus,
    Code,
    Push,
    PushReply,
    Sealed,
    Watermark,
    WireError,
)

if TYPE_CHECKING:
    from node.security_events import SecurityEvents

log = logging.getLogger("lsnet.sync")

# Codes with which a parent refuses a batch for its content: the batch is quarantined.
CONTENT_CODES = frozenset(
    c.value
    for c in (
        Code.MALFORMED,
        Code.UNSUPPORTED_VERSION,
        Code.TOO_LARGE,
        Code.NOT_AUTHORISED,
        Code.UNKNOWN_ORIGIN,
        Code.BAD_SIGNATURE,
        Code.BAD_DIGEST,
        Code.BAD_RANGE,
        Code.CHAIN_BROKEN,
        Code.INVALID_RECORD,
    )
)

PUSH_PATH = "/v1/sync/push"


class Mode(StrEnum):
    LIVE = "live"
    CATCHING_UP = "catching_up"
    BACKING_OFF = "backing_off"


@dataclass(frozen=True, slots=True)
class _Ahead:
    """A push sent while an earlier one was still unanswered (`pushes_in_flight` > 1)."""

    pending: list[PendingBatch]
    task: asyncio.Future[bool]
    full: bool


@dataclass(frozen=True, slots=True)
class _Ready:
    """A transfer read and sealed ahead: its batches, the push and its bytes, when it was made."""

    pending: list[PendingBatch]
    sealed: tuple[Push, bytes]
    made_at: float
    digest: bool = False  # signed over the envelope's digest (ADR 0016)

    @property
    def ids(self) -> list[int]:
        return [p.id for p in self.pending]


class UpstreamQueue:
    """Sends this node's batches and its relay queue to one parent."""

    def __init__(
        self,
        *,
        node_id: str,
        parent: ParentConfig,
        key: NodeKey,
        store: SyncStore,
        transport: Transport,
        clock: Clock,
        limits: LimitsConfig,
        settings: SyncConfig,
        metrics: SyncMetrics,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id = node_id
        self.parent = parent
        self.key = key
        self.store = store
        self.transport = transport
        self.clock = clock
        self.keyring: KeyRing | None = None  # the node's key ring (the parent's rotations)
        self.limits = limits
        self.settings = settings
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.state = LinkState(parent.id, Mode.LIVE.value, 0, 0, 0, "", 0)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.in_flight = False
        self.transfers = 0
        self._prepared = 0  # batches cut while the last transfer was in flight
        self._ready: _Ready | None = None  # the next push, sealed while the last was in flight
        # Pushes already sent behind the one being waited for, oldest first (ADR 0015).
        self._ahead: deque[_Ahead] = deque()
        # Sign pushes over their envelope's SHA-256 digest (ADR 0016): only once a reply of the
        # parent has said it accepts that; the first push after a start signs the bytes.
        self._digest = False
        # Set when an answer shows the parent needs batches before those sent ahead (ADR 0015).
        self._restart_window = False
        self.events: SecurityEvents | None = None
        # Operator controls (network_mgmt.link_admin persists `paused`); the recent failures of
        # this link, newest last, for `lsnet links errors` and the heartbeat.
        self.paused = False
        self.recent_errors: deque[tuple[int, str]] = deque(maxlen=50)
        self.error_count = 0
        self._kick = asyncio.Event()

    @property
    def mode(self) -> Mode:
        return Mode(self.state.mode)

    async def start(self) -> None:
        self.state = await self.store.load_link(self.parent.id)
        self.recent_errors.extend(await self.store.recent_link_errors(self.parent.id, 50))
        self._set_mode_metric()
        self._task = asyncio.create_task(self._run(), name=f"upstream-{self.parent.id}")
        self.poke()

    def poke(self) -> None:
        """New work may be waiting (a local change, a relayed batch, the retry job)."""
        self._wake.set()

    async def retry_now(self) -> None:
        """Operator action: forget the failure count and backoff delay and try at once."""
        old = self.state
        self.state = LinkState(
            old.peer, old.mode, 0, 0, old.last_success_ms, old.last_error, old.last_error_ms
        )
        await self.store.save_link(self.state)
        self._kick.set()
        self.poke()

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop after the in-flight transfer finishes, or abandon it after `grace_s`.

        Abandoning is safe: the parent applies a batch atomically, and this node marks nothing
        acknowledged until it has the parent's signed answer, so the batch is simply resent.
        """
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return
        if not self.in_flight:
            # Nothing to finish: the loop is waiting (for work, a debounce or a backoff delay
            # that the wake-up does not cut short), so stop now rather than after `grace_s`.
            self._task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=grace_s)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._abandon_ahead()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._wait_for_work()
            except asyncio.CancelledError:
                raise
            if self._stopping:
                break
            if self.paused:
                continue
            try:
                more = await self.transfer_once()
            except PeerUnavailable as exc:
                await self._failed(str(exc))
                continue
            except Exception as exc:  # a bug must not kill the queue: log, back off, retry
                log.exception("UP [%s] transfer failed unexpectedly", self.parent.id)
                await self._failed(f"internal error: {exc!r}")
                continue
            if more:
                self._wake.set()

    async def _wait_for_work(self) -> None:
        wait_ms = self.state.backoff_until_ms - self.clock.time_ms()
        # Never longer than the longest backoff: a deadline persisted while this node's clock
        # ran ahead (and was then corrected) must not stall the link for the size of the error.
        wait_ms = min(wait_ms, int(self.settings.backoff_max_s * 1000))
        if wait_ms > 0:
            # Only an operator's retry-now (`kick`) cuts a backoff delay short, not a poke.
            kick = asyncio.ensure_future(self._kick.wait())
            sleep = asyncio.ensure_future(self.clock.sleep(wait_ms / 1000.0))
            try:
                await asyncio.wait({kick, sleep}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                kick.cancel()
                sleep.cancel()
            self._kick.clear()
            return
        await self._wake.wait()
        self._wake.clear()
        if self.settings.debounce_ms and self.mode is Mode.LIVE:
            await self.clock.sleep(self.settings.debounce_ms / 1000.0)

    async def transfer_once(self) -> bool:
        """Cut new batches, send one bounded transfer, record the answer. True if more may wait.

        When a push was already sent ahead (`pushes_in_flight` > 1), this waits for its answer
        instead, and sends the one after it meanwhile."""
        now = self.clock.time_ms()
        if self._ahead:
            ahead = self._ahead.popleft()
            return await self._transfer(
                ahead.pending, now, full=ahead.full, prepare=ahead.full, running=ahead.task
            )
        # Batches the previous transfer prepared while in flight count towards this one's.
        prepared, self._prepared = self._prepared, 0
        ready, self._ready = self._ready, None
        await self._cut(now, self.limits.max_batches_per_transfer - prepared)
        # After a failed transfer the parent may well still be down: the next attempt carries
        # one batch, cheap to read, sign and lose; an answered one opens the full window again.
        window = 1 if self.state.failures else self.limits.max_batches_per_transfer
        # A push sealed while the previous transfer was in flight is sent if it is still exactly
        # what would be read now (one small query instead of reading, packing and signing).
        sealed = None
        if (
            ready is not None
            and window > 1
            and self._still_ready(ready)
            and await self.store.next_transfer_ids(window, self._transfer_bytes) == ready.ids
        ):
            pending, sealed = ready.pending, ready.sealed
        else:
            pending = await self.store.next_transfer(window, self._transfer_bytes)
        if not pending:
            await self._succeeded(Mode.LIVE, touched=False)
            return False
        full = len(pending) >= window
        prepare = full and window > 1
        return await self._transfer(pending, now, full=full, prepare=prepare, sealed=sealed)

    async def _transfer(
        self,
        pending: list[PendingBatch],
        now_ms: int,
        *,
        full: bool,
        prepare: bool,
        sealed: tuple[Push, bytes] | None = None,
        running: asyncio.Future[bool] | None = None,
    ) -> bool:
        """One transfer, sent here or already on its way (`running`), and its bookkeeping."""
        self.in_flight = True
        try:
            progress = await self._send_preparing_next(
                pending, now_ms, prepare=prepare, sealed=sealed, running=running
            )
        finally:
            self.in_flight = False
        self.transfers += 1
        await self._succeeded(Mode.CATCHING_UP if full else Mode.LIVE, touched=True)
        return progress

    async def _send_preparing_next(
        self,
        pending: list[PendingBatch],
        now_ms: int,
        *,
        prepare: bool,
        sealed: tuple[Push, bytes] | None = None,
        running: asyncio.Future[bool] | None = None,
    ) -> bool:
        """Send one transfer (or wait for `running`, already sent); during a backlog
        (`prepare`), cut and sign the next transfer's batches, read them and seal the next push
        while this one is in flight, so the parent's work and ours overlap.

        With `pushes_in_flight` = 1, preparing is not sending: the next transfer leaves only
        after this one is answered, and only if it is still exactly the next one then. With more,
        the next pushes leave at once, up to the window, and are answered in order (ADR 0015).
        A failed preparation is logged and redone by the next transfer."""
        send = (
            running if running is not None else asyncio.ensure_future(self._send(pending, sealed))
        )
        if prepare:
            try:
                await self._fill_window(send, pending, now_ms)
            except asyncio.CancelledError:
                send.cancel()
                await self._abandon_ahead()
                raise
            except Exception:
                log.exception("UP [%s] preparing the next transfer failed", self.parent.id)
        try:
            progress = await send
        except BaseException:
            # The pushes sent after this one are answered in order after it: abandon them.
            await self._abandon_ahead()
            raise
        if self._restart_window:
            # Start again from the oldest batch not acknowledged: the pushes sent ahead, and the
            # one sealed ahead, follow batches the parent still needs.
            self._restart_window = False
            self._ready = None
            await self._abandon_ahead()
        return progress

    async def _fill_window(
        self, send: asyncio.Future[bool], pending: list[PendingBatch], now_ms: int
    ) -> None:
        """Keep the window full while `send` is on the way: send pushes ahead up to
        `pushes_in_flight`, and keep one more sealed and ready to leave as soon as an answer
        frees a place (with a window of 1, that ready push is all there is)."""
        window = self.settings.pushes_in_flight
        most = self.limits.max_batches_per_transfer
        while True:
            ready = self._ready
            if ready is not None and window > 1 and 1 + len(self._ahead) < window:
                self._ready = None
                if self._still_ready(ready):
                    earlier = self._ahead[-1].task if self._ahead else send
                    task = asyncio.ensure_future(self._send(ready.pending, ready.sealed, earlier))
                    self._ahead.append(_Ahead(ready.pending, task, len(ready.pending) >= most))
                    if len(ready.pending) < most:
                        return  # the backlog is sent
                continue
            if ready is not None:
                return  # the window is full and the next push is ready
            self._prepared = await self._cut(now_ms, most)
            last_id = max(p.id for p in (self._ahead[-1].pending if self._ahead else pending))
            following = await self.store.next_transfer(most, self._transfer_bytes, last_id)
            if not following:
                return
            made = self._seal(following)
            self._ready = _Ready(following, made, self.clock.monotonic(), self._digest)
            if window > 1:
                self._prepared = 0  # cut for a push that leaves from here

    async def _abandon_ahead(self) -> None:
        """Cancel the pushes sent ahead. Their batches stay unacknowledged and are sent again;
        a parent that did apply them answers `duplicate` with its watermark."""
        ahead, self._ahead = list(self._ahead), deque()
        for item in ahead:
            item.task.cancel()
        for item in ahead:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await item.task

    @property
    def _transfer_bytes(self) -> int:
        return max(self.limits.max_body_bytes // 2, 1024)

    def _still_ready(self, ready: _Ready) -> bool:
        """A sealed push is used only soon after it was made: its send time must stay well
        inside the parent's allowed clock skew."""
        age = self.clock.monotonic() - ready.made_at
        # ... and signed as the parent is known to accept now
        return age <= self.settings.max_clock_skew_s / 10 and ready.digest == self._digest

    async def _cut(self, now_ms: int, count: int) -> int:
        """Cut and sign up to `count` new batches, in one transaction."""
        if count <= 0:
            return 0
        limits = self.limits
        return await self.store.cut_batches(
            self.key, limits.max_batch_changes, limits.max_batch_bytes, now_ms, count
        )

    def _seal(self, pending: list[PendingBatch]) -> tuple[Push, bytes]:
        """The push carrying `pending` and its signed envelope bytes."""
        push = Push(
            sender=self.node_id,
            destination=self.parent.id,
            sent_ms=self.clock.time_ms(),
            nonce=os.urandom(16),
            batches=tuple(p.signed for p in pending),
        )
        envelope = push.to_bytes()
        if self._digest:  # the parent said it accepts a signature over the digest (ADR 0016)
            sealed = Sealed(envelope, sign_digest(self.key, PURPOSE_PUSH, envelope), digest=True)
        else:
            sealed = Sealed(envelope, sign(self.key, PURPOSE_PUSH, envelope))
        return push, sealed.to_bytes()

    async def _send(
        self,
        pending: list[PendingBatch],
        sealed: tuple[Push, bytes] | None = None,
        earlier: asyncio.Future[bool] | None = None,
    ) -> bool:
        """Send one push and act on its answer. `earlier`: the push sent just before this one
        and not yet answered; this one's answer is acted on only after it, and only if it
        succeeded (answers in send order, so acknowledgements never go backwards)."""
        push, body = sealed if sealed is not None else self._seal(pending)
        started = self.clock.monotonic()
        on_the_way = self.metrics.pushes_in_flight.labels(self.parent.id)
        on_the_way.inc()
        try:
            answer = await self.transport.post(self.parent.id, self.parent.url + PUSH_PATH, body)
        except PeerRejected as exc:
            on_the_way.dec()
            if exc.code == Code.BAD_SIGNATURE.value:
                # Perhaps the parent was replaced by a version that does not know digest
                # signatures: sign the bytes themselves until a reply says otherwise.
                self._digest = False
            await self._after(earlier)
            if (
                exc.batch_index is not None
                and exc.code in CONTENT_CODES
                and 0 <= exc.batch_index < len(pending)
            ):
                await self._quarantine(pending[exc.batch_index], exc.code, exc.message)
                return True
            raise
        except BaseException:
            on_the_way.dec()
            raise
        on_the_way.dec()
        self.metrics.push_latency.labels(self.parent.id).observe(self.clock.monotonic() - started)
        await self._after(earlier)
        reply = self._open_reply(answer, push.nonce)
        self.metrics.batches_sent.labels(self.parent.id).inc(len(pending))
        by_range = {(p.origin, p.epoch, p.first_seq): p for p in pending}
        marks = {(w.origin, w.epoch): w for w in reply.watermarks}
        progress = False
        for res in reply.results:
            if res.status is BatchStatus.REJECTED:
                target = by_range.get((res.origin, res.epoch, res.first_seq))
                if target is not None:
                    await self._quarantine(target, res.code, res.message)
                    progress = True
            elif res.status is BatchStatus.APPLIED:
                progress = True
            elif res.status is BatchStatus.GAP:
                log.info(
                    "UP [%s] parent needs %s from seq %d", self.parent.id, res.origin, res.need_seq
                )
                # The parent judged this push before one sent ahead of it (their requests
                # overtook one another), or lost what it had: the pushes sent after this one
                # continue from batches it does not hold yet, and would be gaps too.
                self._restart_window = True
                # The parent may have lost what it once acknowledged (restored or re-initialised
                # database): resend from the seq it asks for.
                if (res.origin, res.epoch) not in marks and res.need_seq >= 1:
                    marks[(res.origin, res.epoch)] = Watermark(
                        res.origin, res.epoch, res.need_seq - 1
                    )
        acked, requeued = await self.store.apply_acks(list(marks.values()))
        if acked:
            self.metrics.batches_acked.labels(self.parent.id).inc(acked)
        if requeued:
            self._restart_window = True
            log.warning(
                "UP [%s] parent no longer holds %d acknowledged batches; resending",
                self.parent.id,
                requeued,
            )
        return progress or acked > 0 or requeued > 0

    async def _after(self, earlier: asyncio.Future[bool] | None) -> None:
        """Wait until the push sent before this one has been answered and acted on; raise
        PeerUnavailable if it failed (this answer is then not acted on)."""
        if earlier is None:
            return
        await asyncio.wait([earlier])
        if earlier.cancelled() or earlier.exception() is not None:
            raise PeerUnavailable(self.parent.id, "an earlier push of this transfer window failed")

    def _open_reply(self, answer: bytes, nonce: bytes) -> PushReply:
        try:
            sealed = Sealed.from_bytes(answer)
            keys = trusted_keys(
                self.keyring, self.parent.id, self.parent.verify_key, self.clock.time_ms()
            )
            verify_any(keys, PURPOSE_PUSH_REPLY, sealed.envelope, sealed.signature)
            reply = PushReply.from_bytes(sealed.envelope)
        except (WireError, SignatureInvalid) as exc:
            raise PeerUnavailable(self.parent.id, f"unusable answer: {exc}") from None
        if (
            reply.responder != self.parent.id
            or reply.destination != self.node_id
            or reply.nonce != nonce
        ):
            raise PeerUnavailable(self.parent.id, "answer is not for this request")
        self._digest = ACCEPTS_DIGEST in reply.accepts
        return reply

    async def _quarantine(self, batch: PendingBatch, code: str, message: str) -> None:
        log.error(
            "UP [%s] parent refused batch %s [%d, %d]: %s %s; quarantined",
            self.parent.id,
            batch.origin,
            batch.first_seq,
            batch.last_seq,
            code,
            message,
        )
        when, text = self._note_error(
            f"batch {batch.origin} [{batch.first_seq}, {batch.last_seq}] "
            f"quarantined: {code} {message}"
        )
        await self.store.quarantine(batch.id, code, message, (self.parent.id, when, text))
        self.metrics.quarantined.labels(
            batch.origin, code if code in CONTENT_CODES else "other"
        ).inc()
        if self.events is not None:
            await self.events.emit(
                AuditKind.BATCH_QUARANTINED,
                peer=self.parent.id,
                code=code,
                detail={
                    "origin": batch.origin,
                    "first_seq": batch.first_seq,
                    "last_seq": batch.last_seq,
                },
            )

    async def _succeeded(self, mode: Mode, *, touched: bool) -> None:
        now = self.clock.time_ms()
        old = self.state
        new = LinkState(
            old.peer,
            mode.value,
            0,
            0,
            now if touched else old.last_success_ms,
            old.last_error,
            old.last_error_ms,
        )
        if new != old:
            self.state = new
            await self.store.save_link(new)
            self._set_mode_metric()

    async def _failed(self, message: str) -> None:
        failures = self.state.failures + 1
        delay = min(
            self.settings.backoff_max_s,
            self.settings.backoff_initial_s * (2 ** min(failures - 1, 30)),
        )
        delay *= self.rng.uniform(0.5, 1.0)
        now = self.clock.time_ms()
        self.state = LinkState(
            self.parent.id,
            Mode.BACKING_OFF.value,
            failures,
            now + int(delay * 1000),
            self.state.last_success_ms,
            message,
            now,
        )
        self.metrics.transfer_failures.labels(self.parent.id).inc()
        error = self._note_error(message)
        log.warning(
            "UP [%s] transfer failed (%d in a row), retrying in %.1fs: %s",
            self.parent.id,
            failures,
            delay,
            message,
        )
        try:
            await self.store.save_link(self.state, error)
        except Exception:
            log.exception("UP [%s] could not persist link state", self.parent.id)
        self._set_mode_metric()

    def _note_error(self, message: str) -> tuple[int, str]:
        """Count and remember an error (the caller persists it with its own write)."""
        self.error_count += 1
        entry = (self.clock.time_ms(), message[:500])
        self.recent_errors.append(entry)
        return entry

    def _set_mode_metric(self) -> None:
        for mode in Mode:
            self.metrics.link_mode.labels(self.parent.id, mode.value).set(
                1 if mode.value == self.state.mode else 0
            )
