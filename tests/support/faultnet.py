"""A `TestNet` whose every child→parent link runs through a `FaultProxy` (one per child, named
by the child's id), so scenario tests can break and heal single links or the whole tree."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tests.support.faultproxy import FaultProxy, Links
from tests.support.network import TestNet, make_network

# Fast failure detection and retries, so a healed link is used again within a second.
FAST_SYNC: dict[str, object] = {
    "debounce_ms": 5,
    "retry_interval_s": 0.3,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.4,
    "request_timeout_s": 1.5,
}


async def proxied_network(
    root: Path, *, seed: int = 0, overrides: dict[str, object] | None = None, **kwargs: Any
) -> tuple[TestNet, Links]:
    net = make_network(root, overrides={**FAST_SYNC, **(overrides or {})}, **kwargs)
    rng = random.Random(seed)
    proxies: dict[str, FaultProxy] = {}
    for node_id, cfg in list(net.configs.items()):
        if cfg.parent is None:
            continue
        target = net.configs[cfg.parent.id].node
        proxy = FaultProxy(target.host, target.port, name=node_id, rng=random.Random(rng.random()))
        await proxy.start()
        proxies[node_id] = proxy
        parent = cfg.parent.model_copy(update={"url": proxy.url})
        net.configs[node_id] = cfg.model_copy(update={"parent": parent})
    return net, Links(proxies, rng)
