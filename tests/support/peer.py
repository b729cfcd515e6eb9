"""A hand-made node client for tests: an aiohttp session that signs every request (RFC 9421)
as a given node, without checking answers — so a test can act as a child, a stranger or an
attacker and look at exactly what the server answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp

from node.clock import Clock, SystemClock
from security.http_signatures import Signer, sign_request
from security.keys import NodeKey


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
