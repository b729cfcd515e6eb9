"""RFC 9421 HTTP Message Signatures between nodes (issue 4, item 1), on `http-message-signatures`.

Every node-to-node request is signed by the sending node over: the method, the path, the query,
the destination node id (`LSNet-Destination`), the sending node id (`LSNet-Sender`), the body's
`Content-Digest` (RFC 9530, sha-256), the creation time and a random nonce; the key id names node
and key (`"<node>:<kid>"`), so a rotated key is found by its id. Every answer is signed by the
answering node over its status, its own `Content-Digest` and the request's nonce
(`LSNet-Request-Nonce`), so an answer cannot be replayed onto another request.

This module is glue between the library and our key ring: message views, `sign_request`,
`verify_request` (returns who signed, or raises `RequestRefused` with a precise code),
`sign_response` and `verify_response`. Time is passed in (the node's injected clock), never read
here. It does not keep the nonce cache (the caller does, `security.ratelimit.NonceCache`), does
not read bodies from sockets and does not decide which node may call which path
(`node.peer_auth` does).
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException
from nacl.signing import VerifyKey

from security.keyring import KeyRefused, KeyRing
from security.keys import NodeKey

HEADER_DESTINATION = "LSNet-Destination"
HEADER_SENDER = "LSNet-Sender"
HEADER_REQUEST_NONCE = "LSNet-Request-Nonce"
REQUEST_TAG = "lsnet-request"
RESPONSE_TAG = "lsnet-response"
REQUEST_COMPONENTS = (
    "@method",
    "@path",
    "@query",
    "lsnet-destination",
    "lsnet-sender",
    "content-digest",
)
RESPONSE_COMPONENTS = ("@status", "lsnet-request-nonce", "lsnet-destination", "content-digest")
# Signature headers larger than this are refused before any parsing.
MAX_SIGNATURE_HEADER_BYTES = 2048


class RequestRefused(Exception):
    """A request or answer whose signature cannot be trusted; `code` crosses the wire."""

    def __init__(self, code: str, message: str, signer: str = "", nonce: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.signer = signer  # the node the signature claims, when it could be read
        self.nonce = nonce  # the nonce it claims, so a refusal can be signed for it


class _Headers:
    """A case-preserving header list with the mapping operations the library needs."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = list(items)

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._items))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self._items)

    def __getitem__(self, name: str) -> str:
        values = [v for n, v in self._items if n.lower() == name.lower()]
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def get(self, name: str, default: str = "") -> str:
        values = [v for n, v in self._items if n.lower() == name.lower()]
        return ", ".join(values) if values else default

    def __setitem__(self, name: str, value: str) -> None:
        self.__delitem__(name)
        self._items.append((name, value))

    def __delitem__(self, name: str) -> None:
        self._items = [(n, v) for n, v in self._items if n.lower() != name.lower()]


@dataclass
class RequestView:
    """What the signature covers of a request: method, URL (path and query) and headers."""

    method: str
    url: str
    headers: _Headers = field(default_factory=_Headers)


@dataclass
class ResponseView:
    status_code: int
    headers: _Headers
    request: RequestView


@dataclass(frozen=True)
class Signer:
    """Who signs: the node id and its current key."""

    node_id: str
    key: NodeKey

    @property
    def key_id(self) -> str:
        return f"{self.node_id}:{self.key.kid}"


class _Resolver(HTTPSignatureKeyResolver):
    def __init__(self, private: Ed25519PrivateKey | None = None, public: Any = None) -> None:
        self._private = private
        self._public = public

    def resolve_private_key(self, key_id: str) -> Ed25519PrivateKey:
        assert self._private is not None
        return self._private

    def resolve_public_key(self, key_id: str) -> Any:
        return self._public


def _private(key: NodeKey) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(key.signing_key))


def _public(key: VerifyKey) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes(key))


def new_nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")


_SIGNERS: dict[bytes, HTTPMessageSigner] = {}


def _signer(key: NodeKey) -> HTTPMessageSigner:
    """One library signer per key (building the private key object costs more than signing)."""
    raw = bytes(key.verify_key)
    signer = _SIGNERS.get(raw)
    if signer is None:
        if len(_SIGNERS) > 64:
            _SIGNERS.clear()
        signer = HTTPMessageSigner(
            signature_algorithm=algorithms.ED25519, key_resolver=_Resolver(private=_private(key))
        )
        _SIGNERS[raw] = signer
    return signer


def sign_request(
    signer: Signer,
    destination: str,
    method: str,
    url: str,
    body: bytes,
    now_s: float,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers to add to a request: destination, sender, digest and the signature."""
    view = RequestView(method.upper(), url)
    view.headers[HEADER_DESTINATION] = destination
    view.headers[HEADER_SENDER] = signer.node_id
    _signer(signer.key).sign(
        view,
        key_id=signer.key_id,
        created=dt.datetime.fromtimestamp(int(now_s), tz=dt.UTC),
        nonce=nonce or new_nonce(),
        tag=REQUEST_TAG,
        covered_component_ids=REQUEST_COMPONENTS,
        body=body,
    )
    return dict(view.headers.items())


@dataclass(frozen=True)
class Verified:
    """A request whose signature verified: who sent it, with which key, and its nonce."""

    sender: str
    kid: str
    nonce: str
    created_s: int


class _Verifier(HTTPMessageVerifier):
    """The library's verifier with our clock: the skew window is checked by the caller."""

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        if "created" not in sig_input.params:
            raise InvalidSignature('the signature has no "created" parameter')


def _signature_params(headers: _Headers) -> tuple[str, str, int, str]:
    """(node, kid, created, nonce) claimed by the Signature-Input header, unverified."""
    raw = headers.get("Signature-Input")
    if not raw or "Signature" not in headers:
        raise RequestRefused("unauthenticated", "the request carries no HTTP message signature")
    if len(raw) + len(headers.get("Signature")) > MAX_SIGNATURE_HEADER_BYTES:
        raise RequestRefused("malformed", "signature headers are too large")
    try:
        parsed = HTTPMessageVerifier._parse_signature_dictionary(raw)
    except HTTPMessageSignaturesException:
        raise RequestRefused("malformed", "the Signature-Input header is malformed") from None
    except Exception:
        raise RequestRefused("malformed", "the Signature-Input header is malformed") from None
    if len(parsed) != 1:
        raise RequestRefused("malformed", "exactly one signature is expected")
    params = next(iter(parsed.values())).params
    keyid, created, nonce = params.get("keyid"), params.get("created"), params.get("nonce")
    if not isinstance(keyid, str) or ":" not in keyid:
        raise RequestRefused("malformed", 'the signature key id must be "<node>:<kid>"')
    if type(created) is not int or not isinstance(nonce, str) or not 8 <= len(nonce) <= 64:
        raise RequestRefused("malformed", "the signature needs a created time and a nonce")
    node, _, kid = keyid.partition(":")
    return node, kid, created, nonce


def _verify(
    view: RequestView | ResponseView,
    key: VerifyKey,
    body: bytes,
    tag: str,
    components: tuple[str, ...],
    signer: str,
    nonce: str = "",
) -> None:
    verifier = _Verifier(
        signature_algorithm=algorithms.ED25519, key_resolver=_Resolver(public=_public(key))
    )
    try:
        verifier.verify(
            view, expect_tag=tag, require_components=components, body=body, max_age=None
        )
    except (InvalidSignature, HTTPMessageSignaturesException) as exc:
        text = str(exc) or type(exc).__name__
        code = "bad_digest" if "digest" in text.lower() else "bad_signature"
        message = f"HTTP signature of {signer} does not verify: {text}"
        raise RequestRefused(code, message, signer, nonce) from None


@dataclass(frozen=True)
class Claimed:
    """A request's signature parameters after the checks that need no body and no crypto."""

    sender: str
    kid: str
    nonce: str
    created_s: int
    key: VerifyKey


def precheck_request(
    headers: Iterable[tuple[str, str]],
    *,
    me: str,
    keys: KeyRing,
    now_s: float,
    max_skew_s: float,
) -> Claimed:
    """Everything that can be refused before the body is read and before any signature work:
    signature headers present and well-formed, claimed signer and destination, the signer's key
    (unknown, revoked, expired, not yet valid) and the creation time within the skew window."""
    view = _Headers(headers)
    node, kid, created, nonce = _signature_params(view)
    if view.get(HEADER_SENDER) != node:
        raise RequestRefused(
            "bad_signature", "the signing key belongs to another node", node, nonce
        )
    destination = view.get(HEADER_DESTINATION)
    if destination != me:
        raise RequestRefused(
            "wrong_destination",
            f"the request is addressed to {destination!r}, this is {me}",
            node,
            nonce,
        )
    try:
        key = keys.check(node, kid, int(now_s * 1000))
    except KeyRefused as exc:
        code = exc.code.value
        if code == "unknown_key":  # an unknown node, or a key that is not one of its keys
            code = "bad_signature" if keys.knows(node) else "unknown_sender"
        raise RequestRefused(code, exc.message, node, nonce) from None
    if abs(now_s - created) > max_skew_s:
        raise RequestRefused(
            "stale",
            f"the request was signed {abs(now_s - created):.0f}s away from this node's clock "
            f"(allowed {max_skew_s:.0f}s); check the clocks",
            node,
            nonce,
        )
    return Claimed(node, kid, nonce, created, key)


def verify_claimed(
    claimed: Claimed, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes
) -> Verified:
    """The signature over method, path, query, the LSNet headers and the body's digest."""
    view = RequestView(method.upper(), url, _Headers(headers))
    _verify(view, claimed.key, body, REQUEST_TAG, REQUEST_COMPONENTS, claimed.sender, claimed.nonce)
    return Verified(claimed.sender, claimed.kid, claimed.nonce, claimed.created_s)


def verify_request(
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    me: str,
    keys: KeyRing,
    now_s: float,
    max_skew_s: float,
) -> Verified:
    """Verify a request addressed to node `me`, or raise RequestRefused with a precise code."""
    items = list(headers)
    claimed = precheck_request(items, me=me, keys=keys, now_s=now_s, max_skew_s=max_skew_s)
    return verify_claimed(claimed, method, url, items, body)


def sign_response(
    signer: Signer,
    status: int,
    body: bytes,
    request_nonce: str,
    destination: str,
    now_s: float,
) -> dict[str, str]:
    """The headers that authenticate an answer to one signed request."""
    request = RequestView("POST", "http://peer/")
    view = ResponseView(status, _Headers(), request)
    view.headers[HEADER_REQUEST_NONCE] = request_nonce
    view.headers[HEADER_DESTINATION] = destination
    _signer(signer.key).sign(
        view,
        key_id=signer.key_id,
        created=dt.datetime.fromtimestamp(int(now_s), tz=dt.UTC),
        nonce=new_nonce(),
        tag=RESPONSE_TAG,
        covered_component_ids=RESPONSE_COMPONENTS,
        body=body,
    )
    return dict(view.headers.items())


def verify_response(
    status: int,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    me: str,
    peer: str,
    request_nonce: str,
    keys: KeyRing,
    now_s: float,
) -> None:
    """Raise RequestRefused unless the answer is signed by `peer` for our request's nonce."""
    view = ResponseView(status, _Headers(headers), RequestView("POST", "http://peer/"))
    try:
        node, kid, _, _ = _signature_params(view.headers)
    except RequestRefused as exc:
        raise RequestRefused(
            exc.code, f"the answer is not signed properly ({exc.message})"
        ) from None
    if node != peer:
        raise RequestRefused("bad_signature", f"the answer is signed by {node}, not {peer}", node)
    if view.headers.get(HEADER_REQUEST_NONCE) != request_nonce:
        raise RequestRefused("replay", "the answer does not belong to this request", node)
    if view.headers.get(HEADER_DESTINATION) != me:
        raise RequestRefused("wrong_destination", "the answer is addressed to another node", node)
    try:
        key = keys.check(node, kid, int(now_s * 1000))
    except KeyRefused as exc:
        raise RequestRefused(exc.code.value, exc.message, node) from None
    _verify(view, key, body, RESPONSE_TAG, RESPONSE_COMPONENTS, node)


def request_nonce(headers: Mapping[str, str]) -> str:
    """The nonce of the signature we put on a request (for matching its answer)."""
    view = _Headers(headers.items())
    return _signature_params(view)[3]
