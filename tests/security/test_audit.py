"""security.audit: the hash chain and its signatures, on SQLite and PostgreSQL.

Tampering is done the way an intruder with the database would: triggers dropped (SQLite, through
the sqlite3 module) or disabled (PostgreSQL), then rows edited, deleted, re-hashed or swapped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from node.clock import FakeClock
from node.db import Database, sqlite_path
from node.schema import audit_log
from security.audit import (
    AuditEntry,
    AuditInvalid,
    AuditKind,
    AuditLog,
    AuditWriteError,
    BreakReason,
    entry_hash,
    verify_chain,
)
from security.keys import NodeKey
from sync.wire import ZERO_HASH

NODE = "330100"
KINDS = list(AuditKind)


@dataclasses.dataclass
class Env:
    db: Database
    log: AuditLog
    clock: FakeClock
    key: NodeKey

    def tamper(self, *statements: str, params: Sequence[dict[str, Any]] = ()) -> None:
        """Run SQL as someone editing the database directly, past the append-only triggers."""
        path = sqlite_path(self.db.url)
        if path is not None:
            con = sqlite3.connect(path)
            try:
                con.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
                con.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
                for i, sql in enumerate(statements):
                    con.execute(sql, params[i] if params else {})
                con.commit()
            finally:
                con.close()
            return
        engine = create_engine(self.db.url)
        try:
            with engine.begin() as conn:
                conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
                for i, sql in enumerate(statements):
                    conn.execute(text(sql), params[i] if params else {})
        finally:
            engine.dispose()


@pytest.fixture
async def env(database_for: Callable[[str], str]) -> AsyncIterator[Env]:
    db = Database(database_for(NODE))
    await asyncio.to_thread(db.migrate)
    clock = FakeClock()
    key = NodeKey.generate()
    yield Env(db, AuditLog(db, key, NODE, clock), clock, key)
    await asyncio.to_thread(db.close)


async def fill(env: Env, count: int = 50) -> list[int]:
    seqs = []
    for i in range(count):
        env.clock.advance(1)
        seqs.append(
            await env.log.record(
                KINDS[i % len(KINDS)],
                peer=f"33{i % 3 + 1:02d}00",
                code=f"code_{i % 4}",
                detail={"n": i, "batch": i % 2 == 0, "origin": "330102"},
            )
        )
    return seqs


async def rows(env: Env) -> list[AuditEntry]:
    return await env.log.entries_after(0, limit=10_000)


# -- a clean chain ---------------------------------------------------------------------------------


async def test_chain_of_50_entries_verifies(env: Env) -> None:
    assert await fill(env) == list(range(1, 51))
    report = await env.log.verify()
    assert report.intact, report.summary()
    assert (report.entries, report.head_seq) == (50, 50)
    assert report.summary() == "50 entries, chain intact"
    entries = await rows(env)
    assert entries[0].prev_hash == ZERO_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert report.head_hash == entries[-1].hash


async def test_empty_log_is_intact(env: Env) -> None:
    report = await env.log.verify()
    assert report.intact and report.entries == 0 and report.head_hash == ZERO_HASH


async def test_time_comes_from_the_clock_and_detail_is_canonical(env: Env) -> None:
    env.clock.advance(42)
    seq = await env.log.record(
        AuditKind.REQUEST_REJECTED,
        peer="10.0.0.7:5123",
        code="bad_signature",
        detail={"b": 1, "a": "x"},
    )
    (entry,) = await env.log.entries()
    assert (entry.seq, entry.time_ms, entry.node) == (seq, env.clock.time_ms(), NODE)
    assert entry.detail == '{"a":"x","b":1}'
    assert entry.kid == env.key.kid


async def test_concurrent_records_get_dense_seqs(env: Env) -> None:
    seqs = await asyncio.gather(
        *(env.log.record(AuditKind.REQUEST_REJECTED, code="stale") for _ in range(30))
    )
    assert sorted(seqs) == list(range(1, 31))
    assert (await env.log.verify()).intact


# -- tampering -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [("detail", '{"n":999}'), ("code", "forged"), ("kind", "operator_action"), ("peer", "339900")],
)
async def test_edited_row_is_detected_at_its_seq(env: Env, column: str, value: str) -> None:
    await fill(env)
    env.tamper(f"UPDATE audit_log SET {column} = :v WHERE seq = 20", params=[{"v": value}])
    report = await env.log.verify()
    assert (report.broken_seq, report.reason) == (20, BreakReason.CHANGED), report.summary()
    assert report.entries == 19


async def test_deleted_middle_row_is_a_gap(env: Env) -> None:
    await fill(env)
    env.tamper("DELETE FROM audit_log WHERE seq = 25")
    report = await env.log.verify()
    assert (report.broken_seq, report.reason) == (25, BreakReason.GAP), report.summary()
    assert "seq 25 missing" in report.message


async def test_consistent_rehash_after_an_edit_fails_on_the_signature(env: Env) -> None:
    """The intruder edits row 20 and recomputes its hash and every later hash and link, but
    cannot sign without the node key."""
    await fill(env)
    entries = await rows(env)
    prev = entries[18].hash
    statements, params = [], []
    for e in entries[19:]:
        changed = dataclasses.replace(
            e, detail='{"n":0}' if e.seq == 20 else e.detail, prev_hash=prev
        )
        new_hash = changed.computed_hash()
        statements.append(
            "UPDATE audit_log SET detail = :d, prev_hash = :p, hash = :h WHERE seq = :s"
        )
        params.append({"d": changed.detail, "p": prev, "h": new_hash, "s": e.seq})
        prev = new_hash
    env.tamper(*statements, params=params)
    report = await env.log.verify()
    assert (report.broken_seq, report.reason) == (20, BreakReason.BAD_SIGNATURE), report.summary()


@pytest.mark.parametrize(("a", "b"), [(10, 11), (10, 30), (1, 2)])
async def test_swapped_rows_are_detected(env: Env, a: int, b: int) -> None:
    await fill(env)
    env.tamper(
        f"UPDATE audit_log SET seq = -1 WHERE seq = {a}",
        f"UPDATE audit_log SET seq = {a} WHERE seq = {b}",
        f"UPDATE audit_log SET seq = {b} WHERE seq = -1",
    )
    report = await env.log.verify()
    assert (report.broken_seq, report.reason) == (a, BreakReason.REORDERED), report.summary()


async def test_log_is_append_only_for_the_application(env: Env) -> None:
    await fill(env, 3)

    def edit(conn: Any) -> None:
        conn.execute(audit_log.update().where(audit_log.c.seq == 2).values(code="x"))

    def delete(conn: Any) -> None:
        conn.execute(audit_log.delete().where(audit_log.c.seq == 2))

    for body in (edit, delete):
        with pytest.raises(SQLAlchemyError, match="append-only"):
            await env.db.write(body)
    assert (await env.log.verify()).entries == 3


# -- appending inside another transaction ----------------------------------------------------------


async def test_record_txn_commits_and_rolls_back_with_the_callers_transaction(env: Env) -> None:
    def ok(conn: Any) -> int:
        return env.log.record_txn(conn, AuditKind.ENROLLMENT, peer="330105", code="enrolled")

    def fails(conn: Any) -> None:
        env.log.record_txn(conn, AuditKind.KEY_REVOKED, peer="330105")
        raise RuntimeError("caller's change failed")

    assert await env.db.write(ok) == 1
    with pytest.raises(RuntimeError):
        await env.db.write(fails)
    assert await env.db.write(ok) == 2
    assert [e.kind for e in await rows(env)] == ["enrollment", "enrollment"]
    assert (await env.log.verify()).intact


# -- refused events and failures -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "made_up"},
        {"detail": {"payload": "x"}},
        {"detail": {"who": "330102199001011234"}},
        {"detail": {"ratio": 0.5}},
        {"detail": {"k": "x" * 201}},
        {"detail": {f"k{i}": "x" * 100 for i in range(12)}},
        {"detail": {"Bad Key": 1}},
        {"code": "Not A Code"},
        {"peer": "p" * 129},
        {"peer": "a\nb"},
    ],
)
async def test_refused_events_raise_and_write_nothing(env: Env, kwargs: dict[str, Any]) -> None:
    kwargs = dict(kwargs)  # the parameter is shared by both backends' runs
    kind = kwargs.pop("kind", AuditKind.OPERATOR_ACTION)
    with pytest.raises(AuditInvalid):
        await env.log.record(kind, **kwargs)
    assert await rows(env) == []


async def test_database_failure_raises(tmp_path: Any) -> None:
    db = Database(f"sqlite:///{tmp_path / 'unmigrated.db'}")
    try:
        log = AuditLog(db, NodeKey.generate(), NODE, FakeClock())
        with pytest.raises(AuditWriteError, match="audit log write failed"):
            await log.record(AuditKind.CONFIG_LOADED)
    finally:
        await asyncio.to_thread(db.close)


# -- reading ---------------------------------------------------------------------------------------


async def test_entries_filters(env: Env) -> None:
    start = env.clock.time_ms()
    await fill(env)  # entry i at start + (i + 1) s, kind KINDS[i % len(KINDS)], peer 33{i%3}00
    newest = await env.log.entries(limit=5)
    assert [e.seq for e in newest] == [50, 49, 48, 47, 46]
    by_kind = await env.log.entries(kind=AuditKind.KEY_ROTATED)
    assert by_kind and {e.kind for e in by_kind} == {"key_rotated"}
    rotated = KINDS.index(AuditKind.KEY_ROTATED)
    expected = [s for s in range(50, 0, -1) if (s - 1) % len(KINDS) == rotated]
    assert [e.seq for e in by_kind] == expected
    assert await env.log.entries(kind="enrollment") == await env.log.entries(
        kind=AuditKind.ENROLLMENT
    )
    by_peer = await env.log.entries(peer="330100")
    assert [e.seq for e in by_peer] == [s for s in range(50, 0, -1) if (s - 1) % 3 == 0]
    window = await env.log.entries(since_ms=start + 10_000, until_ms=start + 20_000)
    assert [e.seq for e in window] == list(range(19, 9, -1))
    both = await env.log.entries(kind=AuditKind.REQUEST_REJECTED, peer="330100", limit=2)
    rejected = [s for s in range(50, 0, -1) if (s - 1) % len(KINDS) == 0 and (s - 1) % 3 == 0]
    assert [e.seq for e in both] == rejected[:2]
    assert [e.seq for e in await env.log.entries_after(45, limit=3)] == [46, 47, 48]
    with pytest.raises(AuditInvalid):
        await env.log.entries(limit=0)
    with pytest.raises(AuditInvalid):
        await env.log.entries(kind="nope")
    assert (await env.log.entries())[0].detail_map() == {
        "batch": False,
        "n": 49,
        "origin": "330102",
    }


# -- the pure verifier -----------------------------------------------------------------------------


def make_chain(
    key: NodeKey, count: int, start: int = 1, prev: bytes = ZERO_HASH, kind: str = "operator_action"
) -> list[AuditEntry]:
    from security.audit import PURPOSE_AUDIT
    from security.signing import sign

    out = []
    for seq in range(start, start + count):
        fields: dict[str, Any] = {
            "seq": seq,
            "time_ms": 1000 * seq,
            "node": NODE,
            "kid": key.kid,
            "kind": kind,
            "peer": "",
            "code": "",
            "detail": "{}",
            "prev_hash": prev,
        }
        h = entry_hash(**fields)
        out.append(AuditEntry(**fields, hash=h, signature=sign(key, PURPOSE_AUDIT, h)))
        prev = h
    return out


def test_entry_hash_covers_every_field() -> None:
    base: dict[str, Any] = {
        "seq": 1,
        "time_ms": 5,
        "node": NODE,
        "kid": "0" * 16,
        "kind": "enrollment",
        "peer": "p",
        "code": "c",
        "detail": "{}",
        "prev_hash": ZERO_HASH,
    }
    h = entry_hash(**base)
    assert h == entry_hash(**base) and len(h) == 32
    for name, other in [
        ("seq", 2),
        ("time_ms", 6),
        ("node", "330200"),
        ("kid", "1" * 16),
        ("kind", "key_revoked"),
        ("peer", "q"),
        ("code", "d"),
        ("detail", '{"a":1}'),
        ("prev_hash", b"\x01" * 32),
    ]:
        assert entry_hash(**{**base, name: other}) != h, name


def test_wrong_key_fails_at_the_first_entry() -> None:
    chain = make_chain(NodeKey.generate(), 3)
    report = verify_chain(chain, NodeKey.generate().verify_key)
    assert (report.broken_seq, report.reason) == (1, BreakReason.BAD_SIGNATURE)
    assert "not a known node key" in report.message


def test_rotated_keys_verify_by_key_id() -> None:
    old, new = NodeKey.generate(), NodeKey.generate()
    first = make_chain(old, 3)
    chain = first + make_chain(new, 2, start=4, prev=first[-1].hash)
    assert verify_chain(chain, {old.kid: old.verify_key, new.kid: new.verify_key}).intact
    assert verify_chain(chain, old.verify_key).broken_seq == 4


def test_anchor_detects_truncation_and_a_rewritten_log() -> None:
    key = NodeKey.generate()
    chain = make_chain(key, 10)
    assert verify_chain(chain, key.verify_key, anchor=(10, chain[-1].hash)).intact
    cut = verify_chain(chain[:7], key.verify_key, anchor=(10, chain[-1].hash))
    assert (cut.broken_seq, cut.reason) == (8, BreakReason.TRUNCATED)
    # Same key, another history (a restored copy, or rewritten by a holder of the key).
    other = make_chain(key, 10, kind="config_loaded")
    forked = verify_chain(other, key.verify_key, anchor=(5, chain[4].hash))
    assert (forked.broken_seq, forked.reason) == (5, BreakReason.FORKED)


def test_duplicate_and_renumbered_entries() -> None:
    key = NodeKey.generate()
    chain = make_chain(key, 5)
    dup = verify_chain([*chain[:3], chain[2], *chain[3:]], key.verify_key)
    assert (dup.broken_seq, dup.reason) == (4, BreakReason.REORDERED)
    # Delete entry 3 and renumber the rest: entry 4 now claims seq 3, which its hash does not.
    renumbered = chain[:2] + [dataclasses.replace(e, seq=e.seq - 1) for e in chain[3:]]
    report = verify_chain(renumbered, key.verify_key)
    assert report.broken_seq == 3 and report.reason is BreakReason.CHANGED
    # An intact, signed entry whose predecessor is gone (and nothing renumbered): a gap.
    orphan = [*chain[:2], *make_chain(key, 1, start=3, prev=b"\x07" * 32)]
    gap = verify_chain(orphan, key.verify_key)
    assert (gap.broken_seq, gap.reason) == (3, BreakReason.GAP)
