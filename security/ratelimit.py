"""Token-bucket rate limits per peer (so one noisy or hostile peer cannot starve the others) and
the nonce cache that refuses replayed requests.

Pure and clock-driven (the caller passes monotonic seconds); no I/O. Memory is bounded: the
least recently used buckets are dropped first; nonces expire after the replay window (requests
older than the window are refused as stale before they reach the cache).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 10_000) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate_per_s
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, key: str, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens from `key`'s bucket if it has them."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return True
        return False

    def retry_after(self, key: str, cost: float = 1.0) -> float:
        """Seconds until `key` may send again."""
        bucket = self._buckets.get(key)
        if bucket is None or bucket.tokens >= cost:
            return 0.0
        return (cost - bucket.tokens) / self.rate


class NonceCache:
    """Remembers (peer, nonce) pairs for `window_s`; `add` is False for a pair seen before."""

    def __init__(self, window_s: float, max_entries: int = 1_000_000) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._seen: OrderedDict[tuple[str, bytes], float] = OrderedDict()

    def add(self, peer: str, nonce: bytes, now: float) -> bool:
        while self._seen:
            oldest_key, seen_at = next(iter(self._seen.items()))
            if now - seen_at <= self.window_s and len(self._seen) < self.max_entries:
                break
            del self._seen[oldest_key]
        key = (peer, nonce)
        if key in self._seen:
            return False
        self._seen[key] = now
        return True
