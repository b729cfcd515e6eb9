"""A TCP relay on 127.0.0.1 that adds a fixed one-way delay in each direction: a WAN link's
latency (round trip = twice the delay) with loopback bandwidth, for the benchmarks.

Each chunk read on one side is written to the other side `one_way_s` after it was read, in
order, so data keeps streaming while earlier data is still "on the wire" (a delay line, not a
stop-and-wait). Reads are bounded (64 KiB chunks, at most 256 chunks queued per direction), so
memory stays bounded whatever the sender does.

What it does not do: no bandwidth limit, no loss, no reordering, no TLS; it listens and connects
on 127.0.0.1 only. It runs its own event loop in a thread, so a synchronous benchmark can start
and stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

CHUNK = 64 * 1024
QUEUED = 256


class DelayLink:
    def __init__(self, target_port: int, one_way_s: float) -> None:
        if not 0 <= one_way_s <= 5:
            raise ValueError("one-way delay must be between 0 and 5 seconds")
        self.target_port = target_port
        self.one_way_s = one_way_s
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="delay-link")
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DelayLink:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._direction(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _direction(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED)

        async def deliver() -> None:
            while True:
                due, data = await line.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.close()
                    return
                dst.write(data)
                await dst.drain()

        writer = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await src.read(CHUNK)
                await line.put((loop.time() + self.one_way_s, data))
                if not data:
                    break
            await writer
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.cancel()
            with contextlib.suppress(OSError):
                dst.close()
