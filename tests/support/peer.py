"""A hand-made node client for tests: an aiohttp session that signs every request (RFC 9421)
as a given node, without checking answers — so a test can act as a child, a stranger or an
attacker and look at exactly what the server answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp

from hierarchy_config.model import NodeConfig
from node.clock import Clock, SystemClock
from node.peer_auth import PeerAuth
from security.http_signatures import Signer, sign_request
from security.keyring import KeyRing
from security.keys import NodeKey
from sync.transport import HttpTransport


def signing_session(
    sender: str, key: NodeKey, destination: str, clock: Clock | None = None
) -> aiohttp.ClientSession:
    clock = clock or SystemClock()

    async def sign(
        req: aiohttp.ClientRequest,
        handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
    ) -> aiohttp.ClientResponse:
        raw = req.body
        body = raw if isinstance(raw, bytes) else await raw.as_bytes()
        headers = sign_request(
            Signer(sender, key), destination, req.method, str(req.url), body, clock.time_ms() / 1000
        )
        for name, value in headers.items():
            req.headers[name] = value
        return await handler(req)

    return aiohttp.ClientSession(middlewares=(sign,))


def peer_transport(
    config: NodeConfig, key: NodeKey, *, as_node: str | None = None, timeout_s: float = 5.0
) -> HttpTransport:
    """The transport a node built from `config` would use towards its parent (RFC 9421 signing
    with `key`, answers checked against the parent's key). `as_node` signs in another node's
    name (an impostor test)."""
    assert config.parent is not None
    ring = KeyRing.from_keys({config.parent.id: config.parent.verify_key})
    node_id = as_node or config.node_id
    auth = PeerAuth(
        node_id, Signer(node_id, key), ring, SystemClock(), {config.parent.url: config.parent.id}
    )
    return HttpTransport(timeout_s=timeout_s, middlewares=(auth.middleware,))
