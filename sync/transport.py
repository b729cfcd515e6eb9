"""How sync bytes reach a peer: a small interface and its aiohttp implementation.

`Transport.post` returns the body of a 2xx answer or raises `PeerUnavailable` (connection
problems, timeouts, 5xx) or `PeerRejected` (a 4xx with our error body). No aiohttp exception
leaves this module. Tests may plug in another Transport where HTTP is not the subject.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Protocol

import aiohttp

from sync.errors import PeerRejected, PeerUnavailable
from sync.wire import CONTENT_TYPE, unpackb


class Transport(Protocol):
    async def post(self, peer: str, url: str, body: bytes) -> bytes: ...

    async def close(self) -> None: ...


class HttpTransport:
    def __init__(
        self,
        *,
        timeout_s: float,
        max_response_bytes: int = 64 * 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        middlewares: Sequence[aiohttp.ClientMiddlewareType] = (),
    ) -> None:
        self._ssl = ssl_context
        self._middlewares = tuple(middlewares)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 10.0))
        self._max = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = client_session(self._timeout, self._ssl, self._middlewares)
        return self._session

    async def post(self, peer: str, url: str, body: bytes) -> bytes:
        session = self._get_session()
        try:
            async with session.post(url, data=body, headers={"Content-Type": CONTENT_TYPE}) as resp:
                data = await _read_capped(resp, self._max, peer)
                if resp.status >= 500:
                    raise PeerUnavailable(peer, f"HTTP {resp.status}")
                if resp.status >= 400:
                    code, message, index = _error_fields(data)
                    raise PeerRejected(peer, resp.status, code, message, index)
                return data
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PeerUnavailable(peer, f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def client_session(
    timeout: aiohttp.ClientTimeout,
    ssl_context: ssl.SSLContext | None,
    middlewares: Sequence[aiohttp.ClientMiddlewareType] = (),
) -> aiohttp.ClientSession:
    """A session that verifies peers with the node's TLS settings (or the defaults). A node
    passes its `node.peer_auth.PeerAuth.middleware`, which signs every request (RFC 9421) and
    verifies every answer before it is read."""
    connector = None if ssl_context is None else aiohttp.TCPConnector(ssl=ssl_context)
    return aiohttp.ClientSession(
        timeout=timeout, connector=connector, middlewares=tuple(middlewares)
    )


async def _read_capped(resp: aiohttp.ClientResponse, limit: int, peer: str) -> bytes:
    """The whole answer, refusing more than `limit` bytes. (An authenticating middleware has
    already read and verified it; then this returns the bytes it read.)"""
    if resp.content_length is not None:
        if resp.content_length > limit:
            raise PeerUnavailable(peer, "answer too large")
        return await resp.read()
    # StreamReader.read(n) returns what is buffered so far, not n bytes: read to EOF.
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        buf.extend(chunk)
        if len(buf) > limit:
            raise PeerUnavailable(peer, "answer too large")
    return bytes(buf)


def _error_fields(data: bytes) -> tuple[str, str, int | None]:
    try:
        err = unpackb(data, what="error")["error"]
        index = err.get("batch")
        return (
            str(err["code"]),
            str(err["message"]),
            index if isinstance(index, int) and not isinstance(index, bool) else None,
        )
    except Exception:
        return "unknown", data[:200].decode("utf-8", "replace"), None
