"""The standards client over real HTTP on 127.0.0.1: the node's pattern of calling the blocking
client in a worker thread while `fetch` runs each download on the event loop's aiohttp session."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from security.standards_trust import StandardsFileMissing, TooLargeError
from security.tuf_client import Fetch
from tests.security.test_standards_trust_support import (
    NOW,
    disk_state,
    make_client,
    make_ministry,
)


def aiohttp_fetch(session: aiohttp.ClientSession, base: str) -> Fetch:
    loop = asyncio.get_running_loop()

    async def get(relative: str, limit: int) -> bytes:
        async with session.get(base + relative) as resp:
            if resp.status == 404:
                raise StandardsFileMissing(relative)
            resp.raise_for_status()
            body = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > limit:
                    break  # endless data: stop reading, the client refuses
            return bytes(body)

    def fetch(relative: str, limit: int) -> bytes:
        return asyncio.run_coroutine_threadsafe(get(relative, limit), loop).result(timeout=30)

    return fetch


def read_file(root: Path, relative: str) -> bytes | None:
    path = (root / relative).resolve()
    if root.resolve() not in path.parents or not path.is_file():
        return None
    return path.read_bytes()


async def serve(
    aiohttp_server: Callable[..., Any], root: Path, endless: bool = False
) -> tuple[Any, str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        relative = request.match_info["path"]
        if endless and relative == "metadata/timestamp.json":
            resp = web.StreamResponse()
            await resp.prepare(request)
            for _ in range(10_000):
                await resp.write(b" " * 65536)
            return resp
        body = await asyncio.to_thread(read_file, root, relative)
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body)

    app = web.Application()
    app.router.add_get("/v1/standards/{path:.*}", handler)
    server = await aiohttp_server(app)
    return server, f"http://127.0.0.1:{server.port}/v1/standards/"


async def test_refresh_over_http(tmp_path: Path, aiohttp_server: Callable[..., Any]) -> None:
    ministry = make_ministry(tmp_path / "ministry")
    ministry.release(1)
    _, base = await serve(aiohttp_server, ministry.dir)
    async with aiohttp.ClientSession() as session:
        client = make_client(
            tmp_path, ministry.repo.root_bytes(1), aiohttp_fetch(session, base), clock=lambda: NOW
        )
        await asyncio.to_thread(client.refresh)
        assert client.current_release().version == 1
        ministry.release(2)
        await asyncio.to_thread(client.refresh)
        assert client.current_release().version == 2


async def test_endless_timestamp_over_http(
    tmp_path: Path, aiohttp_server: Callable[..., Any]
) -> None:
    ministry = make_ministry(tmp_path / "ministry")
    ministry.release(1)
    _, base = await serve(aiohttp_server, ministry.dir, endless=True)
    async with aiohttp.ClientSession() as session:
        client = make_client(
            tmp_path, ministry.repo.root_bytes(1), aiohttp_fetch(session, base), clock=lambda: NOW
        )
        before = disk_state(client)
        try:
            await asyncio.to_thread(client.refresh)
        except TooLargeError:
            pass
        else:  # pragma: no cover
            raise AssertionError("endless timestamp was accepted")
        assert disk_state(client) == before
