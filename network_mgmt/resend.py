"""A parent's operator asks a child to send an origin's batches again from a seq, and the parent
takes them as a repair.

The child holds the signed batches (its own, or relayed ones of its subtree); the parent cannot
fetch them, so the request rides on the answer to the child's next heartbeat (it already carries
a signed control channel downward) until the child acknowledges it in a later heartbeat
(`extra["resend_ack"]`, the highest request id it carried out). The child re-queues those
batches (`network_mgmt.link_admin.resend_from_txn`), audits the request with the parent's name,
and sends them as usual.

Batches at or below the parent's watermark would normally be duplicates and change nothing. For
a while after the request (`REPAIR_WINDOW_MS`), batches of that origin reaching the requested
seq are applied through the anti-entropy repair path instead (`sync.ae_store.repair_txn`):
missing or differing records are re-upserted with the version guard and a missing stored batch
is stored again — what an operator wants after finding rows damaged or lost behind the
system's back, without waiting for the next anti-entropy round.

`ResendBook` is in-memory bookkeeping (pure; no I/O): a restart of the parent forgets requests
not yet acknowledged (the operator asks again; the list shows what is pending). Request ids are
the parent's clock in ms, strictly increasing, so ids after a restart stay above old ones.
What this does not do: authenticate or audit the operator (`network_mgmt.admin_api`), carry the
request (`network_mgmt.heartbeat`), or apply anything (`sync.receiver`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from network_mgmt.heartbeat_wire import MAX_RESEND_REQUESTS as MAX_PENDING_PER_CHILD

REPAIR_WINDOW_MS = 10 * 60_000


@dataclass(frozen=True)
class ResendRequest:
    request_id: int
    child: str  # the direct child asked
    origin: str  # whose batches: the child itself or a node of its subtree
    from_seq: int
    operator: str
    reason: str
    requested_ms: int
    acknowledged_ms: int = 0
    repaired_batches: int = 0

    def document(self) -> dict[str, object]:
        return {
            "request_id": self.request_id,
            "child": self.child,
            "origin": self.origin,
            "from_seq": self.from_seq,
            "operator": self.operator,
            "reason": self.reason,
            "requested_ms": self.requested_ms,
            "state": "acknowledged" if self.acknowledged_ms else "pending",
            "acknowledged_ms": self.acknowledged_ms or None,
            "repaired_batches": self.repaired_batches,
        }


class TooManyRequests(Exception):
    """The child already has MAX_PENDING_PER_CHILD requests waiting."""


@dataclass
class ResendBook:
    requests: list[ResendRequest] = field(default_factory=list)
    _last_id: int = 0

    def ask(
        self, child: str, origin: str, from_seq: int, operator: str, reason: str, now_ms: int
    ) -> ResendRequest:
        if len(self.pending(child)) >= MAX_PENDING_PER_CHILD:
            raise TooManyRequests(f"{MAX_PENDING_PER_CHILD} requests already wait for {child}")
        self._last_id = max(self._last_id + 1, now_ms)
        req = ResendRequest(self._last_id, child, origin, from_seq, operator, reason, now_ms)
        self.requests.append(req)
        del self.requests[:-200]  # keep the recent history only
        return req

    def pending(self, child: str) -> list[ResendRequest]:
        """Requests for `child` it has not acknowledged yet (carried by every answer)."""
        return [r for r in self.requests if r.child == child and not r.acknowledged_ms]

    def acknowledge(self, child: str, upto_id: int, now_ms: int) -> list[ResendRequest]:
        """The child says it carried out every request up to `upto_id`; returns those."""
        done = []
        for i, r in enumerate(self.requests):
            if r.child == child and not r.acknowledged_ms and r.request_id <= upto_id:
                self.requests[i] = replace(r, acknowledged_ms=now_ms)
                done.append(self.requests[i])
        return done

    def repair_wanted(self, origin: str, last_seq: int, now_ms: int) -> bool:
        """Whether a received batch of `origin` ending at `last_seq` is to be taken as a repair."""
        return any(
            r.origin == origin
            and last_seq >= r.from_seq
            and now_ms - r.requested_ms <= REPAIR_WINDOW_MS
            for r in self.requests
        )

    def note_repaired(self, origin: str, batches: int, now_ms: int) -> None:
        for i, r in enumerate(self.requests):
            if r.origin == origin and now_ms - r.requested_ms <= REPAIR_WINDOW_MS:
                self.requests[i] = replace(r, repaired_batches=r.repaired_batches + batches)
