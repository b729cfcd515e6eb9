"""The one place periodic jobs are registered (APScheduler 3, asyncio).

Jobs never overlap themselves and missed runs coalesce. `stop` cancels the runs still in flight
(they end quietly: a node stopping is no job failure, and none runs on after the database is
closed). Tests call `run_now(name)` to fire a job without waiting for its interval. This module
does not decide what the jobs do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger("lsnet.jobs")

Job = Callable[[], Awaitable[None]]


class Jobs:
    def __init__(self) -> None:
        self._scheduler = AsyncIOScheduler()
        self._jobs: dict[str, Job] = {}
        self._running: set[asyncio.Task[None]] = set()

    def every(self, name: str, seconds: float, job: Job) -> None:
        self._jobs[name] = job
        self._scheduler.add_job(
            self._guarded(name),
            "interval",
            seconds=seconds,
            id=name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(seconds)),
        )

    def _guarded(self, name: str) -> Job:
        async def run() -> None:
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                await self._jobs[name]()
            except asyncio.CancelledError:
                log.info("job %s stopped with the node", name)
            except Exception:
                log.exception("job %s failed", name)
            finally:
                if task is not None:
                    self._running.discard(task)

        return run

    async def run_now(self, name: str) -> None:
        await self._jobs[name]()

    def start(self) -> None:
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        for task in list(self._running):
            task.cancel()
