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
    """Opens after `threshold` consecutive failures, for `reset_s`; then lets one trial call through (half-open),
    reopens if it fails and closes if it succeeds. While the trial is out, every other call waits: a provider that is
    still down costs one attempt, not one per message in flight."""

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
        # While half-open: until when the trial call holds the one slot (a trial that never answers, its worker
        # gone, frees it after reset_s).
        self._trial_until = 0.0
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

    def admits(self) -> bool:
        """Whether a call may go now, which then counts as made: always while closed; while half-open, the first
        call (the trial) and no other until it answers; never while open."""
        now = self._clock()
        if self._open_until > now:
            return False
        if self._failures < self._threshold:
            return True
        if self._trial_until > now:
            return False
        self._trial_until = now + self._reset_s
        return True

    def wait_s(self) -> float:
        """How long a call that was not admitted should wait before asking again: until the breaker half-opens, or
        a moment while a trial is out."""
        now = self._clock()
        if self._open_until > now:
            return self._open_until - now
        return min(1.0, self._trial_until - now) if self._trial_until > now else 0.0

    def release(self) -> None:
        """An admitted call that was not made after all (its delivery needed no send): free the trial slot."""
        self._trial_until = 0.0

    def record_success(self) -> None:
        self._failures = 0
        self._open_until = 0.0
        self._trial_until = 0.0

    def record_failure(self) -> None:
        self._failures += 1
        self._trial_until = 0.0
        if self._failures >= self._threshold:
            self._open_until = self._clock() + self._reset_s
