"""Scoped, revocable, hashed API tokens: the pure helpers, the store use cases on a real database,
and POST /v1/records over real HTTP with database tokens next to the legacy configuration ones."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from node.app import Node
from node.clock import FakeClock
from node.datagen import generate_records
from node.db import Database
from node.schema import api_tokens
from security.audit import AuditKind, AuditLog
from security.keys import NodeKey
from security.tokens import (
    LAST_USED_RESOLUTION_MS,
    Scope,
    TokenAlreadyRevoked,
    TokenInfo,
    TokenInvalid,
    TokenNameTaken,
    TokenNotFound,
    Verdict,
    authenticate,
    check_token,
    create_token,
    decide,
    hash_token,
    list_tokens,
    looks_like_token,
    new_token,
    revoke_token,
)
from tests.support.network import TestNet, make_network

NOW = 1_790_000_000_000


# -- pure helpers ----------------------------------------------------------------------------------


def test_new_token_is_prefixed_random_and_hashed() -> None:
    token, digest = new_token()
    assert token.startswith("lsn_") and len(token) == 4 + 43
    assert looks_like_token(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest() == hash_token(token)
    assert new_token()[0] != token


@pytest.mark.parametrize(
    "text", ["", "lsn_", "lsn_short", "xyz_" + "a" * 43, "lsn_" + "a" * 42 + "!", "lsn_" + "a" * 44]
)
def test_only_token_shaped_text_looks_like_a_token(text: str) -> None:
    assert not looks_like_token(text)


def _info(scope: str = "ingest", revoked_ms: int = 0) -> TokenInfo:
    return TokenInfo(1, "pension-system", scope, NOW, 0, revoked_ms, "op")


def test_decide() -> None:
    assert decide(None, Scope.INGEST) is Verdict.UNKNOWN
    assert decide(_info(), Scope.INGEST) is Verdict.ALLOWED
    assert decide(_info(revoked_ms=NOW), Scope.INGEST) is Verdict.REVOKED
    assert decide(_info(scope="read"), Scope.INGEST) is Verdict.WRONG_SCOPE
    # Revocation wins over scope: a revoked token is reported revoked, whatever it was for.
    assert decide(_info(scope="read", revoked_ms=NOW), Scope.INGEST) is Verdict.REVOKED


# -- store use cases -------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'n.db'}")
    database.migrate()
    try:
        yield database
    finally:
        database.close()


async def test_create_check_and_revoke(db: Database) -> None:
    token, info = await create_token(
        db, name="pension-system", scope="ingest", created_by="alice", now_ms=NOW
    )
    assert info.active and info.scope == "ingest" and info.created_by == "alice"
    assert await check_token(db, token, Scope.INGEST, NOW) == info
    assert await check_token(db, "lsn_" + "A" * 43, Scope.INGEST, NOW) is None

    revoked = await revoke_token(db, "pension-system", now_ms=NOW + 5)
    assert revoked.id == info.id and revoked.revoked_ms == NOW + 5
    assert await check_token(db, token, Scope.INGEST, NOW + 6) is None
    check = await authenticate(db, token, Scope.INGEST, NOW + 6)
    assert check.verdict is Verdict.REVOKED and check.info is not None
    with pytest.raises(TokenNotFound):
        await revoke_token(db, "pension-system", now_ms=NOW + 7)
    with pytest.raises(TokenAlreadyRevoked):
        await revoke_token(db, str(info.id), now_ms=NOW + 7)
    with pytest.raises(TokenNotFound):
        await revoke_token(db, "999", now_ms=NOW + 7)


async def test_names_are_unique_among_active_tokens(db: Database) -> None:
    _, first = await create_token(db, name="hr", scope="ingest", created_by="", now_ms=NOW)
    with pytest.raises(TokenNameTaken):
        await create_token(db, name="hr", scope="ingest", created_by="", now_ms=NOW)
    await revoke_token(db, str(first.id), now_ms=NOW)
    new, second = await create_token(db, name="hr", scope="ingest", created_by="", now_ms=NOW)
    assert second.id != first.id
    assert await check_token(db, new, Scope.INGEST, NOW) is not None
    listed = await list_tokens(db)
    assert [(t.id, t.active) for t in listed] == [(first.id, False), (second.id, True)]
    assert [t.id for t in await list_tokens(db, include_revoked=False)] == [second.id]


@pytest.mark.parametrize(
    ("name", "scope", "by"),
    [
        ("Pension", "ingest", ""),
        ("1abc", "ingest", ""),
        ("a" * 65, "ingest", ""),
        ("ok", "admin", ""),
        ("ok", "read", ""),  # not yet a scope
        ("ok", "ingest", "x\n"),
    ],
)
async def test_bad_arguments_are_refused(db: Database, name: str, scope: str, by: str) -> None:
    with pytest.raises(TokenInvalid):
        await create_token(db, name=name, scope=scope, created_by=by, now_ms=NOW)
    assert await list_tokens(db) == []


async def test_only_the_hash_is_stored(db: Database) -> None:
    token, _ = await create_token(db, name="pension", scope="ingest", created_by="", now_ms=NOW)
    rows = db.read_sync(lambda conn: [dict(r) for r in conn.execute(select(api_tokens)).mappings()])
    assert len(rows) == 1
    assert rows[0]["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert all(token not in str(v) and token[4:] not in str(v) for v in rows[0].values())
    assert all("token_hash" not in t.to_json() for t in await list_tokens(db))


async def test_last_used_is_written_at_most_once_a_minute(db: Database) -> None:
    token, info = await create_token(db, name="p", scope="ingest", created_by="", now_ms=NOW)
    assert info.last_used_ms == 0

    async def last_used() -> int:
        return next(t.last_used_ms for t in await list_tokens(db))

    await check_token(db, token, Scope.INGEST, NOW + 1000)
    assert await last_used() == NOW + 1000
    await check_token(db, token, Scope.INGEST, NOW + 1000 + LAST_USED_RESOLUTION_MS - 1)
    assert await last_used() == NOW + 1000
    await check_token(db, token, Scope.INGEST, NOW + 1000 + LAST_USED_RESOLUTION_MS)
    assert await last_used() == NOW + 1000 + LAST_USED_RESOLUTION_MS


async def test_create_and_revoke_are_audited_in_the_same_transaction(db: Database) -> None:
    key = NodeKey.generate()
    audit = AuditLog(db, key, "330100", FakeClock(NOW))
    _, info = await create_token(
        db, name="pension", scope="ingest", created_by="alice", now_ms=NOW, audit=audit
    )
    await revoke_token(db, "pension", now_ms=NOW, audit=audit)
    entries = await audit.entries(kind=AuditKind.OPERATOR_ACTION)
    assert sorted((e.code, e.detail_map()["token_name"]) for e in entries) == [
        ("token_created", "pension"),
        ("token_revoked", "pension"),
    ]
    assert all(e.detail_map()["token_id"] == info.id for e in entries)
    assert (await audit.verify()).intact
    # A refused create writes neither a token nor an audit entry.
    await create_token(db, name="hr", scope="ingest", created_by="", now_ms=NOW)
    with pytest.raises(TokenNameTaken):
        await create_token(db, name="hr", scope="ingest", created_by="", now_ms=NOW, audit=audit)
    assert len(await audit.entries()) == 2
    assert len(await list_tokens(db)) == 2


# -- POST /v1/records over real HTTP ---------------------------------------------------------------


@pytest.fixture
async def city(tmp_path: Path) -> AsyncIterator[tuple[TestNet, Node]]:
    net = make_network(tmp_path, cities_per_province=1)
    await net.init_all()
    node = await net.start(net.city_ids()[0])  # parent not running: writes are still accepted
    try:
        yield net, node
    finally:
        await net.stop_all()


async def _post(node: Node, token: str, count: int = 3) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    body = generate_records(node.config.node_id, count, seed=7)
    url = node.config.node.url + "/v1/records"
    async with aiohttp.ClientSession() as s, s.post(url, headers=headers, json=body) as r:
        return r.status, await r.json()


async def _rejections(node: Node) -> list[tuple[str, dict[str, Any]]]:
    assert node.security is not None
    entries = await node.security.audit.entries(kind=AuditKind.REQUEST_REJECTED)
    return [(e.code, e.detail_map()) for e in entries]


async def test_database_token_ingests_then_revoked_is_refused(city: tuple[TestNet, Node]) -> None:
    _, node = city
    token, info = await create_token(
        node.db, name="pension-system", scope="ingest", created_by="", now_ms=NOW
    )
    status, body = await _post(node, token)
    assert status == 200, body
    assert body["accepted"] == 3 and body["last_seq"] == 3
    assert next(iter(await list_tokens(node.db))).last_used_ms > 0

    await revoke_token(node.db, "pension-system", now_ms=node.clock.time_ms())
    status, body = await _post(node, token, count=5)
    assert status == 401
    assert body["error"]["code"] == "token_revoked"
    assert (await node.store.meta()).last_seq == 3  # nothing written
    assert await _rejections(node) == [
        ("token_revoked", {"path": "/v1/records", "token_id": info.id})
    ]


async def test_token_with_another_scope_is_forbidden(city: tuple[TestNet, Node]) -> None:
    _, node = city
    token, digest = new_token()
    # A scope this version does not grant ingest with (as a newer version may write it).
    node.db.write_sync(
        lambda conn: conn.execute(
            api_tokens.insert().values(
                name="reporting",
                scope="read",
                token_hash=digest,
                created_ms=NOW,
                last_used_ms=0,
                revoked_ms=0,
                created_by="",
            )
        )
    )
    status, body = await _post(node, token)
    assert status == 403
    assert body["error"]["code"] == "forbidden"
    assert (await node.store.meta()).last_seq == 0
    assert [code for code, _ in await _rejections(node)] == ["forbidden"]


async def test_unknown_token_is_unauthenticated(city: tuple[TestNet, Node]) -> None:
    _, node = city
    await create_token(node.db, name="pension", scope="ingest", created_by="", now_ms=NOW)
    for token in (new_token()[0], "not-a-token-at-all-really"):
        status, body = await _post(node, token)
        assert status == 401
        assert body["error"]["code"] == "unauthenticated"
    assert (await node.store.meta()).last_seq == 0
    assert [code for code, _ in await _rejections(node)] == ["unauthenticated"] * 2


async def test_legacy_configuration_tokens_still_work(city: tuple[TestNet, Node]) -> None:
    _, node = city
    await create_token(node.db, name="pension", scope="ingest", created_by="", now_ms=NOW)
    status, body = await _post(node, node.config.api.ingest_tokens[0])
    assert status == 200, body
    assert body["accepted"] == 3
