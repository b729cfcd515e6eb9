"""The two error families of sync: domain errors (something is wrong with what was sent) and
expected network failures (the peer could not be reached or answered badly)."""

from __future__ import annotations

from sync.wire import Code


class SyncError(Exception):
    """Base of domain errors in replication."""


class BatchRejected(SyncError):
    """A batch fails a check; `code` says which, the message says why."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ApplyFailed(SyncError):
    """Verified batches could not be written (the database failed, or the apply process of
    `sync.apply_worker` did): nothing of the push is written and the sender should retry."""


class PeerUnavailable(Exception):
    """The peer could not be reached or gave no usable answer. `can_retry` is True when the same
    transfer may succeed later unchanged (timeouts, refused connections, 5xx)."""

    def __init__(self, peer: str, message: str, *, can_retry: bool = True) -> None:
        super().__init__(f"[{peer}] {message}")
        self.peer = peer
        self.can_retry = can_retry


class PeerRejected(PeerUnavailable):
    """The peer answered with a 4xx error body: a stable `code`, a message and, when one batch of
    the transfer was the cause, its index."""

    def __init__(
        self, peer: str, status: int, code: str, message: str, batch_index: int | None
    ) -> None:
        super().__init__(peer, f"HTTP {status} {code}: {message}", can_retry=status in (408, 429))
        self.status = status
        self.code = code
        self.message = message
        self.batch_index = batch_index
