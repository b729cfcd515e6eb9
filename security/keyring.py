"""Which public key of which node may be trusted for what, and when (issue 4, item 4).

A node's view of the keys of its neighbours and of its subtree: the key each node was enrolled
with (from the hierarchy configuration), every rotation announced since (each new key announced
and signed by the old one, with an overlap window during which both are accepted), and every
revocation received from anywhere in the tree.

Pure state: no database, no clock, no network. `KeyRing.check` answers "may a message signed
now by (node, kid) be trusted?" with the key or a `KeyRefused` naming the precise reason;
`KeyRing.check_at` answers the same question for something signed in the past (a stored batch
created before a rotation stays verifiable with the old key; a revoked key verifies nothing new).

Persistence of rotations and revocations is `security.key_store`; the HTTP and batch checks
that use this are `node.peer_auth` and `sync.verify`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from nacl.signing import VerifyKey

from security.keys import key_id


class KeyCode(StrEnum):
    """Why a key is refused; these codes cross the wire as error codes."""

    UNKNOWN_KEY = "unknown_key"
    KEY_REVOKED = "key_revoked"
    KEY_EXPIRED = "key_expired"
    KEY_NOT_YET_VALID = "key_not_yet_valid"


class KeyRefused(Exception):
    """A key that must not be trusted for this message."""

    def __init__(self, code: KeyCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One key of one node and the time window in which it signs new things.

    `valid_until_ms` is set when the key was rotated away (the end of the overlap window);
    `revoked_ms` when it was revoked (compromised): from then on nothing new signed with it is
    trusted, and nothing signed with it that was not already accepted either."""

    node_id: str
    kid: str
    verify_key: VerifyKey
    valid_from_ms: int = 0
    valid_until_ms: int | None = None
    revoked_ms: int | None = None
    reason: str = ""

    def usable_at(self, at_ms: int) -> KeyCode | None:
        """None if the key may sign something at `at_ms`, else why not."""
        if self.revoked_ms is not None:
            return KeyCode.KEY_REVOKED
        if at_ms < self.valid_from_ms:
            return KeyCode.KEY_NOT_YET_VALID
        if self.valid_until_ms is not None and at_ms > self.valid_until_ms:
            return KeyCode.KEY_EXPIRED
        return None


class KeyRing:
    """Keys by node id and key id. Not thread-safe; one per node, used on its event loop."""

    def __init__(self, entries: Iterable[KeyEntry] = ()) -> None:
        self._by_node: dict[str, dict[str, KeyEntry]] = {}
        # Revocations of keys not (yet) known here: applied when the key shows up.
        self._pending: dict[tuple[str, str], tuple[int, str]] = {}
        for entry in entries:
            self.put(entry)

    @classmethod
    def from_keys(cls, keys: Mapping[str, VerifyKey]) -> KeyRing:
        """The enrolled keys (node id → key) with no time limits."""
        return cls(KeyEntry(n, key_id(k), k) for n, k in keys.items())

    def put(self, entry: KeyEntry) -> None:
        """Add or replace one entry (a revocation recorded earlier is never undone)."""
        pending = self._pending.pop((entry.node_id, entry.kid), None)
        if pending is not None and entry.revoked_ms is None:
            entry = replace(entry, revoked_ms=pending[0], reason=pending[1])
        per_node = self._by_node.setdefault(entry.node_id, {})
        old = per_node.get(entry.kid)
        if old is not None and old.revoked_ms is not None and entry.revoked_ms is None:
            entry = replace(entry, revoked_ms=old.revoked_ms, reason=old.reason)
        per_node[entry.kid] = entry

    def knows(self, node_id: str) -> bool:
        return node_id in self._by_node

    def entry(self, node_id: str, kid: str) -> KeyEntry | None:
        return self._by_node.get(node_id, {}).get(kid)

    def entries(self, node_id: str | None = None) -> list[KeyEntry]:
        if node_id is not None:
            return list(self._by_node.get(node_id, {}).values())
        return [e for per in self._by_node.values() for e in per.values()]

    def check(self, node_id: str, kid: str, now_ms: int) -> VerifyKey:
        """The key for a message `node_id` signs now with `kid`, or KeyRefused."""
        return self.check_at(node_id, kid, now_ms)

    def check_at(self, node_id: str, kid: str, at_ms: int) -> VerifyKey:
        """The key for something `node_id` signed with `kid` at `at_ms`, or KeyRefused."""
        entry = self.entry(node_id, kid)
        if entry is None:
            if node_id in self._by_node:
                known = ", ".join(sorted(self._by_node[node_id]))
                raise KeyRefused(
                    KeyCode.UNKNOWN_KEY,
                    f"key {kid} is not a key of node {node_id} known here (known: {known})",
                )
            raise KeyRefused(KeyCode.UNKNOWN_KEY, f"node {node_id} is not enrolled here")
        problem = entry.usable_at(at_ms)
        if problem is KeyCode.KEY_REVOKED:
            why = f" ({entry.reason})" if entry.reason else ""
            raise KeyRefused(problem, f"key {kid} of node {node_id} was revoked{why}")
        if problem is KeyCode.KEY_EXPIRED:
            raise KeyRefused(
                problem,
                f"key {kid} of node {node_id} was replaced and stopped signing at "
                f"{entry.valid_until_ms} ms; it signed this at {at_ms} ms",
            )
        if problem is KeyCode.KEY_NOT_YET_VALID:
            raise KeyRefused(
                problem,
                f"key {kid} of node {node_id} is valid from {entry.valid_from_ms} ms; "
                f"this was signed at {at_ms} ms",
            )
        return entry.verify_key

    def usable_keys(self, node_id: str, now_ms: int) -> list[VerifyKey]:
        """Every key `node_id` may sign new things with now (two during a rotation overlap)."""
        return [
            e.verify_key
            for e in self._by_node.get(node_id, {}).values()
            if e.usable_at(now_ms) is None
        ]

    def current(self, node_id: str, now_ms: int) -> KeyEntry | None:
        """The newest key of `node_id` usable now, or None."""
        usable = [e for e in self._by_node.get(node_id, {}).values() if e.usable_at(now_ms) is None]
        return max(usable, key=lambda e: e.valid_from_ms) if usable else None

    def rotate(
        self, node_id: str, old_kid: str, new_key: VerifyKey, at_ms: int, overlap_ms: int
    ) -> KeyEntry:
        """Record that `node_id` replaced `old_kid` by `new_key` at `at_ms`; the old key keeps
        signing new things for `overlap_ms` more. Idempotent for the same new key."""
        old = self.entry(node_id, old_kid)
        if old is None:
            raise KeyRefused(KeyCode.UNKNOWN_KEY, f"node {node_id} has no key {old_kid} here")
        new_kid = key_id(new_key)
        existing = self.entry(node_id, new_kid)
        if existing is not None:
            return existing
        until = at_ms + overlap_ms
        if old.valid_until_ms is None or old.valid_until_ms > until:
            self.put(replace(old, valid_until_ms=until))
        entry = KeyEntry(node_id, new_kid, new_key, valid_from_ms=at_ms)
        self.put(entry)
        return entry

    def revoke(self, node_id: str, kid: str, at_ms: int, reason: str) -> bool:
        """Mark a key revoked; False if it was already revoked. A key not known here is
        remembered as revoked, so it is refused if it is ever announced."""
        entry = self.entry(node_id, kid)
        if entry is None:
            if (node_id, kid) in self._pending:
                return False
            self._pending[(node_id, kid)] = (at_ms, reason)
            return True
        if entry.revoked_ms is not None:
            return False
        self.put(replace(entry, revoked_ms=at_ms, reason=reason))
        return True


def trusted_keys(
    ring: KeyRing | None, node_id: str, enrolled: VerifyKey, now_ms: int
) -> list[VerifyKey]:
    """The keys `node_id` may sign with now: from the ring when there is one (a rotation adds
    the new key, a revocation removes a key), else the enrolled key from the configuration."""
    if ring is None or not ring.knows(node_id):
        return [enrolled]
    return ring.usable_keys(node_id, now_ms)
