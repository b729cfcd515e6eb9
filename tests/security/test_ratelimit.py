"""Per-peer rate limits: a noisy child gets 429 while its sibling's traffic goes through; an
address that keeps sending refused requests is answered 429 without being read."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from node.clock import SystemClock
from security.keys import NodeKey, load_signing_key
from security.ratelimit import RateLimiter
from sync.wire import parse_error_body
from tests.support.network import make_network
from tests.support.peer import signing_session
from tests.sync.helpers import seal_push


def test_bucket_refills_with_time() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after("a") > 0
    assert limiter.allow("b", 0.0)  # another peer has its own bucket
    assert limiter.allow("a", 0.5)  # one token back after half a second
    assert not limiter.allow("a", 0.5)


def test_tracked_keys_are_bounded() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1, max_keys=10)
    for i in range(100):
        limiter.allow(f"k{i}", 0.0)
    assert len(limiter._buckets) == 10


async def test_noisy_child_is_limited_and_its_sibling_is_not(tmp_path: Path) -> None:
    net = make_network(tmp_path, cities_per_province=2)
    province = net.province_ids()[0]
    cfg = net.configs[province]
    net.configs[province] = cfg.model_copy(
        update={
            "limits": cfg.limits.model_copy(update={"peer_requests_per_s": 0.5, "peer_burst": 3})
        }
    )
    await net.init_all()
    await net.start(province)
    try:
        url = net.configs[province].node.url + "/v1/sync/push"
        noisy, quiet = net.city_ids()
        keys = {c: load_signing_key(net.configs[c].node.key_file) for c in (noisy, quiet)}
        now = SystemClock().time_ms()

        def push(city: str, key: NodeKey | None = None) -> bytes:
            return seal_push(
                key or keys[city], sender=city, destination=province, batches_=(), sent_ms=now
            )

        statuses = []
        forger = NodeKey.generate()
        async with (
            signing_session(noisy, keys[noisy], province) as s,
            signing_session(quiet, keys[quiet], province) as q,
            signing_session(quiet, forger, province) as f,
        ):
            for _ in range(6):
                async with s.post(url, data=push(noisy)) as r:
                    statuses.append(r.status)
                    if r.status == 429:
                        assert parse_error_body(await r.read())[0] == "rate_limited"
                        assert int(r.headers["Retry-After"]) >= 1
            assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429, 429]
            async with q.post(url, data=push(quiet)) as r:
                assert r.status == 200
            # Forged pushes in the quiet city's name do not spend its budget: they fail first.
            async with f.post(url, data=push(quiet, forger)) as r:
                assert r.status == 401
        rejected = net.nodes[province].registry.get_sample_value(
            "lsnet_sync_rejected_total", {"reason": "rate_limited"}
        )
        assert rejected == 3
    finally:
        await net.stop_all()


async def test_address_with_many_refused_requests_is_cut_off(tmp_path: Path) -> None:
    net = make_network(tmp_path, cities_per_province=1)
    province = net.province_ids()[0]
    cfg = net.configs[province]
    net.configs[province] = cfg.model_copy(
        update={
            "limits": cfg.limits.model_copy(update={"bad_requests_per_s": 0.01, "bad_burst": 2})
        }
    )
    await net.init_all()
    await net.start(province)
    try:
        url = net.configs[province].node.url + "/v1/sync/push"
        async with aiohttp.ClientSession() as s:
            seen = []
            for _ in range(4):
                async with s.post(url, data=b"\xc1 not msgpack") as r:
                    seen.append(r.status)
        # Unsigned garbage: refused (401) until the address is cut off (429).
        assert seen == [401, 401, 429, 429]
    finally:
        await net.stop_all()


def test_nonce_cache_refuses_replays_within_the_window() -> None:
    from security.ratelimit import NonceCache

    cache = NonceCache(window_s=10.0, max_entries=3)
    assert cache.add("330100", b"n1", 0.0)
    assert not cache.add("330100", b"n1", 5.0)  # replay within the window
    assert cache.add("330200", b"n1", 5.0)  # the same nonce from another peer is fine
    assert cache.add("330100", b"n1", 20.0)  # expired (the request itself would be stale)
    for i in range(10):
        cache.add("p", bytes([i]), 21.0)
    assert len(cache._seen) <= 3
