"""Scoped, revocable API tokens for local business systems (issue 4, item 2).

A token is `lsn_` followed by 32 random bytes in url-safe base64 (43 characters, no padding);
the prefix makes a leaked token easy to recognise in logs and repositories. It is shown once,
when created; the database keeps only its SHA-256 (hex) in `api_tokens.token_hash`, so a copy
of the database does not let anyone push records.

Pure part (no database, no clock): `new_token`, `hash_token`, `looks_like_token`, `Scope`,
`TokenInfo`, `Verdict` and `decide`, the authorisation decision for one presented token.
Database part: one async function per use case (`create_token`, `list_tokens`, `revoke_token`,
`authenticate`, `check_token`), each one transaction whose body is the `_..._txn` function beside
it. Creating and revoking can append their audit entry inside the same transaction, so a token
never changes without its audit entry.

What this does not do: it does not read HTTP headers or answer requests (`node.http_api` does),
it does not know the legacy `api.ingest_tokens` of the node configuration (plain-text tokens
compared in `node.http_api`, kept for existing installations), it does not rate-limit guessing
(a token has 256 bits of entropy) and it does not expire tokens by age: an operator revokes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from node.db import Database
from node.schema import api_tokens
from security.audit import AuditKind, AuditLog

TOKEN_PREFIX = "lsn_"
TOKEN_BYTES = 32
_TOKEN_RE = re.compile(r"^lsn_[A-Za-z0-9_-]{43}$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
MAX_CREATED_BY_LEN = 128
# `last_used_ms` is refreshed at most this often, so a busy business system does not cost one
# database write per request.
LAST_USED_RESOLUTION_MS = 60_000
CODE_TOKEN_CREATED = "token_created"
CODE_TOKEN_REVOKED = "token_revoked"


class Scope(StrEnum):
    """Closed set of what a token may do.

    `ingest`: a local business system posts records. `operator`: a person at the centre uses the
    admin and read API (operator actions, the dashboard's actions, statistics, security views).
    A token has exactly one scope; an operator who also feeds records holds two tokens."""

    INGEST = "ingest"
    OPERATOR = "operator"


class Verdict(StrEnum):
    """The decision about one presented token."""

    ALLOWED = "allowed"
    UNKNOWN = "unknown"  # no such token: 401 unauthenticated
    REVOKED = "revoked"  # it existed, an operator revoked it: 401 token_revoked
    WRONG_SCOPE = "wrong_scope"  # valid, but not for this: 403 forbidden


class TokenError(Exception):
    """Base of token management failures."""


class TokenInvalid(TokenError, ValueError):
    """A name, scope or operator we refuse."""


class TokenNameTaken(TokenError):
    """An active token already has this name; revoke it first or pick another name."""


class TokenNotFound(TokenError, LookupError):
    """No token with this name or id (or, for a name, no active one)."""


class TokenAlreadyRevoked(TokenError):
    """The token with this id was revoked before."""


@dataclass(frozen=True)
class TokenInfo:
    """One token as stored, without its hash. `scope` is the stored text: a newer version may
    have written a scope this one does not know, which then authorises nothing."""

    id: int
    name: str
    scope: str
    created_ms: int
    last_used_ms: int  # 0 = never used; refreshed at most once a minute
    revoked_ms: int  # 0 = active
    created_by: str

    @property
    def active(self) -> bool:
        return self.revoked_ms == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "active": self.active,
            "created_ms": self.created_ms,
            "last_used_ms": self.last_used_ms,
            "revoked_ms": self.revoked_ms,
            "created_by": self.created_by,
        }


@dataclass(frozen=True)
class TokenCheck:
    """Result of `authenticate`: the verdict and, unless UNKNOWN, the token it is about."""

    verdict: Verdict
    info: TokenInfo | None = None


# -- pure helpers ----------------------------------------------------------------------------------


def hash_token(token: str) -> str:
    """SHA-256 of the token text, lower-case hex: what `api_tokens.token_hash` stores."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh token and its hash. Show the token once; store only the hash."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    return token, hash_token(token)


def looks_like_token(text: str) -> bool:
    """Whether `text` has the shape of a token made by `new_token` (cheap, before any lookup)."""
    return _TOKEN_RE.match(text) is not None


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise TokenInvalid(
            f"token name {name!r} must start with a lower-case letter and use only a-z, 0-9, "
            "'.', '_' or '-' (at most 64 characters), e.g. pension-system"
        )
    return name


def parse_scope(value: str) -> Scope:
    try:
        return Scope(value)
    except ValueError:
        known = ", ".join(s.value for s in Scope)
        raise TokenInvalid(f"unknown token scope {value!r}; known scopes: {known}") from None


def decide(info: TokenInfo | None, scope: Scope) -> Verdict:
    """The authorisation decision for a presented token whose stored row is `info`."""
    if info is None:
        return Verdict.UNKNOWN
    if not info.active:
        return Verdict.REVOKED
    if info.scope != scope.value:
        return Verdict.WRONG_SCOPE
    return Verdict.ALLOWED


def _info(row: Any) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        name=row.name,
        scope=row.scope,
        created_ms=row.created_ms,
        last_used_ms=row.last_used_ms,
        revoked_ms=row.revoked_ms,
        created_by=row.created_by,
    )


_INFO_COLUMNS = (
    api_tokens.c.id,
    api_tokens.c.name,
    api_tokens.c.scope,
    api_tokens.c.created_ms,
    api_tokens.c.last_used_ms,
    api_tokens.c.revoked_ms,
    api_tokens.c.created_by,
)


def _audit_detail(info: TokenInfo) -> dict[str, str | int | bool]:
    # `name` is refused as an audit detail key (it usually means a person's name): token_name.
    return {"token_id": info.id, "token_name": info.name, "scope": info.scope}


# -- transaction bodies ----------------------------------------------------------------------------


def _create_txn(
    conn: Connection,
    name: str,
    scope: Scope,
    token_hash: str,
    created_by: str,
    now_ms: int,
    audit: AuditLog | None,
) -> TokenInfo:
    taken = conn.execute(
        select(api_tokens.c.id).where(api_tokens.c.name == name, api_tokens.c.revoked_ms == 0)
    ).first()
    if taken is not None:
        raise TokenNameTaken(
            f"an active token named {name!r} exists (id {taken.id}); "
            f"revoke it first ('lsnet tokens revoke {name}') or choose another name"
        )
    new_id = conn.execute(
        api_tokens.insert().values(
            name=name,
            scope=scope.value,
            token_hash=token_hash,
            created_ms=now_ms,
            last_used_ms=0,
            revoked_ms=0,
            created_by=created_by,
        )
    ).inserted_primary_key
    assert new_id is not None
    info = TokenInfo(int(new_id[0]), name, scope.value, now_ms, 0, 0, created_by)
    if audit is not None:
        audit.record_txn(
            conn, AuditKind.OPERATOR_ACTION, code=CODE_TOKEN_CREATED, detail=_audit_detail(info)
        )
    return info


def _list_txn(conn: Connection, include_revoked: bool) -> list[TokenInfo]:
    query = select(*_INFO_COLUMNS).order_by(api_tokens.c.id)
    if not include_revoked:
        query = query.where(api_tokens.c.revoked_ms == 0)
    return [_info(r) for r in conn.execute(query)]


def _revoke_txn(
    conn: Connection, name_or_id: str, now_ms: int, audit: AuditLog | None
) -> TokenInfo:
    if name_or_id.isdigit():
        row = conn.execute(select(*_INFO_COLUMNS).where(api_tokens.c.id == int(name_or_id))).first()
        if row is None:
            raise TokenNotFound(f"no token with id {name_or_id}; see 'lsnet tokens list'")
        if row.revoked_ms != 0:
            raise TokenAlreadyRevoked(f"token {row.id} ({row.name}) is already revoked")
    else:
        row = conn.execute(
            select(*_INFO_COLUMNS).where(
                api_tokens.c.name == name_or_id, api_tokens.c.revoked_ms == 0
            )
        ).first()
        if row is None:
            raise TokenNotFound(f"no active token named {name_or_id!r}; see 'lsnet tokens list'")
    conn.execute(
        update(api_tokens)
        .where(api_tokens.c.id == row.id, api_tokens.c.revoked_ms == 0)
        .values(revoked_ms=now_ms)
    )
    info = _info(row)
    revoked = TokenInfo(
        info.id, info.name, info.scope, info.created_ms, info.last_used_ms, now_ms, info.created_by
    )
    if audit is not None:
        audit.record_txn(
            conn, AuditKind.OPERATOR_ACTION, code=CODE_TOKEN_REVOKED, detail=_audit_detail(revoked)
        )
    return revoked


def _lookup_txn(conn: Connection, token_hash: str) -> tuple[TokenInfo, str] | None:
    row = conn.execute(
        select(*_INFO_COLUMNS, api_tokens.c.token_hash).where(api_tokens.c.token_hash == token_hash)
    ).first()
    return None if row is None else (_info(row), row.token_hash)


def _touch_txn(conn: Connection, token_id: int, now_ms: int) -> None:
    conn.execute(
        update(api_tokens)
        .where(
            api_tokens.c.id == token_id,
            api_tokens.c.last_used_ms <= now_ms - LAST_USED_RESOLUTION_MS,
        )
        .values(last_used_ms=now_ms)
    )


# -- use cases -------------------------------------------------------------------------------------


async def create_token(
    db: Database,
    *,
    name: str,
    scope: Scope | str,
    created_by: str,
    now_ms: int,
    audit: AuditLog | None = None,
) -> tuple[str, TokenInfo]:
    """Create a token; return it (to show once) and what is stored about it.

    Raises TokenInvalid for a bad name, scope or operator, TokenNameTaken if an active token has
    the name. With `audit`, the `token_created` entry commits with the token or not at all.
    """
    check_name(name)
    checked_scope = parse_scope(scope)
    if len(created_by) > MAX_CREATED_BY_LEN or not created_by.isprintable():
        raise TokenInvalid(f"created-by must be at most {MAX_CREATED_BY_LEN} printable characters")
    token, token_hash = new_token()
    try:
        info = await db.write(
            _create_txn, name, checked_scope, token_hash, created_by, now_ms, audit
        )
    except IntegrityError:  # a concurrent create won the partial unique index
        raise TokenNameTaken(f"an active token named {name!r} exists") from None
    return token, info


async def list_tokens(db: Database, *, include_revoked: bool = True) -> Sequence[TokenInfo]:
    """Every token (or only the active ones), oldest first; never the tokens or their hashes."""
    return await db.read(_list_txn, include_revoked)


async def revoke_token(
    db: Database, name_or_id: str, *, now_ms: int, audit: AuditLog | None = None
) -> TokenInfo:
    """Revoke the active token with this name, or the token with this id (all digits).

    Raises TokenNotFound or TokenAlreadyRevoked. With `audit`, the `token_revoked` entry commits
    with the revocation or not at all.
    """
    return await db.write(_revoke_txn, name_or_id, now_ms, audit)


async def authenticate(db: Database, token: str, scope: Scope, now_ms: int) -> TokenCheck:
    """Decide about a presented token: allowed, unknown, revoked or wrong scope.

    Reads one row by the token's hash (a lookup that reveals nothing useful by its timing: the
    caller cannot choose the hash), confirms it with `hmac.compare_digest`, and on success
    refreshes `last_used_ms` when it is older than a minute (one small write then, none else).
    """
    if not looks_like_token(token):
        return TokenCheck(Verdict.UNKNOWN)
    presented = hash_token(token)
    found = await db.read(_lookup_txn, presented)
    if found is None or not hmac.compare_digest(presented.encode(), found[1].encode()):
        return TokenCheck(Verdict.UNKNOWN)
    info = found[0]
    verdict = decide(info, scope)
    if verdict is Verdict.ALLOWED and info.last_used_ms <= now_ms - LAST_USED_RESOLUTION_MS:
        await db.write(_touch_txn, info.id, now_ms)
    return TokenCheck(verdict, info)


async def check_token(db: Database, token: str, scope: Scope, now_ms: int) -> TokenInfo | None:
    """The token's info if it is active and has `scope`, else None."""
    result = await authenticate(db, token, scope, now_ms)
    return result.info if result.verdict is Verdict.ALLOWED else None
