"""Time for everything in a node comes from here.

`Clock` is the one interface node logic uses to read wall time, monotonic time and to wait;
`SystemClock` is the real one and `FakeClock` lets tests drive time by hand. This module does not
schedule jobs (see `node.scheduling`) and does no I/O.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Protocol


class Clock(Protocol):
    """Source of time for node logic."""

    def time_ms(self) -> int:
        """Wall-clock time in milliseconds since the Unix epoch."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never goes backwards."""

    async def sleep(self, seconds: float) -> None:
        """Wait for `seconds` of this clock's time."""


# Test-only: shift one node's wall clock (seconds, may be negative) to test clock skew between
# real processes. Monotonic time and waiting are not affected.
CLOCK_OFFSET_ENV = "LSNET_TEST_CLOCK_OFFSET_S"


class SystemClock:
    """The real clock (optionally shifted by a fixed offset, for skew tests)."""

    def __init__(self, offset_s: float = 0.0) -> None:
        self._offset_ms = int(offset_s * 1000)

    @classmethod
    def from_env(cls) -> SystemClock:
        """The real clock, shifted by LSNET_TEST_CLOCK_OFFSET_S if that is set."""
        raw = os.environ.get(CLOCK_OFFSET_ENV, "").strip()
        return cls(float(raw)) if raw else cls()

    def time_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self._offset_ms

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that only moves when a test calls `advance`.

    Sleepers wake when the clock passes their deadline, so backoff and debounce logic can be
    exercised without real waiting.
    """

    def __init__(self, start_ms: int = 1_790_000_000_000) -> None:
        self._now = start_ms / 1000.0
        self._waiters: list[tuple[float, asyncio.Future[None]]] = []

    def time_ms(self) -> int:
        return int(self._now * 1000)

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._now + seconds, fut))
        await fut

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        self._now += seconds
        due = [w for w in self._waiters if w[0] <= self._now]
        self._waiters = [w for w in self._waiters if w[0] > self._now]
        for _, fut in due:
            if not fut.done():
                fut.set_result(None)
