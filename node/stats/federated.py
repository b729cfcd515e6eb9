"""Federated statistics queries (resource-library mode 3): the signed messages and their checks.

A query is made once by the node that asks (the *origin*, an ancestor of every node it reaches)
and signed by it: `{v, id, origin, request, issued, deadline_ms}` (purpose `stats-query`). It
travels down one hop at a time inside a hop envelope signed by the sending node (purpose
`stats-hop`): `{v, sender, dest, sent, nonce, query, origin_sig, path}`, where `path` lists the
nodes it went through from the origin. A receiver accepts it only from its **parent** (the only
node allowed to send downward), addressed to itself, within the clock-skew window, with an unseen
nonce; it verifies the parent's hop signature and, when the origin is the parent, the origin
signature too (further up it relies on its parent having checked the same, as a node only knows
its parent's key). `path` must start at the origin and end at the parent.

An answer is `{v, sender, dest, query_id, answered, missing, measure, scale, cells}` signed by
the answering child (purpose `stats-answer`) and checked by the parent against that child's key.

Pure trust decisions and wire shapes: no database, no HTTP (see `node.stats.service`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from nacl.signing import VerifyKey

from hierarchy_config.model import NodeConfig
from node.stats.cells import Cell, Partial
from node.stats.request import StatsError, StatsRequest
from security.keys import NodeKey
from security.signing import SignatureInvalid, sign, verify
from sync.wire import Code, Sealed, WireError, packb, unpackb

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_QUERY_BYTES",
    "QUERY_PATH",
    "Answer",
    "NonceCache",
    "QueryRejected",
    "ReceivedQuery",
    "check_answer",
    "check_hop",
    "make_answer",
    "make_hop",
    "make_query",
]

QUERY_PATH = "/v1/stats/query"
PURPOSE_QUERY = "stats-query"
PURPOSE_HOP = "stats-hop"
PURPOSE_ANSWER = "stats-answer"
MAX_QUERY_BYTES = 64 * 1024
MAX_ANSWER_BYTES = 32 * 1024 * 1024
MAX_CELLS = 200_000
MAX_PATH = 8


class QueryRejected(Exception):
    """A query or answer that is refused; `code` crosses the wire, `status` is the HTTP status."""

    def __init__(self, code: Code, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class NonceCache:
    """Nonces of recently accepted hops (bounded), so a captured query cannot be replayed."""

    def __init__(self, size: int = 4096) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._size = size

    def add(self, nonce: bytes) -> bool:
        """True if new (and now remembered)."""
        if nonce in self._seen:
            return False
        self._seen[nonce] = None
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True


def make_query(
    key: NodeKey, origin: str, request: StatsRequest, now_ms: int, deadline_ms: int
) -> tuple[str, bytes, bytes]:
    """The query's id, the origin's query bytes and its signature over them."""
    query_id = os.urandom(12).hex()
    query = packb(
        {
            "v": 1,
            "id": query_id,
            "origin": origin,
            "request": request.to_wire(),
            "issued": now_ms,
            "deadline_ms": deadline_ms,
        }
    )
    return query_id, query, sign(key, PURPOSE_QUERY, query)


def make_hop(
    key: NodeKey,
    sender: str,
    dest: str,
    query: bytes,
    origin_sig: bytes,
    path: list[str],
    now_ms: int,
) -> bytes:
    envelope = packb(
        {
            "v": 1,
            "sender": sender,
            "dest": dest,
            "sent": now_ms,
            "nonce": os.urandom(16),
            "query": query,
            "origin_sig": origin_sig,
            "path": path,
        }
    )
    return Sealed(envelope, sign(key, PURPOSE_HOP, envelope)).to_bytes()


@dataclass(frozen=True)
class ReceivedQuery:
    id: str
    origin: str
    request: StatsRequest
    query: bytes
    origin_sig: bytes
    path: list[str]
    deadline_ms: int


def _map(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or value.get("v") != 1:
        raise QueryRejected(Code.MALFORMED, f"{what} must be a version-1 map")
    return value


def check_hop(
    config: NodeConfig, body: bytes, now_ms: int, max_skew_ms: int, nonces: NonceCache
) -> ReceivedQuery:
    """Verify a query arriving from above; raise QueryRejected with the precise reason."""
    if len(body) > MAX_QUERY_BYTES:
        raise QueryRejected(Code.TOO_LARGE, f"a query is at most {MAX_QUERY_BYTES} bytes", 413)
    try:
        sealed = Sealed.from_bytes(body)
        doc = _map(unpackb(sealed.envelope, what="stats query"), "stats query")
    except WireError as exc:
        raise QueryRejected(exc.code, exc.message) from None
    sender = doc.get("sender")
    parent = config.parent
    if parent is None or sender != parent.id:
        raise QueryRejected(
            Code.NOT_AUTHORISED, f"{sender!r} is not this node's parent; only ancestors query", 403
        )
    if doc.get("dest") != config.node_id:
        raise QueryRejected(Code.WRONG_DESTINATION, "query is addressed to another node", 400)
    try:
        verify(parent.verify_key, PURPOSE_HOP, sealed.envelope, sealed.signature)
    except SignatureInvalid:
        raise QueryRejected(Code.BAD_SIGNATURE, f"query is not signed by {sender}", 401) from None
    sent = doc.get("sent")
    if not isinstance(sent, int) or abs(now_ms - sent) > max_skew_ms:
        raise QueryRejected(Code.STALE, "query send time is outside the allowed clock skew", 401)
    nonce, query, origin_sig, path = (doc.get(k) for k in ("nonce", "query", "origin_sig", "path"))
    if not isinstance(nonce, bytes) or not 8 <= len(nonce) <= 64:
        raise QueryRejected(Code.MALFORMED, "query nonce must be 8 to 64 bytes")
    if not (isinstance(query, bytes) and isinstance(origin_sig, bytes)):
        raise QueryRejected(Code.MALFORMED, "query and origin_sig must be bytes")
    if not (
        isinstance(path, list)
        and 1 <= len(path) <= MAX_PATH
        and all(isinstance(p, str) for p in path)
    ):
        raise QueryRejected(Code.MALFORMED, f"path must list 1 to {MAX_PATH} node ids")
    try:
        q = _map(unpackb(query, what="stats query body"), "stats query body")
    except WireError as exc:
        raise QueryRejected(exc.code, exc.message) from None
    origin = q.get("origin")
    if path[0] != origin or path[-1] != sender or config.node_id in path:
        raise QueryRejected(
            Code.NOT_AUTHORISED,
            "query path must run from its origin down to this node's parent",
            403,
        )
    if origin == parent.id:
        try:
            verify(parent.verify_key, PURPOSE_QUERY, query, origin_sig)
        except SignatureInvalid:
            raise QueryRejected(
                Code.BAD_SIGNATURE, "query is not signed by its origin", 401
            ) from None
    if not nonces.add(nonce):
        raise QueryRejected(Code.REPLAY, "this query was already received", 409)
    raw = q.get("request")
    deadline = q.get("deadline_ms")
    if (
        not isinstance(raw, dict)
        or not isinstance(deadline, int)
        or not isinstance(q.get("id"), str)
    ):
        raise QueryRejected(Code.MALFORMED, "query needs id, request and deadline_ms")
    try:
        request = StatsRequest.parse(
            str(raw.get("indicator")),
            [str(b) for b in raw.get("by") or []],
            str(raw.get("period")),
            raw.get("region") if isinstance(raw.get("region"), str) else None,
            str(raw.get("region_level")),
        )
    except StatsError as exc:
        raise QueryRejected(Code.MALFORMED, exc.message) from None
    return ReceivedQuery(str(q["id"]), str(origin), request, query, origin_sig, path, deadline)


@dataclass(frozen=True)
class Answer:
    partial: Partial
    answered: list[str]
    missing: list[dict[str, str]]


def make_answer(
    key: NodeKey, sender: str, dest: str, query_id: str, keys_width: int, answer: Answer
) -> bytes:
    envelope = packb(
        {
            "v": 1,
            "sender": sender,
            "dest": dest,
            "query_id": query_id,
            "answered": answer.answered,
            "missing": [[m["node"], m["reason"]] for m in answer.missing],
            "measure": answer.partial.measure,
            "scale": answer.partial.scale,
            "width": keys_width,
            "cells": [c.to_wire(k) for k, c in answer.partial.cells.items()],
        }
    )
    return Sealed(envelope, sign(key, PURPOSE_ANSWER, envelope)).to_bytes()


def check_answer(
    child: str,
    verify_key: VerifyKey,
    me: str,
    query_id: str,
    width: int,
    subtree: set[str],
    data: bytes,
) -> Answer:
    """A child's answer, verified against its key; raise QueryRejected if anything is off."""
    try:
        sealed = Sealed.from_bytes(data)
        verify(verify_key, PURPOSE_ANSWER, sealed.envelope, sealed.signature)
        doc = _map(unpackb(sealed.envelope, what="stats answer"), "stats answer")
    except WireError as exc:
        raise QueryRejected(exc.code, exc.message) from None
    except SignatureInvalid:
        raise QueryRejected(Code.BAD_SIGNATURE, f"answer is not signed by {child}") from None
    if doc.get("sender") != child or doc.get("dest") != me or doc.get("query_id") != query_id:
        raise QueryRejected(Code.MALFORMED, "answer is for another query, sender or node")
    answered, missing, cells = doc.get("answered"), doc.get("missing"), doc.get("cells")
    if not (isinstance(answered, list) and isinstance(missing, list) and isinstance(cells, list)):
        raise QueryRejected(Code.MALFORMED, "answer needs answered, missing and cells lists")
    if doc.get("width") != width or len(cells) > MAX_CELLS:
        raise QueryRejected(Code.MALFORMED, "answer cells do not match the query")
    names = [str(a) for a in answered] + [str(m[0]) for m in missing if isinstance(m, list) and m]
    if not set(names) <= subtree:
        raise QueryRejected(Code.NOT_AUTHORISED, f"{child} answered for nodes outside its subtree")
    try:
        parsed = dict(Cell.from_wire(row, width) for row in cells)
    except ValueError as exc:
        raise QueryRejected(Code.MALFORMED, str(exc)) from None
    scale = doc.get("scale")
    measure = doc.get("measure")
    if not isinstance(scale, int) or not isinstance(measure, str):
        raise QueryRejected(Code.MALFORMED, "answer needs measure and scale")
    return Answer(
        Partial(measure, scale, parsed),
        [str(a) for a in answered],
        [
            {"node": str(m[0]), "reason": str(m[1])[:200]}
            for m in missing
            if isinstance(m, list) and len(m) == 2
        ],
    )
