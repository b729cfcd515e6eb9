"""`StandardsChannel.refresh` under concurrent callers: callers that arrive while a refresh runs
share one more refresh and wait on the event loop, not on worker threads (issue 8: hundreds of
nodes in one process ran out of executor threads waiting on each client's lock)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from hierarchy_config.loader import load_config
from hierarchy_config.network_init import init_network
from node.app import Node


async def test_concurrent_refreshes_share_one_queued_refresh(tmp_path: Path) -> None:
    layout = init_network(tmp_path / "net", provinces=1, cities_per_province=1, base_port=18950)
    node = Node.open(load_config(layout.ministry().config_path))
    try:
        await node.init_database()
        channel = node.standards
        assert channel is not None
        blocking_refresh = channel.client.refresh
        calls: list[str] = []
        running = 0
        most_at_once = 0
        lock = threading.Lock()

        def counted() -> None:
            nonlocal running, most_at_once
            with lock:
                running += 1
                most_at_once = max(most_at_once, running)
                calls.append(threading.current_thread().name)
            try:
                blocking_refresh()
            finally:
                with lock:
                    running -= 1

        channel.client.refresh = counted  # type: ignore[method-assign]
        results = await asyncio.wait_for(
            asyncio.gather(*(channel.refresh() for _ in range(20))), timeout=60
        )
        # The first call refreshes; the 19 that arrived meanwhile share one refresh after it.
        assert len(calls) == 2
        assert most_at_once == 1
        assert results[0] is True  # release 1 put in force
        assert results[1:] == [False] * 19  # nothing new since
        assert channel.version == 1
        # Nothing is left queued: a later call refreshes again.
        assert await channel.refresh() is False
        assert len(calls) == 3
    finally:
        await node.stop()


async def test_a_failed_refresh_reaches_every_caller_that_shared_it(tmp_path: Path) -> None:
    layout = init_network(tmp_path / "net", provinces=1, cities_per_province=1, base_port=18960)
    node = Node.open(load_config(layout.ministry().config_path))
    try:
        await node.init_database()
        channel = node.standards
        assert channel is not None

        def broken() -> None:
            raise RuntimeError("disk on fire")

        channel.client.refresh = broken  # type: ignore[method-assign]
        results = await asyncio.gather(
            *(channel.refresh() for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results)
        assert channel._queued is None  # the next call starts afresh
    finally:
        await node.stop()
