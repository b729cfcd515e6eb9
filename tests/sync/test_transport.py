"""sync.transport.HttpTransport against small real HTTP servers on 127.0.0.1: whole answers, our
error bodies turned into PeerRejected, everything else into PeerUnavailable."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from sync.errors import PeerRejected, PeerUnavailable
from sync.transport import HttpTransport
from sync.wire import CONTENT_TYPE, packb

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/v1/sync/push", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/v1/sync/push"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    t = HttpTransport(timeout_s=5.0, max_response_bytes=256 * 1024)
    yield t
    await t.close()


async def test_returns_the_whole_answer_even_when_it_arrives_in_pieces(
    serve: Callable[[Handler], Awaitable[str]], transport: HttpTransport
) -> None:
    pieces = [bytes([i]) * 20_000 for i in range(1, 5)]

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse()
        resp.content_type = CONTENT_TYPE
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
            # Traffic shaping of this hand-made peer: let each piece travel on its own.
            await asyncio.sleep(0.02)
        await resp.write_eof()
        return resp

    url = await serve(handler)
    answer = await transport.post("330000", url, b"hello")
    assert answer == b"".join(pieces)


async def test_an_answer_over_the_limit_is_refused(
    serve: Callable[[Handler], Awaitable[str]], transport: HttpTransport
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x" * (256 * 1024 + 1), content_type=CONTENT_TYPE)

    url = await serve(handler)
    with pytest.raises(PeerUnavailable, match="too large"):
        await transport.post("330000", url, b"hello")


async def test_our_error_body_becomes_peer_rejected(
    serve: Callable[[Handler], Awaitable[str]], transport: HttpTransport
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        err = {"code": "bad_signature", "message": "batch of 330100: nope", "batch": 2}
        return web.Response(status=422, body=packb({"error": err}), content_type=CONTENT_TYPE)

    url = await serve(handler)
    with pytest.raises(PeerRejected) as info:
        await transport.post("330000", url, b"hello")
    exc = info.value
    assert (exc.status, exc.code, exc.batch_index) == (422, "bad_signature", 2)
    assert exc.message == "batch of 330100: nope"
    assert exc.can_retry is False
    assert exc.peer == "330000"


async def test_a_foreign_4xx_body_is_still_a_rejection(
    serve: Callable[[Handler], Awaitable[str]], transport: HttpTransport
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=429, text="<html>slow down</html>")

    url = await serve(handler)
    with pytest.raises(PeerRejected) as info:
        await transport.post("330000", url, b"hello")
    assert (info.value.code, info.value.batch_index) == ("unknown", None)
    assert "slow down" in info.value.message
    assert info.value.can_retry is True


async def test_server_errors_and_refused_connections_are_unavailable(
    serve: Callable[[Handler], Awaitable[str]], transport: HttpTransport
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, text="down for maintenance")

    url = await serve(handler)
    with pytest.raises(PeerUnavailable, match="HTTP 503") as info:
        await transport.post("330000", url, b"hello")
    assert not isinstance(info.value, PeerRejected)
    assert info.value.can_retry is True

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(PeerUnavailable) as info:
        await transport.post("330000", f"http://127.0.0.1:{closed_port}/v1/sync/push", b"x")
    assert info.value.can_retry is True
