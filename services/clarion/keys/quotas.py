"""Token buckets, one per caller: the per-API-key quota each server process enforces.

In-process on purpose: each instance holds its own buckets, so N instances behind Envoy allow up to N times the
rate. A Redis-backed bucket shared by every instance is the later step; Envoy's local_ratelimit is the coarse guard.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_s: float


class KeyedRateLimiter:
    """A token bucket per key: `rate_per_s` tokens a second, up to `burst` saved; each call takes one."""

    def __init__(
        self, *, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be positive and burst at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        # Only authenticated keys get a bucket, so this bounds memory against a key count nobody should reach.
        self._max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str) -> float:
        """Take a token for `key`: 0.0 when the call may go ahead, else the seconds until a token is back."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._buckets.clear()  # a full reset errs towards letting calls through
            bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), updated_s=now)
        else:
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated_s) * self.rate_per_s)
            bucket.updated_s = now
        # The epsilon forgives float rounding of refills: a whole token that reads 0.9999999999999 is a token.
        if bucket.tokens >= 1.0 - 1e-9:
            bucket.tokens = max(0.0, bucket.tokens - 1.0)
            return 0.0
        return (1.0 - bucket.tokens) / self.rate_per_s
