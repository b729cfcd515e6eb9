"""Tamper-evident audit log of security-relevant events: one hash chain per node, every entry
signed by the node key.

Entry `n` stores `prev_hash` (the hash of entry `n-1`, 32 zero bytes for entry 1), `hash` =
SHA-256 over the canonical msgpack of every other field, and an Ed25519 signature of the node key
over `hash`. Editing, deleting, inserting or moving a row breaks the chain; re-hashing the chain
after an edit still fails on the signatures unless the editor also holds the node key.

Pure part (no database, no clock): `AuditKind`, `entry_hash`, `verify_chain` → `ChainReport`.
Database part: `AuditReader` (filters, verification in one read transaction) and `AuditLog`
(appends). `AuditLog.record` raises on any failure (`AuditInvalid` for arguments we refuse,
`AuditWriteError` when the database write fails): an audit failure is never silent, so callers
decide what a failed audit means for their own request.

What this does not do: it cannot show that the newest entries were cut off (truncation) unless
the caller supplies an anchor seen elsewhere (e.g. the head forwarded to the parent); it does not
stop a holder of the node key from rewriting the whole log; it does not forward events upward or
count them in metrics; it is no place for personal data (`detail` holds short codes, ids and
counts, and obviously personal keys are refused).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nacl.signing import VerifyKey
from sqlalchemy import Connection, select, text
from sqlalchemy.exc import SQLAlchemyError

from node.clock import Clock
from node.db import Database
from node.schema import audit_log
from security.keys import NodeKey, key_id
from security.signing import SignatureInvalid, sign, verify
from sync.wire import ZERO_HASH, packb

PURPOSE_AUDIT = "audit"  # domain of the entry signatures (see security.signing)
ENTRY_VERSION = 1
MAX_PEER_LEN = 128
MAX_CODE_LEN = 64
MAX_DETAIL_BYTES = 1024
MAX_DETAIL_VALUE_LEN = 200
MAX_LIST_LIMIT = 10_000
_CODE_RE = re.compile(r"^[a-z0-9_.:-]*$")
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_ID_NUMBER_RE = re.compile(r"^\d{17}[\dXx]$")  # a resident id number is personal data
# Detail keys that would carry personal data; a guard against mistakes, not a guarantee.
FORBIDDEN_DETAIL_KEYS = frozenset(
    {"payload", "record", "records", "name", "id_number", "idno", "wage", "wages", "phone"}
)


class AuditKind(StrEnum):
    """Closed set of event kinds in the audit log."""

    REQUEST_REJECTED = "request_rejected"
    BATCH_REJECTED = "batch_rejected"
    BATCH_QUARANTINED = "batch_quarantined"
    RECORDS_HELD = "records_held"  # poison records held aside by a receiver (sync.held)
    STANDARDS_REFUSED = "standards_refused"
    STANDARDS_PUBLISHED = "standards_published"
    STANDARDS_IN_FORCE = "standards_in_force"
    ENROLLMENT = "enrollment"
    KEY_ROTATED = "key_rotated"
    KEY_REVOKED = "key_revoked"
    OPERATOR_ACTION = "operator_action"
    CONFIG_LOADED = "config_loaded"
    STATS_QUERY = "stats_query"  # a federated statistics query issued or received (node.stats)


class BreakReason(StrEnum):
    """Why a chain is not intact, at its first broken seq."""

    CHANGED = "changed"  # the stored hash does not match the entry's content
    GAP = "gap"  # an entry is missing
    REORDERED = "reordered"  # entries were moved, duplicated or renumbered
    BAD_SIGNATURE = "bad_signature"  # content and hash agree, but not signed by the node key
    TRUNCATED = "truncated"  # the log ends before an anchor seen elsewhere
    FORKED = "forked"  # a signed entry differs from the anchor: rewritten with the key


class AuditError(Exception):
    """Base of audit log failures."""


class AuditInvalid(AuditError, ValueError):
    """An event we refuse to record (unknown kind, oversized or personal-looking detail)."""


class AuditWriteError(AuditError):
    """The database did not take the entry; the event is NOT recorded."""


@dataclass(frozen=True)
class AuditEntry:
    """One stored entry, exactly as read (text fields are not re-serialised)."""

    seq: int
    time_ms: int
    node: str
    kid: str
    kind: str
    peer: str
    code: str
    detail: str  # canonical JSON text, as hashed
    prev_hash: bytes
    hash: bytes
    signature: bytes

    def detail_map(self) -> dict[str, Any]:
        """The detail object; `{"_unparsable": text}` if the stored text is not a JSON object."""
        try:
            value = json.loads(self.detail) if self.detail else {}
        except ValueError:
            return {"_unparsable": self.detail}
        return value if isinstance(value, dict) else {"_unparsable": self.detail}

    def computed_hash(self, seq: int | None = None) -> bytes:
        return entry_hash(
            seq=self.seq if seq is None else seq,
            time_ms=self.time_ms,
            node=self.node,
            kid=self.kid,
            kind=self.kind,
            peer=self.peer,
            code=self.code,
            detail=self.detail,
            prev_hash=self.prev_hash,
        )


@dataclass(frozen=True)
class ChainReport:
    """Result of verifying a chain: intact, or the first broken seq and why."""

    entries: int  # entries verified intact, from seq 1
    head_seq: int  # seq of the last intact entry (0 if none)
    head_hash: bytes  # its hash (32 zero bytes if none); an anchor for later verifications
    broken_seq: int | None = None
    reason: BreakReason | None = None
    message: str = ""

    @property
    def intact(self) -> bool:
        return self.reason is None

    def summary(self) -> str:
        if self.intact:
            return f"{self.entries} entries, chain intact"
        return (
            f"chain broken at seq {self.broken_seq} ({self.reason}): {self.message}; "
            f"{self.entries} entries intact before it"
        )


# -- pure helpers ----------------------------------------------------------------------------------


def canonical_detail(detail: Mapping[str, str | int | bool] | None) -> str:
    """Canonical JSON text of a detail map; AuditInvalid if it is not small, flat and impersonal."""
    if not detail:
        return "{}"
    for k, v in detail.items():
        if not isinstance(k, str) or not _KEY_RE.match(k):
            raise AuditInvalid(f"detail key {k!r} must be a lower-case identifier")
        if k in FORBIDDEN_DETAIL_KEYS:
            raise AuditInvalid(f"detail key {k!r} would carry personal data; log codes and ids")
        if isinstance(v, bool):
            continue
        if isinstance(v, int):
            if not -(2**63) <= v < 2**63:
                raise AuditInvalid(f"detail {k!r}: integer out of range")
        elif isinstance(v, str):
            if len(v) > MAX_DETAIL_VALUE_LEN:
                raise AuditInvalid(f"detail {k!r}: at most {MAX_DETAIL_VALUE_LEN} characters")
            if _ID_NUMBER_RE.match(v):
                raise AuditInvalid(f"detail {k!r} looks like an id number (personal data)")
        else:
            raise AuditInvalid(f"detail {k!r}: values are str, int or bool, not {type(v).__name__}")
    out = json.dumps(dict(detail), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(out.encode("utf-8")) > MAX_DETAIL_BYTES:
        raise AuditInvalid(f"detail exceeds {MAX_DETAIL_BYTES} bytes")
    return out


def check_event(kind: AuditKind | str, peer: str, code: str) -> AuditKind:
    """Validate the event's kind, peer and code; return the kind."""
    try:
        parsed = AuditKind(kind)
    except ValueError:
        raise AuditInvalid(f"unknown audit event kind {kind!r}") from None
    if len(peer) > MAX_PEER_LEN or not peer.isprintable():
        raise AuditInvalid(f"peer must be at most {MAX_PEER_LEN} printable characters")
    if len(code) > MAX_CODE_LEN or not _CODE_RE.match(code):
        raise AuditInvalid(f"code {code!r} must be a short lower-case reason code")
    return parsed


def entry_hash(
    *,
    seq: int,
    time_ms: int,
    node: str,
    kid: str,
    kind: str,
    peer: str,
    code: str,
    detail: str,
    prev_hash: bytes,
) -> bytes:
    """SHA-256 over the canonical msgpack of an entry's fields (all but hash and signature)."""
    body = packb(
        {
            "v": ENTRY_VERSION,
            "seq": seq,
            "time_ms": time_ms,
            "node": node,
            "kid": kid,
            "kind": kind,
            "peer": peer,
            "code": code,
            "detail": detail,
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256(b"lsnet/v1/audit-entry\x00" + body).digest()


def verify_chain(
    entries: Iterable[AuditEntry],
    verify_key: VerifyKey | Mapping[str, VerifyKey],
    *,
    anchor: tuple[int, bytes] | None = None,
) -> ChainReport:
    """Verify entries in ascending seq order, from seq 1; stop at the first break.

    `verify_key` is the node key, or keys by key id when the node key was rotated. `anchor` is a
    (seq, hash) known from elsewhere (e.g. forwarded upward earlier): the log must reach it and
    hold that exact entry. Streams: memory does not grow with the log.
    """
    keys = verify_key if isinstance(verify_key, Mapping) else {key_id(verify_key): verify_key}
    it = iter(entries)
    count, prev = 0, ZERO_HASH

    def report(
        seq: int | None = None, reason: BreakReason | None = None, msg: str = ""
    ) -> ChainReport:
        return ChainReport(count, count, prev, seq, reason, msg)

    for e in it:
        n = count + 1
        if e.seq < n:
            return report(n, BreakReason.REORDERED, f"seq {e.seq} appears again after seq {n - 1}")
        if e.seq > n:
            missing = f"seq {n}" if e.seq == n + 1 else f"seqs {n}..{e.seq - 1}"
            return report(n, BreakReason.GAP, f"{missing} missing; the next entry is seq {e.seq}")
        consistent = e.computed_hash() == e.hash
        if e.prev_hash != prev:
            if e.prev_hash == ZERO_HASH or _later_hash(it, e.prev_hash):
                return report(
                    n, BreakReason.REORDERED, f"entry {n} was moved here from another position"
                )
            if consistent and _signed(e, keys):
                return report(
                    n, BreakReason.GAP, f"entry {n} chains to an entry that is not in the log"
                )
        if not consistent:
            return report(n, BreakReason.CHANGED, f"entry {n}'s content does not match its hash")
        if not _signed(e, keys):
            known = "" if e.kid in keys else f" (key id {e.kid!r} is not a known node key)"
            return report(
                n, BreakReason.BAD_SIGNATURE, f"entry {n} is not signed by the node key{known}"
            )
        if anchor is not None and n == anchor[0] and e.hash != anchor[1]:
            return report(n, BreakReason.FORKED, f"entry {n} differs from the anchored entry")
        count, prev = n, e.hash
    if anchor is not None and count < anchor[0]:
        return report(
            count + 1, BreakReason.TRUNCATED, f"log ends at seq {count}; seq {anchor[0]} was seen"
        )
    return report()


def _later_hash(rest: Iterator[AuditEntry], wanted: bytes) -> bool:
    return any(e.hash == wanted for e in rest)


def _signed(e: AuditEntry, keys: Mapping[str, VerifyKey]) -> bool:
    vk = keys.get(e.kid)
    if vk is None:
        return False
    try:
        verify(vk, PURPOSE_AUDIT, e.hash, e.signature)
    except SignatureInvalid:
        return False
    return True


# -- database --------------------------------------------------------------------------------------


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        time_ms=row.time_ms,
        node=row.node,
        kid=row.kid,
        kind=row.kind,
        peer=row.peer,
        code=row.code,
        detail=row.detail,
        prev_hash=bytes(row.prev_hash),
        hash=bytes(row.hash),
        signature=bytes(row.signature),
    )


def _entries_txn(
    conn: Connection,
    kind: str | None,
    peer: str | None,
    since_ms: int | None,
    until_ms: int | None,
    limit: int,
) -> list[AuditEntry]:
    q = select(audit_log)
    if kind is not None:
        q = q.where(audit_log.c.kind == kind)
    if peer is not None:
        q = q.where(audit_log.c.peer == peer)
    if since_ms is not None:
        q = q.where(audit_log.c.time_ms >= since_ms)
    if until_ms is not None:
        q = q.where(audit_log.c.time_ms < until_ms)
    rows = conn.execute(q.order_by(audit_log.c.seq.desc()).limit(limit))
    return [_entry(r) for r in rows]


def _entries_after_txn(conn: Connection, after_seq: int, limit: int) -> list[AuditEntry]:
    q = select(audit_log).where(audit_log.c.seq > after_seq).order_by(audit_log.c.seq).limit(limit)
    return [_entry(r) for r in conn.execute(q)]


def _verify_txn(
    conn: Connection, keys: VerifyKey | Mapping[str, VerifyKey], anchor: tuple[int, bytes] | None
) -> ChainReport:
    rows = conn.execution_options(yield_per=1000).execute(
        select(audit_log).order_by(audit_log.c.seq)
    )
    return verify_chain((_entry(r) for r in rows), keys, anchor=anchor)


class AuditReader:
    """Read use cases of the audit log; needs no key."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def entries(
        self,
        *,
        kind: AuditKind | str | None = None,
        peer: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Entries matching every given filter, newest first; `since` inclusive, `until` not."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise AuditInvalid(f"limit must be 1..{MAX_LIST_LIMIT}")
        kind_text = None if kind is None else str(check_event(kind, "", ""))
        return await self.db.read(_entries_txn, kind_text, peer, since_ms, until_ms, limit)

    async def entries_after(self, after_seq: int, limit: int = 1000) -> list[AuditEntry]:
        """Entries with seq > `after_seq`, oldest first (for forwarding upward)."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise AuditInvalid(f"limit must be 1..{MAX_LIST_LIMIT}")
        return await self.db.read(_entries_after_txn, after_seq, limit)

    async def verify_with(
        self,
        keys: VerifyKey | Mapping[str, VerifyKey],
        *,
        anchor: tuple[int, bytes] | None = None,
    ) -> ChainReport:
        """Verify the whole chain in one read transaction (a consistent snapshot)."""
        return await self.db.read(_verify_txn, keys, anchor)


class AuditLog(AuditReader):
    """The node's audit log: appends entries signed by the node key, time from `clock`."""

    def __init__(self, db: Database, key: NodeKey, node_id: str, clock: Clock) -> None:
        super().__init__(db)
        self.key = key
        self.node_id = node_id
        self.clock = clock

    async def record(
        self,
        kind: AuditKind | str,
        *,
        peer: str = "",
        code: str = "",
        detail: Mapping[str, str | int | bool] | None = None,
    ) -> int:
        """Append one entry in its own write transaction; return its seq.

        Raises AuditInvalid before touching the database if the event is refused, and
        AuditWriteError if the database write fails: the event is then not recorded.
        """
        checked = check_event(kind, peer, code)
        text_detail = canonical_detail(detail)
        try:
            return await self.db.write(self._append, checked, peer, code, text_detail)
        except SQLAlchemyError as exc:
            raise AuditWriteError(
                f"audit log write failed ({checked} {code}): {getattr(exc, 'orig', exc)}"
            ) from exc

    def record_txn(
        self,
        conn: Connection,
        kind: AuditKind | str,
        *,
        peer: str = "",
        code: str = "",
        detail: Mapping[str, str | int | bool] | None = None,
    ) -> int:
        """Append one entry inside the caller's WRITE transaction (on the writer thread); the
        entry commits or rolls back with the caller's change. Returns its seq; raises like
        `record` (database errors propagate unchanged and abort the caller's transaction)."""
        checked = check_event(kind, peer, code)
        return self._append(conn, checked, peer, code, canonical_detail(detail))

    async def verify(self, *, anchor: tuple[int, bytes] | None = None) -> ChainReport:
        """Verify the whole chain against this node's key."""
        return await self.verify_with(self.key.verify_key, anchor=anchor)

    def _append(self, conn: Connection, kind: AuditKind, peer: str, code: str, detail: str) -> int:
        if conn.dialect.name == "postgresql":
            # Serialises appenders across processes (a CLI next to the running node); reads go on.
            conn.execute(text("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE"))
        last = conn.execute(
            select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
        ).first()
        seq, prev = (1, ZERO_HASH) if last is None else (last.seq + 1, bytes(last.hash))
        fields: dict[str, Any] = {
            "seq": seq,
            "time_ms": self.clock.time_ms(),
            "node": self.node_id,
            "kid": self.key.kid,
            "kind": kind.value,
            "peer": peer,
            "code": code,
            "detail": detail,
            "prev_hash": prev,
        }
        digest = entry_hash(**fields)
        conn.execute(
            audit_log.insert().values(
                **fields, hash=digest, signature=sign(self.key, PURPOSE_AUDIT, digest)
            )
        )
        return seq
