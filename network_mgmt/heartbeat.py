"""Heartbeats: each node tells its parent, signed and on a schedule, how it and its subtree are.

`Heartbeats` is one node's side of it:
- **send** (job `heartbeat`, every `network.heartbeat_interval_s`): this node's live status
  plus the latest status of every node of its subtree, to the parent; the parent's signed reply
  carries its clock, from which the clock offset is measured;
- **receive** (`accept`): verify a child's heartbeat (`heartbeat_wire.check_heartbeat`), keep its
  statuses in memory (`tree.TreeState`) and in `node_status` (one upsert per node), answer;
- **watch** (job `heartbeat-watch`): judge health (a child missing `down_after_missed`
  heartbeats is down), log transitions — a node going down and recovering — count them and keep
  the per-node gauges (`lsnet_node_up{node}`, …) current.

What this does not do: decide trust rules (the wire module does), serve HTTP documents
(`network_mgmt.tree_api`), or compute alerts (`network_mgmt.alerts`). Health is judged on this
node's clock only; a child's own clock matters only through its measured offset.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from sqlalchemy import Connection, select

from network_mgmt.heartbeat_wire import (
    HEARTBEAT_PATH,
    MAX_QUARANTINE_SAMPLE,
    Heartbeat,
    HeartbeatRejected,
    HeartbeatReply,
    HeartbeatUnauthenticated,
    NodeStatus,
    QuarantinedBatch,
    RecentError,
    check_heartbeat,
    check_reply,
    clock_offset_ms,
    make_heartbeat,
    make_reply,
    new_nonce,
)
from network_mgmt.link_admin import LinkAdmin
from network_mgmt.metrics import HeartbeatMetrics
from network_mgmt.probe import ProbeSeen, probes_txn, write_probe_txn
from network_mgmt.resend import ResendBook
from network_mgmt.tree import DOWN, UP, Seen, TreeState
from node.schema import node_status
from node.store import insert_for
from security.audit import AuditKind
from sync.errors import PeerUnavailable
from sync.wire import PROTOCOL_VERSION, Code

if TYPE_CHECKING:
    from node.app import Node

log = logging.getLogger("lsnet.network")


def _store_txn(conn: Connection, rows: list[Seen]) -> None:
    ins = insert_for(conn)
    for seen in rows:
        values = {
            "via": seen.via,
            "status": json.dumps(seen.status.to_wire(), sort_keys=True),
            "received_ms": seen.received_ms,
        }
        stmt = ins(node_status).values(node_id=seen.status.node_id, **values)
        conn.execute(
            stmt.on_conflict_do_update(index_elements=[node_status.c.node_id], set_=values)
        )


def _load_txn(conn: Connection) -> list[Seen]:
    out = []
    for row in conn.execute(select(node_status)):
        try:
            status = NodeStatus.from_wire(json.loads(row.status))
        except Exception:  # a row written by another version: skip, the next heartbeat refreshes
            continue
        out.append(Seen(status, row.received_ms, row.via))
    return out


def _counter_total(counter: Counter | None) -> int:
    if counter is None:
        return 0
    return int(
        sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))
    )


class Heartbeats:
    def __init__(self, node: Node) -> None:
        settings = node.config.network
        self.node = node
        self.config = node.config
        self.tree = TreeState(
            node.config, settings.heartbeat_interval_s, settings.down_after_missed
        )
        self.metrics = HeartbeatMetrics(node.registry)
        self.admin = LinkAdmin(node.db)
        self.resends = ResendBook()  # as a parent: requests for batches again (network_mgmt.resend)
        self.resend_ack = 0  # as a child: the highest request id carried out
        self.offset_ms: int | None = None
        self.last_ok_ms = 0
        self.last_error = ""
        self.last_error_ms = 0
        self.started_s = 0.0
        self.transitions: deque[dict[str, Any]] = deque(maxlen=200)
        self._health: dict[str, str] = {}
        self._last_sent: dict[str, int] = {}  # per direct child: newest heartbeat accepted

    # -- life cycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        node = self.node
        self.started_s = node.clock.monotonic()
        self.tree.load(await node.db.read(_load_txn))
        self._health = self.tree.healths(node.clock.time_ms())
        if node.upstream is not None:
            node.upstream.paused = (await self.admin.control(node.upstream.parent.id)).paused
        interval = self.config.network.heartbeat_interval_s
        if self.config.parent is not None:
            node.jobs.every("heartbeat", interval, self.send_job)
        node.jobs.every("heartbeat-watch", min(interval, 5.0), self.watch)
        probe_s = self.config.network.e2e_probe_interval_s
        if self.config.parent is not None and probe_s > 0:
            node.jobs.every("e2e-probe", probe_s, self.write_probe)

    async def write_probe(self) -> None:
        """Append an end-to-end probe to the change log; it travels upward with the data."""
        node = self.node
        await node.db.write(write_probe_txn, node.clock.time_ms(), node.standards_version)
        if node.upstream is not None:
            node.upstream.poke()

    async def probes(self) -> dict[str, ProbeSeen]:
        return await self.node.db.read(probes_txn)

    def _with_probes(self, entry: dict[str, Any], probes: dict[str, ProbeSeen], now: int) -> None:
        seen = probes.get(entry["node_id"])
        if seen is not None:
            entry["e2e_lag_s"] = round((seen.arrived_ms - seen.sent_ms) / 1000.0, 3)
            entry["e2e_age_s"] = round(max(0, now - seen.sent_ms) / 1000.0, 3)
        else:
            entry.setdefault("e2e_age_s", None)

    # -- own status ------------------------------------------------------------------------------
    def _apply_process(self) -> dict[str, int]:
        """`apply_process`: 1 while this node's apply process writes received pushes (ADR 0014),
        0 while it has one configured that is not running (ended; restarted by itself); absent
        when it has none."""
        worker = self.node.receiver.apply_worker
        return {} if worker is None else {"apply_process": 1 if worker.running else 0}

    async def own_status(self) -> NodeStatus:
        node = self.node
        now = node.clock.time_ms()
        view = await self.admin.backlog()
        node.metrics.held_waiting.set(view.held_records)  # authoritative: from the database
        up = node.upstream
        errors = list(up.recent_errors)[-5:] if up is not None else []
        if self.last_error:
            errors = [*errors[-4:], (self.last_error_ms, self.last_error)]
        security = node.security.events if node.security is not None else None
        size = node.db.size_bytes()
        sample = (
            await self.admin.quarantined(include_skipped=False, limit=MAX_QUARANTINE_SAMPLE)
            if view.held
            else []
        )
        return NodeStatus(
            node_id=self.config.node_id,
            parent=self.config.parent.id if self.config.parent else "",
            level=self.config.level.value,
            name=self.config.node.name,
            software_version=_software_version(),
            protocol_version=PROTOCOL_VERSION,
            release=node.standards_version,
            reported_ms=now,
            uptime_ms=int(max(0.0, node.clock.monotonic() - self.started_s) * 1000),
            backlog=view.changes if up is not None else 0,
            lag_ms=view.lag_ms(now) if up is not None else 0,
            last_push_ms=up.state.last_success_ms if up is not None else 0,
            db_bytes=size if size is not None else -1,
            errors=up.error_count if up is not None else 0,
            security_events=_counter_total(security),
            quarantined=view.held,
            link_mode=self.link_mode(),
            next_retry_ms=up.state.backoff_until_ms if up is not None else 0,
            clock_offset_ms=self.offset_ms,
            e2e_lag_ms=None,
            recent_errors=tuple(RecentError(t, m[:500]) for t, m in errors),
            health=UP,
            last_seen_ms=now,
            extra={
                "release_expires_ms": self._release_expires_ms(),
                "held_records": view.held_records,
                "resend_ack": self.resend_ack,
                **self._apply_process(),
            },
            quarantine=tuple(
                QuarantinedBatch(
                    q["batch_id"],
                    q["origin"],
                    q["first_seq"],
                    q["last_seq"],
                    q["code"],
                    q["reason"][:200],
                    q["time_ms"],
                )
                for q in sample
            ),
        )

    def _release_expires_ms(self) -> int:
        """When this node's verified standards metadata expires (0 = unknown or built-in)."""
        standards = self.node.standards
        expires = standards.client.expires() if standards is not None else None
        return int(expires.timestamp() * 1000) if expires is not None else 0

    def link_mode(self) -> str:
        up = self.node.upstream
        if up is None:
            return ""
        return "paused" if up.paused else up.state.mode

    # -- sending ---------------------------------------------------------------------------------
    async def send_job(self) -> None:
        await self.send()

    async def send(self) -> bool:
        """One heartbeat to the parent. True when the parent acknowledged it."""
        node, parent = self.node, self.config.parent
        if parent is None:
            return False
        own = await self.own_status()
        nonce = new_nonce()
        sent = node.clock.time_ms()
        hb = Heartbeat(self.config.node_id, parent.id, sent, nonce, (own, *self.tree.forward(sent)))
        body = make_heartbeat(node.key, hb)
        try:
            answer = await node.transport.post(parent.id, parent.url + HEARTBEAT_PATH, body)
            reply = check_reply(
                self.config, answer, nonce, self.node.keyring, self.node.clock.time_ms()
            )
        except (PeerUnavailable, HeartbeatRejected) as exc:
            self.metrics.failed.inc()
            self.last_error = f"heartbeat: {exc}"
            self.last_error_ms = node.clock.time_ms()
            log.info("HB [%s] heartbeat not delivered: %s", parent.id, exc)
            return False
        received = node.clock.time_ms()
        self.offset_ms = clock_offset_ms(sent, received, reply.parent_ms, reply.received_ms)
        self.last_ok_ms = received
        self.last_error = ""
        self.metrics.sent.inc()
        self.metrics.last_ok.set(received / 1000.0)
        if reply.resend:
            await self._carry_out(reply.resend)
        return True

    async def _carry_out(self, requests: tuple[tuple[int, str, int], ...]) -> None:
        """The parent's operator asked for batches again: re-queue them, audit, send."""
        node, parent = self.node, self.config.parent
        assert parent is not None
        for request_id, origin, from_seq in requests:
            if request_id <= self.resend_ack:
                continue  # carried out already; the parent has not seen the acknowledgement yet
            mine = origin == self.config.node_id or self.config.route_of(origin) is not None
            count = await self.admin.resend_from(origin, None, from_seq) if mine else 0
            log.warning(
                "HB [%s] parent asks for %s from seq %d again: %s",
                parent.id,
                origin,
                from_seq,
                f"{count} batches re-queued" if mine else "not an origin of this subtree",
            )
            if node.security is not None:
                await node.security.emit(
                    AuditKind.OPERATOR_ACTION,
                    peer=parent.id,
                    code="resend_requested" if mine else "resend_refused",
                    detail={
                        "operator": f"parent {parent.id}",
                        "request_id": request_id,
                        "origin": origin,
                        "from_seq": from_seq,
                        "batches": count,
                    },
                )
            self.resend_ack = max(self.resend_ack, request_id)
        if node.upstream is not None:
            node.upstream.poke()

    # -- receiving -------------------------------------------------------------------------------
    async def accept(self, body: bytes) -> bytes:
        """Verify and keep a child's heartbeat; return the signed reply (or HeartbeatRejected)."""
        node = self.node
        now = node.clock.time_ms()
        skew_ms = int(self.config.sync.max_clock_skew_s * 1000)
        hb = check_heartbeat(self.config, body, now, skew_ms, self.node.keyring)
        last = self._last_sent.get(hb.sender)
        if last is not None and hb.sent_ms <= last:
            # A replayed heartbeat must not keep a dead node "up" (within the skew window).
            raise HeartbeatUnauthenticated(
                Code.REPLAY, "heartbeat is not newer than one already accepted from this node"
            )
        self._last_sent[hb.sender] = hb.sent_ms
        changed = self.tree.accept(hb, now)
        await node.db.write(_store_txn, changed)
        self.metrics.received.labels(hb.sender).inc()
        await self.watch()
        own = next((st for st in hb.nodes if st.node_id == hb.sender), None)
        if own is not None:
            for req in self.resends.acknowledge(hb.sender, own.extra.get("resend_ack", 0), now):
                log.info("HB [%s] carried out resend request %d", hb.sender, req.request_id)
        pending = tuple(
            (r.request_id, r.origin, r.from_seq) for r in self.resends.pending(hb.sender)
        )
        reply = HeartbeatReply(
            self.config.node_id,
            hb.sender,
            hb.nonce,
            node.clock.time_ms(),
            len(changed),
            now,
            pending,
        )
        return make_reply(node.key, reply)

    # -- watching --------------------------------------------------------------------------------
    async def watch(self) -> None:
        """Judge every node's health; log and count changes; refresh the per-node gauges."""
        now = self.node.clock.time_ms()
        for origin, seen in (await self.probes()).items():
            if origin in self.tree.places:
                self.metrics.e2e_lag.labels(origin).set((seen.arrived_ms - seen.sent_ms) / 1000.0)
                self.metrics.e2e_age.labels(origin).set(max(0, now - seen.sent_ms) / 1000.0)
        for node_id in self.tree.places:
            health, last_seen = self.tree.health(node_id, now)
            before = self._health.get(node_id)
            if before is not None and before != health:
                self._transition(node_id, before, health, now)
            self._health[node_id] = health
            self._gauges(node_id, health, last_seen)

    def _transition(self, node_id: str, before: str, health: str, now: int) -> None:
        self.metrics.transitions.labels(node_id, health).inc()
        self.transitions.append({"node_id": node_id, "from": before, "to": health, "time_ms": now})
        if health == UP:
            log.warning("HB [%s] recovered (was %s)", node_id, before)
        elif health == DOWN:
            log.warning(
                "HB [%s] is down: no heartbeat for %.0fs", node_id, self.tree.timeout_ms / 1000
            )
        else:
            log.warning("HB [%s] is %s (was %s)", node_id, health, before)

    def _gauges(self, node_id: str, health: str, last_seen: int | None) -> None:
        m = self.metrics
        m.up.labels(node_id).set(1 if health == UP else 0)
        seen = self.tree.seen.get(node_id)
        m.known.labels(node_id).set(1 if seen is not None or node_id == self.config.node_id else 0)
        if last_seen is not None:
            m.last_seen.labels(node_id).set(last_seen / 1000.0)
        if seen is None:
            return
        s = seen.status
        m.lag.labels(node_id).set(s.lag_ms / 1000.0)
        m.backlog.labels(node_id).set(s.backlog)
        m.quarantined.labels(node_id).set(s.quarantined)
        m.held_records.labels(node_id).set(s.extra.get("held_records", 0))
        m.security.labels(node_id).set(s.security_events)
        m.errors.labels(node_id).set(s.errors)
        if s.clock_offset_ms is not None:
            m.offset.labels(node_id).set(s.clock_offset_ms / 1000.0)

    # -- documents -------------------------------------------------------------------------------
    async def tree_document(self) -> dict[str, Any]:
        own = await self.own_status()
        now = self.node.clock.time_ms()
        doc = self.tree.document(own, now)
        probes = await self.probes()
        for entry in doc["nodes"]:
            self._with_probes(entry, probes, now)
        return doc

    async def node_document(self, node_id: str) -> dict[str, Any] | None:
        if node_id not in self.tree.places:
            return None
        now = self.node.clock.time_ms()
        own = await self.own_status()
        doc = self.tree.entry(node_id, own, now)
        self._with_probes(doc, await self.probes(), now)
        if node_id == self.config.node_id:
            doc["links"] = [self.link_document()] if self.node.upstream is not None else []
            doc["recent_errors"] = self.errors_document(20)
            doc["quarantined"] = await self.admin.quarantined(include_skipped=False, limit=100)
            doc["held_records"] = await self.admin.held_records(include_decided=False, limit=100)
            doc["transitions"] = list(self.transitions)[-50:]
            return doc
        seen = self.tree.seen.get(node_id)
        status = seen.status if seen else None
        doc["links"] = (
            [
                {
                    "peer": status.parent,
                    "mode": status.link_mode or None,
                    "next_retry_ms": status.next_retry_ms or None,
                    "last_error": status.recent_errors[-1].message
                    if status.recent_errors
                    else None,
                    "last_success_ms": status.last_push_ms or None,
                }
            ]
            if status is not None and status.parent
            else []
        )
        doc["recent_errors"] = (
            [asdict(e) for e in reversed(status.recent_errors)] if status is not None else []
        )
        # Remote nodes name their oldest quarantined batches (at most MAX_QUARANTINE_SAMPLE);
        # acting on them is done at that node.
        doc["quarantined"] = (
            [dict(asdict(q), range=[q.first_seq, q.last_seq]) for q in status.quarantine]
            if status is not None
            else []
        )
        doc["quarantined_count"] = status.quarantined if status is not None else None
        doc["held_records_count"] = status.extra.get("held_records") if status is not None else None
        doc["via"] = seen.via if seen else None
        return doc

    def link_document(self) -> dict[str, Any]:
        up = self.node.upstream
        assert up is not None
        st = up.state
        return {
            "peer": up.parent.id,
            "url": up.parent.url,
            "mode": self.link_mode(),
            "failures": st.failures,
            "next_retry_ms": st.backoff_until_ms or None,
            "last_success_ms": st.last_success_ms or None,
            "last_error": st.last_error or None,
            "last_error_ms": st.last_error_ms or None,
            "paused": up.paused,
            "in_flight": up.in_flight,
            "heartbeat_last_success_ms": self.last_ok_ms or None,
            "clock_offset_ms": self.offset_ms,
        }

    def errors_document(self, limit: int) -> list[dict[str, Any]]:
        up = self.node.upstream
        rows = list(up.recent_errors) if up is not None else []
        return [{"time_ms": t, "message": m} for t, m in reversed(rows[-limit:])]


def _software_version() -> str:
    from node.app import SOFTWARE_VERSION

    return SOFTWARE_VERSION
