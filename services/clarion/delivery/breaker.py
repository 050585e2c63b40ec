"""A circuit breaker per provider: after consecutive transient failures the worker stops calling the provider for a
while, and parks messages in the retry tiers instead of spending their attempts on a provider that is down.

Written here rather than with purgatory (which guards the gRPC dependencies) because a worker needs to ask "is it
open, and for how long?" before claiming a delivery, without that question counting as a call.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from clarion.core.metrics import BREAKER_CLOSED, BREAKER_HALF_OPEN, BREAKER_OPEN, BREAKER_STATE


class ProviderBreaker:
    """Opens after `threshold` consecutive failures, for `reset_s`; then lets calls through again (half-open) and
    reopens at the first failure, closes at the first success."""

    def __init__(
        self,
        *,
        threshold: int,
        reset_s: float,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = threshold
        self._reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0
        if name:
            # Read at scrape time, so half-open shows without anyone calling.
            BREAKER_STATE.labels(breaker=f"provider:{name}").set_function(self.state)

    def state(self) -> int:
        """BREAKER_CLOSED, BREAKER_HALF_OPEN (open time over, the next call decides) or BREAKER_OPEN."""
        if self.open_for_s() > 0:
            return BREAKER_OPEN
        return BREAKER_HALF_OPEN if self._failures >= self._threshold else BREAKER_CLOSED

    def open_for_s(self) -> float:
        """Seconds until calls may go through again; 0 when they may now."""
        return max(0.0, self._open_until - self._clock())

    def record_success(self) -> None:
        self._failures = 0
        self._open_until = 0.0

    def record_failure(self) -> None:
        self._failures += 1
        if self._failures >= self._threshold:
            self._open_until = self._clock() + self._reset_s
