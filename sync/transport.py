"""How sync bytes reach a peer: a small interface and its aiohttp implementation.

`Transport.post` returns the body of a 2xx answer or raises `PeerUnavailable` (connection
problems, timeouts, 5xx) or `PeerRejected` (a 4xx with our error body). No aiohttp exception
leaves this module. Tests may plug in another Transport where HTTP is not the subject.
"""

from __future__ import annotations

import ssl
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
    ) -> None:
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 10.0))
        self._max = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = client_session(self._timeout, self._ssl)
        return self._session

    async def post(self, peer: str, url: str, body: bytes) -> bytes:
        session = self._get_session()
        try:
            async with session.post(url, data=body, headers={"Content-Type": CONTENT_TYPE}) as resp:
                # StreamReader.read(n) returns what is buffered so far, not n bytes: read to EOF.
                buf = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    buf.extend(chunk)
                    if len(buf) > self._max:
                        raise PeerUnavailable(peer, "answer too large")
                data = bytes(buf)
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
    timeout: aiohttp.ClientTimeout, ssl_context: ssl.SSLContext | None
) -> aiohttp.ClientSession:
    """A session that verifies peers with the node's TLS settings (or the defaults)."""
    if ssl_context is None:
        return aiohttp.ClientSession(timeout=timeout)
    return aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(ssl=ssl_context))


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
