"""Composition root: builds a whole node from its configuration, with nothing global.

`Node.open(config)` loads the key (refusing an unsafe key file), opens the database (refusing an
old schema), and wires the stores, the receiver, the upstream queue, the scheduled jobs, the
metrics registry and the HTTP app. Many nodes can run in one process (tests, `lsnet demo`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import Connection

from hierarchy_config.model import NodeConfig
from hierarchy_config.standards import Issue, StandardsError
from network_mgmt.heartbeat import Heartbeats
from network_mgmt.rollout import REPORT_PATH, RolloutView
from network_mgmt.security_feed import REPORT_INTERVAL_S, FeedError, SecurityFeed
from network_mgmt.security_feed import REPORT_PATH as SECURITY_REPORT_PATH
from node.clock import Clock, SystemClock
from node.db import Database, is_sqlite, sqlite_path
from node.key_sync import KeySync
from node.peer_auth import PeerAuth, PeerGate
from node.records import ValidRecord
from node.scheduling import Jobs
from node.security_events import SecurityEvents
from node.stats.replication import local_record_types, promote_kept_txn
from node.stats.service import StatsService
from node.store import (
    BUILTIN_STANDARDS,
    CutAtIngest,
    IngestResult,
    NodeStateError,
    NodeStore,
    StatusView,
)
from node.tls import client_context, server_context
from node.validation import BuiltinValidator, RecordValidator, Validators
from security.audit import AuditKind, AuditLog
from security.http_signatures import Signer
from security.keyring import KeyRing
from security.keys import NodeKey, load_signing_key
from sync.anti_entropy import AntiEntropy, AntiEntropyMetrics, AntiEntropyServer
from sync.apply_worker import ApplyWorker, ApplyWorkerDown
from sync.errors import PeerUnavailable
from sync.metrics import SyncMetrics
from sync.receiver import PushReceiver
from sync.restore import RestoreServer
from sync.sender import UpstreamQueue
from sync.standards_channel import StandardsChannel
from sync.store import LinkState, SyncStore, cut_full_batches_txn
from sync.transport import HttpTransport, Transport

# First pause before restarting an apply process that ended unasked, and the longest pause.
APPLY_RESTART_S = 1.0
APPLY_RESTART_MAX_S = 60.0

log = logging.getLogger("lsnet.node")

SOFTWARE_VERSION = "0.1.0"


def cut_at_ingest(config: NodeConfig, key: NodeKey) -> CutAtIngest | None:
    """For a node with a parent: sign the full batches of a backlog as its records are written
    (`sync.store.cut_full_batches_txn`), so a catch-up only sends them."""
    if config.parent is None:
        return None
    limits = config.limits

    def cut(conn: Connection, now_ms: int) -> int:
        return cut_full_batches_txn(
            conn, key, limits.max_batch_changes, limits.max_batch_bytes, now_ms
        )

    return cut


@dataclass
class Node:
    config: NodeConfig
    key: NodeKey
    db: Database
    clock: Clock
    registry: CollectorRegistry
    metrics: SyncMetrics
    store: NodeStore
    sync_store: SyncStore
    receiver: PushReceiver
    upstream: UpstreamQueue | None
    transport: Transport
    jobs: Jobs = field(default_factory=Jobs)
    security: SecurityEvents | None = None
    standards: StandardsChannel | None = None
    rollout: RolloutView | None = None
    security_feed: SecurityFeed | None = None
    heartbeats: Heartbeats | None = None
    runner: web.AppRunner | None = None
    started_monotonic: float = 0.0
    _gauges: dict[str, Gauge] = field(default_factory=dict)
    _background: list[asyncio.Task[None]] = field(default_factory=list)
    standards_version: str = BUILTIN_STANDARDS
    validator: RecordValidator = field(default_factory=BuiltinValidator)
    validators: Validators | None = None
    keyring: KeyRing = field(default_factory=KeyRing)
    peer_gate: PeerGate = field(default_factory=lambda: PeerGate(600.0))
    peer_auth: PeerAuth | None = None
    key_sync: KeySync | None = None
    stats: StatsService | None = None
    anti_entropy: AntiEntropy | None = None
    ae_server: AntiEntropyServer | None = None
    restore_server: RestoreServer | None = None
    apply_worker: ApplyWorker | None = None
    _apply_started: float = 0.0  # monotonic time the apply process last started
    _apply_delay: float = 0.0  # the pause before the next restart of a dead apply process

    def _note_release(self) -> None:
        """Record this node's release in the rollout view and tell the parent soon."""
        if self.rollout is None:
            return
        expires = self.standards.client.expires() if self.standards is not None else None
        self.rollout.update_self(
            self.standards_version,
            int(expires.timestamp() * 1000) if expires else 0,
            self.clock.time_ms(),
        )
        if self.started_monotonic and self.config.parent is not None:
            self._background = [t for t in self._background if not t.done()]
            self._background.append(asyncio.create_task(self.report_rollout()))

    async def keep_standards_fresh(self) -> None:
        """Ministry: re-sign the standards timestamp with the online keys before it expires."""
        settings = self.config.standards
        if settings.repository is None or settings.online_keys is None:
            return
        from datetime import UTC, datetime, timedelta

        from security.keys import load_signing_key
        from security.standards_admin import keep_fresh
        from security.tuf_publish import OnlineKeys

        online = OnlineKeys(
            snapshot=load_signing_key(settings.online_keys / "snapshot.key"),
            timestamp=load_signing_key(settings.online_keys / "timestamp.key"),
        )
        now = datetime.fromtimestamp(self.clock.time_ms() / 1000, tz=UTC)
        repo = settings.repository
        if await asyncio.to_thread(keep_fresh, repo, online, now, timedelta(hours=12)):
            log.info("STD re-signed the standards timestamp before it expired")

    async def report_rollout(self) -> None:
        """Send this subtree's standards releases to the parent (signed)."""
        if self.rollout is None or self.config.parent is None:
            return
        body = self.rollout.make_report(self.key, self.clock.time_ms())
        try:
            await self.transport.post(
                self.config.parent.id, self.config.parent.url + REPORT_PATH, body
            )
        except PeerUnavailable as exc:
            log.info("STD [%s] rollout report not delivered: %s", self.config.parent.id, exc)

    async def report_security(self) -> None:
        """Forward this subtree's audit entries (own log and received) to the parent, signed."""
        feed, parent = self.security_feed, self.config.parent
        if feed is None or parent is None:
            return

        async def post(body: bytes) -> bytes:
            return await self.transport.post(parent.id, parent.url + SECURITY_REPORT_PATH, body)

        try:
            sent = await feed.forward(post)
        except (PeerUnavailable, FeedError) as exc:
            log.warning("SEC [%s] security report not delivered: %s", parent.id, exc)
            return
        if sent:
            log.info("SEC [%s] forwarded %d audit entries", parent.id, sent)

    async def sync_keys(self) -> None:
        """Tell the parent about rotations and revocations it has not acknowledged; fetch the
        parent's (so a revoked key is refused here too)."""
        if self.key_sync is None:
            return
        from node.key_sync import KeySyncError

        await self.key_sync.load()
        if self.config.parent is None:
            return
        try:
            await self.key_sync.forward_pending()
        except KeySyncError as exc:
            log.info("KEY key documents not delivered upward: %s", exc.message)
        await self.key_sync.pull_from_parent()

    def validator_for_origin(self, origin: str) -> RecordValidator:
        """The rules for records received from `origin`: with its province's local codes."""
        if self.validators is None:
            return self.validator
        return self.validators.for_origin(origin)

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        config: NodeConfig,
        *,
        clock: Clock | None = None,
        transport: Transport | None = None,
        key: NodeKey | None = None,
    ) -> Node:
        clock = clock or SystemClock.from_env()
        key = key or load_signing_key(config.node.key_file)
        db = Database(config.node.database)
        registry = CollectorRegistry()
        metrics = SyncMetrics(registry)
        sync_store = SyncStore(db)
        client_tls = client_context(config)
        known = dict(config.subtree_keys())
        peers_by_url: dict[str, str] = {}
        if config.parent is not None:
            known[config.parent.id] = config.parent.verify_key
            peers_by_url[config.parent.url] = config.parent.id
        for child in config.children:
            if child.url:  # children a parent sends requests to (federated queries)
                peers_by_url[child.url] = child.id
        keyring = KeyRing.from_keys(known)
        peer_auth = PeerAuth(
            config.node_id, Signer(config.node_id, key), keyring, clock, peers_by_url
        )
        transport = transport or HttpTransport(
            timeout_s=config.sync.request_timeout_s,
            ssl_context=client_tls,
            middlewares=(peer_auth.middleware,),
        )
        upstream = None
        if config.parent is not None:
            upstream = UpstreamQueue(
                node_id=config.node_id,
                parent=config.parent,
                key=key,
                store=sync_store,
                transport=transport,
                clock=clock,
                limits=config.limits,
                settings=config.sync,
                metrics=metrics,
            )
        node_ref: list[Node] = []

        def on_applied() -> None:
            if node_ref and node_ref[0].upstream is not None:
                node_ref[0].upstream.poke()

        def current_validator(origin: str) -> RecordValidator:
            return node_ref[0].validator_for_origin(origin) if node_ref else BuiltinValidator()

        receiver = PushReceiver(
            config=config,
            key=key,
            store=sync_store,
            clock=clock,
            metrics=metrics,
            on_applied=on_applied,
            validator=current_validator,
        )
        node = cls(
            config=config,
            key=key,
            db=db,
            clock=clock,
            registry=registry,
            metrics=metrics,
            store=NodeStore(db, cut_at_ingest(config, key)),
            sync_store=sync_store,
            receiver=receiver,
            upstream=upstream,
            transport=transport,
            keyring=keyring,
            peer_gate=PeerGate(window_s=2 * config.sync.max_clock_skew_s),
            peer_auth=peer_auth,
        )
        node_ref.append(node)
        receiver.keyring = keyring
        if upstream is not None:
            upstream.keyring = keyring
        node.key_sync = KeySync(node)
        peer_auth.on_announcement = node.key_sync.learn_from_header
        node.security = SecurityEvents(config, AuditLog(db, key, config.node_id, clock), registry)
        receiver.events = node.security
        if upstream is not None:
            upstream.events = node.security
        node.security_feed = SecurityFeed(config, db, key, node.security.audit, clock, registry)
        node.security_feed.keyring = keyring
        if config.standards.trusted_root is not None:
            node.rollout = RolloutView(config, registry)
            node.rollout.keyring = keyring
            node.standards = StandardsChannel(
                config=config,
                state_dir=config.standards.state_dir,
                clock=clock,
                registry=registry,
                on_release=node._release_in_force,
                ssl_context=client_tls,
            )
            node.standards.events = node.security
            node.standards.client_middlewares = (peer_auth.middleware,)
        node.stats = StatsService(node)
        node.ae_server = AntiEntropyServer(
            config=config,
            key=key,
            db=db,
            clock=clock,
            metrics=metrics,
            events=lambda: node.security,
            validator=current_validator,
            on_applied=on_applied,
        )
        node.restore_server = RestoreServer(
            config=config,
            key=key,
            db=db,
            clock=clock,
            metrics=metrics,
            events=lambda: node.security,
        )
        node.ae_server.gate.keyring = keyring
        node.restore_server.gate.keyring = keyring
        if upstream is not None:
            node.anti_entropy = AntiEntropy(
                config=config,
                key=key,
                db=db,
                sync_store=sync_store,
                transport=transport,
                clock=clock,
                metrics=AntiEntropyMetrics(registry),
                on_requeued=upstream.poke,
            )
        node.heartbeats = Heartbeats(node)
        book = node.heartbeats.resends
        receiver.repair_wanted = book.repair_wanted
        receiver.on_repaired = lambda origin, n: book.note_repaired(origin, n, clock.time_ms())
        node._gauges["info"] = Gauge(
            "lsnet_node_info", "Node identity", ["node", "level", "version"], registry=registry
        )
        node._gauges["info"].labels(config.node_id, config.level.value, SOFTWARE_VERSION).set(1)
        node._gauges["records"] = Gauge(
            "lsnet_records", "Records held, by owner", ["origin"], registry=registry
        )
        return node

    async def init_database(self) -> bool:
        """Create or upgrade the schema and the epoch row. True if the epoch was new."""
        await asyncio.to_thread(self.db.migrate)
        _, created = await self.store.init_meta(self.config.node_id, self.clock.time_ms())
        return created

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self, *, serve: bool = True, apply_process_default: bool = False) -> None:
        """Open for business. `apply_process_default` is what an unset `[sync] apply_process`
        means: `lsnet node run` passes True (a node alone in its process), in-process networks
        keep the default False."""
        self.db.check_schema()
        meta = await self.store.meta()  # raises if the database was never initialised
        if meta.node_id != self.config.node_id:
            raise NodeStateError(
                f"this database belongs to node {meta.node_id}, not {self.config.node_id}; "
                "check 'database' in the configuration"
            )
        self.started_monotonic = time.monotonic()
        if self.key_sync is not None:
            await self.key_sync.load()
        if self.security is not None:
            await self.security.emit(
                AuditKind.CONFIG_LOADED,
                code="start",
                detail={
                    "level": self.config.level.value,
                    "parent": self.config.parent.id if self.config.parent else "",
                    "children": len(self.config.children),
                    "standards": self.standards is not None,
                    "tls": self.config.tls.enabled,
                    "version": SOFTWARE_VERSION,
                },
            )
        wanted = self.config.sync.apply_process
        if wanted is None:
            wanted = apply_process_default and len(os.sched_getaffinity(0)) >= 2
        if wanted and self.config.children:
            await self._start_apply_process()
        if serve:
            from node.http_api import build_app

            self.runner = web.AppRunner(
                build_app(self), access_log=None, handle_signals=False, shutdown_timeout=2.0
            )
            await self.runner.setup()
            site = web.TCPSite(
                self.runner,
                self.config.node.host,
                self.config.node.port,
                reuse_address=True,
                ssl_context=server_context(self.config),
            )
            await site.start()
        if self.heartbeats is not None:  # before the upstream queue: it honours a persisted pause
            await self.heartbeats.start()
        if self.upstream is not None:
            await self.promote_kept()  # the release may have changed while the node was down
            await self.upstream.start()
            upstream = self.upstream

            async def retry() -> None:
                upstream.poke()

            self.jobs.every("sync-retry", self.config.sync.retry_interval_s, retry)
            if self.anti_entropy is not None:
                anti_entropy = self.anti_entropy

                async def compare_with_parent() -> None:
                    await anti_entropy.run_once()

                self.jobs.every(
                    "anti-entropy", self.config.sync.anti_entropy_interval_s, compare_with_parent
                )
        if self.standards is not None:
            standards = self.standards
            self._note_release()

            async def poll_standards() -> None:
                await standards.refresh()

            self.jobs.every("standards-poll", self.config.standards.poll_interval_s, poll_standards)
            self._background.append(asyncio.create_task(poll_standards()))
            if self.config.parent is not None:
                self._background.append(asyncio.create_task(standards.follow_parent()))
                self.jobs.every(
                    "standards-report", self.config.standards.poll_interval_s, self.report_rollout
                )
            else:

                async def watch_repository() -> None:
                    await standards.refresh_if_published()

                self.jobs.every("standards-watch", 1.0, watch_repository)
                if self.config.standards.online_keys is not None:
                    self.jobs.every("standards-timestamp", 600.0, self.keep_standards_fresh)
                    await self.keep_standards_fresh()
        if self.security_feed is not None and self.config.parent is not None:
            self.jobs.every("security-report", REPORT_INTERVAL_S, self.report_security)
        if self.key_sync is not None:
            self.jobs.every("key-sync", self.config.sync.key_sync_interval_s, self.sync_keys)
        self.jobs.every("refresh-gauges", 15.0, self.refresh_gauges)
        self.jobs.start()
        log.info(
            "node %s (%s) up on %s, epoch %s",
            self.config.node_id,
            self.config.level.value,
            self.config.node.listen,
            meta.epoch,
        )

    async def stop(self) -> None:
        self.jobs.stop()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        if self.standards is not None:
            await self.standards.close()
        if self.upstream is not None:
            await self.upstream.stop()
        if self.standards is not None:
            self.standards.release_waiters()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.apply_worker is not None:
            self.receiver.apply_worker = None
            self.metrics.apply_process.set(0)
            await asyncio.to_thread(self.apply_worker.stop)
            self.apply_worker = None
        await self.transport.close()
        await asyncio.to_thread(self.db.close)

    async def _start_apply_process(self) -> None:
        """Start the process that writes received pushes (`[sync] apply_process`, ADR 0014)."""
        url = self.config.node.database
        if is_sqlite(url) and sqlite_path(url) is None:
            log.warning(
                "[sync] apply_process needs a database file or server, not an in-memory "
                "database; received pushes are applied in this process"
            )
            return
        worker = ApplyWorker(url)
        loop = asyncio.get_running_loop()

        def down() -> None:  # the reply thread saw the child end unasked
            self.metrics.apply_process_ended.inc()  # counted before the gauge drops
            self.metrics.apply_process.set(0)
            loop.call_soon_threadsafe(self._restart_apply_process_later)

        worker.on_down = down
        try:
            await asyncio.to_thread(worker.start)
        except ApplyWorkerDown as exc:
            log.error("%s; received pushes are applied in this process", exc)
            return
        self.apply_worker = worker
        self.receiver.apply_worker = worker
        self._apply_started = time.monotonic()
        self.metrics.apply_process.set(1)
        log.info("received pushes are written by the apply process (pid %s)", worker.pid)

    def _restart_apply_process_later(self) -> None:
        """Start a new apply process after a pause that doubles (up to a minute) while children
        keep ending within a minute of their start; pushes are written here meanwhile."""
        worker = self.apply_worker
        if worker is None or worker.running:
            return
        now = time.monotonic()
        quick_death = now - self._apply_started < APPLY_RESTART_MAX_S
        doubled = min(max(self._apply_delay * 2, APPLY_RESTART_S), APPLY_RESTART_MAX_S)
        self._apply_delay = doubled if quick_death else APPLY_RESTART_S

        async def restart() -> None:
            await asyncio.sleep(self._apply_delay)
            if self.apply_worker is not worker or worker.running:
                return
            try:
                await asyncio.to_thread(worker.start)
            except ApplyWorkerDown as exc:
                log.error("%s; trying again later", exc)
                self._apply_started = time.monotonic()
                self._restart_apply_process_later()
                return
            self._apply_started = time.monotonic()
            self.metrics.apply_process.set(1)
            log.warning("apply process restarted (pid %s)", worker.pid)

        self._background.append(asyncio.create_task(restart()))

    # -- use cases -------------------------------------------------------------------------------
    def _release_in_force(self, version: int, data: bytes, extensions: Mapping[str, bytes]) -> None:
        """A verified standards release (or extension) is now in force here: validate with it."""
        try:
            self.validators = Validators(self.config, data, extensions)
            self.validator = self.validators.own()
        except StandardsError as exc:  # signed but unusable: keep the rules in force
            log.error("standards release %d is signed but cannot be used: %s", version, exc)
            return
        self.standards_version = self.validator.standards_id
        self._note_release()
        if self.started_monotonic:  # a type that was `local` may replicate now
            self._background.append(asyncio.create_task(self.promote_kept()))
            # Records held aside as invalid may pass with the new rules (sync.held).
            self._background.append(asyncio.create_task(self.recheck_held()))

    async def recheck_held(self) -> None:
        """Apply the held poison records that the rules in force now accept; audit the count."""
        from network_mgmt.held_actions import recheck
        from network_mgmt.link_admin import LinkAdmin

        result = await recheck(
            LinkAdmin(self.db),
            self.validator_for_origin,
            f"re-checked with {self.standards_version}",
            self.clock.time_ms,
        )
        if (result.released or result.still_held) and self.security is not None:
            await self.security.emit(
                AuditKind.RECORDS_HELD,
                code="recheck",
                detail={"released": result.released, "still_held": result.still_held},
            )

    async def promote_kept(self) -> None:
        """Send up the records kept here whose type the release in force now replicates."""
        promoted = await self.db.write(
            promote_kept_txn, local_record_types(self.validator), self.clock.time_ms()
        )
        if promoted:
            log.info("%d kept records now replicate (replication mode changed)", promoted)
            if self.upstream is not None:
                self.upstream.poke()

    async def ingest(
        self, recs: list[ValidRecord], warnings: list[tuple[Issue, ...]] | None = None
    ) -> IngestResult:
        """Write local records (one transaction) with their validation warnings; push soon."""
        result = await self.store.ingest(
            recs,
            self.clock.time_ms(),
            self.standards_version,
            warnings,
            local_record_types(self.validator),  # replication mode `local`: kept here
        )
        if result.changed and self.upstream is not None:
            self.upstream.poke()
        return result

    async def refresh_gauges(self) -> None:
        view = await self.store.status()
        self.metrics.backlog.set(view.backlog_changes if self.config.parent else 0)
        has_parent = self.config.parent is not None
        self.metrics.lag_seconds.set(view.lag_seconds(self.clock.time_ms()) if has_parent else 0)
        for origin, count in view.records_by_origin.items():
            self._gauges["records"].labels(origin).set(count)
        for origin, epochs in view.watermarks.items():
            if origin == self.config.node_id:
                continue
            self.metrics.watermark.labels(origin).set(max(epochs.values()))

    async def status_dict(self) -> dict[str, Any]:
        """The status document served at /v1/status and printed by `lsnet status --json`."""
        view = await self.store.status()
        link = self.upstream.state if self.upstream is not None else None
        doc = status_document(self.config, view, link, self.clock.time_ms())
        if self.anti_entropy is not None:
            last = self.anti_entropy.last
            doc["anti_entropy"] = last.as_dict() if last is not None else None
        if self.standards is not None:
            expires = self.standards.client.expires()
            doc["standards"] = {
                "release": self.standards.version or None,
                "expires": expires.isoformat() if expires else None,
                "last_error": self.standards.last_error,
            }
        else:
            doc["standards"] = {"release": None, "builtin": BUILTIN_STANDARDS}
        worker = self.apply_worker  # ADR 0014: who writes received pushes
        doc["apply_process"] = (
            {"running": worker.running, "pid": worker.pid if worker.running else None}
            if worker is not None
            else None
        )
        return doc


def status_document(
    config: NodeConfig, view: StatusView, link: LinkState | None, now_ms: int
) -> dict[str, Any]:
    meta = view.meta
    lag_s = view.lag_seconds(now_ms) if config.parent is not None else None
    return {
        "node": config.node_id,
        "name": config.node.name,
        "level": config.level.value,
        "epoch": meta.epoch,
        "records_by_origin": dict(sorted(view.records_by_origin.items())),
        "records_total": sum(view.records_by_origin.values()),
        "watermarks": {o: dict(e) for o, e in sorted(view.watermarks.items())},
        "local_last_seq": meta.last_seq,
        "backlog": view.backlog_changes if config.parent is not None else 0,
        "backlog_batches": view.backlog_batches if config.parent is not None else 0,
        "quarantined_batches": view.quarantined,
        "lag_seconds": lag_s,
        "parent": None
        if config.parent is None
        else {
            "id": config.parent.id,
            "url": config.parent.url,
            "link_mode": link.mode if link else None,
            "failures": link.failures if link else 0,
            "last_success_ms": (link.last_success_ms or None) if link else None,
            "last_error": (link.last_error or None) if link else None,
        },
    }
