"""An asyncio HTTP/1.1 fault proxy on 127.0.0.1 between two nodes (reliability.md B, C2).

A child's parent URL points at the proxy; the proxy forwards each request to the real parent on
a fresh upstream connection and the answer back, unless a fault says otherwise:

- LATENCY: wait `latency_s` before forwarding;  SLOW_DRIP: send the answer `drip_bytes` at a time
- BLACKHOLE: read the request, never answer (the client's timeout fires)
- REFUSE: stop listening (connection refused) and reset open connections
- RESET_REQUEST: forward half of the request, then reset both sides
- RESET_RESPONSE: forward the request, send half of the answer, then reset
- DROP_RESPONSE: forward the whole request, let the parent commit and answer, then reset the
  child's connection without the answer (the indeterminate, exactly-once case)
- DUPLICATE: send the request to the parent twice, answer with the first answer
- CORRUPT: flip one byte of the request body before forwarding

A fault is either persistent (`set`) or one-shot (`once`, consumed by the next requests).
Every request is captured so a test can `replay` it later, byte for byte. The proxy knows
nothing about lsnet messages; it parses only HTTP framing (Content-Length or chunked).
It is test support: no TLS, loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import StrEnum


class Fault(StrEnum):
    PASS = "pass"
    LATENCY = "latency"
    BLACKHOLE = "blackhole"
    REFUSE = "refuse"
    RESET_REQUEST = "reset_request"
    RESET_RESPONSE = "reset_response"
    DROP_RESPONSE = "drop_response"
    DUPLICATE = "duplicate"
    CORRUPT = "corrupt"
    SLOW_DRIP = "slow_drip"


class _Closed(Exception):
    pass


async def read_message(reader: asyncio.StreamReader) -> bytes | None:
    """One HTTP/1.1 message (head and body) as raw bytes; None at a clean end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise _Closed from None
    except (ConnectionError, asyncio.LimitOverrunError):
        raise _Closed from None
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    try:
        if not chunked:
            return head + await reader.readexactly(length)
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            body += size_line
            size = int(size_line.split(b";")[0].strip(), 16)
            body += await reader.readexactly(size + 2)
            if size == 0:
                return head + bytes(body)
    except (asyncio.IncompleteReadError, ConnectionError):
        raise _Closed from None


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a polite FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class FaultProxy:
    upstream_host: str
    upstream_port: int
    name: str = "proxy"
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    latency_s: float = 0.2
    drip_bytes: int = 16
    drip_interval_s: float = 0.005
    mode: Fault = Fault.PASS
    port: int = 0
    requests: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    captured: list[bytes] = field(default_factory=list)
    _once: deque[Fault] = field(default_factory=deque)
    _server: asyncio.Server | None = None
    _conns: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await self._close_listener()
        for w in list(self._conns):
            _reset(w)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    # -- control ---------------------------------------------------------------------------------
    async def set(self, fault: Fault) -> None:
        """A persistent fault for every request until `heal`."""
        self.mode = fault
        if fault is Fault.REFUSE:
            self.injected[fault.value] += 1
            await self._close_listener()
            for w in list(self._conns):
                _reset(w)
        elif self._server is None:
            await self.start()

    def once(self, *faults: Fault) -> None:
        """One-shot faults for the next requests, in order."""
        self._once.extend(faults)

    async def heal(self) -> None:
        self._once.clear()
        await self.set(Fault.PASS)

    def _next_fault(self) -> Fault:
        if self._once:
            return self._once.popleft()
        return self.mode

    async def replay(self, index: int = -1) -> bytes:
        """Send a captured request again to the parent, byte for byte; return the raw answer."""
        return await self._exchange(self.captured[index])

    # -- forwarding ------------------------------------------------------------------------------
    async def _exchange(self, request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        try:
            writer.write(request)
            await writer.drain()
            answer = await read_message(reader)
            if answer is None:
                raise _Closed
            return answer
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._conns.add(writer)
        try:
            while True:
                request = await read_message(reader)
                if request is None:
                    break
                if not await self._one(request, reader, writer):
                    break
        except (_Closed, ConnectionError, OSError):
            pass
        finally:
            self._conns.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    async def _one(
        self, request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Handle one request; False when the connection is finished."""
        self.requests += 1
        self.captured.append(request)
        fault = self._next_fault()
        if fault is not Fault.PASS:
            self.injected[fault.value] += 1
        if fault is Fault.REFUSE:
            _reset(writer)
            return False
        if fault is Fault.BLACKHOLE:
            with contextlib.suppress(Exception):
                await reader.read()  # until the client gives up
            return False
        if fault is Fault.LATENCY:
            await asyncio.sleep(self.latency_s)
        if fault is Fault.RESET_REQUEST:
            _, up_w = await asyncio.open_connection(self.upstream_host, self.upstream_port)
            up_w.write(request[: len(request) // 2])
            await up_w.drain()
            _reset(up_w)
            _reset(writer)
            return False
        if fault is Fault.CORRUPT:
            head_end = request.index(b"\r\n\r\n") + 4
            if len(request) > head_end:
                pos = self.rng.randrange(head_end, len(request))
                request = request[:pos] + bytes([request[pos] ^ 0x5A]) + request[pos + 1 :]
        try:
            answer = await self._exchange(request)
            if fault is Fault.DUPLICATE:
                await self._exchange(request)
        except (_Closed, ConnectionError, OSError):
            _reset(writer)
            return False
        if fault is Fault.DROP_RESPONSE:
            _reset(writer)
            return False
        if fault is Fault.RESET_RESPONSE:
            writer.write(answer[: len(answer) // 2])
            await writer.drain()
            _reset(writer)
            return False
        if fault is Fault.SLOW_DRIP:
            for i in range(0, len(answer), self.drip_bytes):
                writer.write(answer[i : i + self.drip_bytes])
                await writer.drain()
                await asyncio.sleep(self.drip_interval_s)
            return True
        writer.write(answer)
        await writer.drain()
        return True


@dataclass
class Links:
    """The proxies of a network by name, for partitions that clog link by link and heal in a
    random order (FoundationDB's swizzle-clog)."""

    proxies: dict[str, FaultProxy]
    rng: random.Random

    async def partition(self, names: list[str], fault: Fault = Fault.BLACKHOLE) -> None:
        for name in names:
            await self.proxies[name].set(fault)

    async def heal_in_random_order(self) -> list[str]:
        order = [n for n, p in self.proxies.items() if p.mode is not Fault.PASS]
        self.rng.shuffle(order)
        for name in order:
            await self.proxies[name].heal()
        return order

    async def stop(self) -> None:
        for p in self.proxies.values():
            await p.stop()
