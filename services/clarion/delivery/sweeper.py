"""The sweeper finds deliveries that nothing is working on any more and hands them back to the relay:

- SENDING past its lease: the worker died (or lost PostgreSQL for longer than the lease) mid-send. Its attempt is
  logged as unknown, since the provider may have taken the message.
- published (or due back from a retry tier) longer than `republish_after_s` ago and neither claimed nor finished:
  the message was lost on the way.

It also applies again the provider events that arrived before their delivery was recorded SENT
(clarion.provider_events.apply.apply_pending).

Right after PostgreSQL was away, leases are left alone for one lease period: the workers that held outcomes through
the outage record them first, instead of the sweeper sending their deliveries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from clarion.core.db import FastPath, is_database_unavailable
from clarion.core.logging import get_logger
from clarion.delivery.store import release_expired_leases, republish_stale
from clarion.provider_events.apply import apply_pending

log = get_logger(__name__)

# PostgreSQL's own start time: a restart the sweeper did not witness (it happened between two sweeps) still counts.
_SERVER_UPTIME_S = "SELECT extract(epoch FROM now() - pg_postmaster_start_time())::float8"


@dataclass(frozen=True, slots=True)
class Sweep:
    """What one sweep handed back to the relay."""

    released: int
    republished: int


class Sweeper:
    """Sweeps every `interval_s`, a batch of `batch_size` at a time."""

    def __init__(
        self,
        *,
        fast: FastPath,
        lease_s: float,
        republish_after_s: float,
        interval_s: float,
        batch_size: int = 500,
    ) -> None:
        self._fast = fast
        self._lease_s = lease_s
        self._republish_after_s = republish_after_s
        self._interval_s = interval_s
        self._batch_size = batch_size
        # monotonic time until which expired leases are left to their workers (after an outage)
        self._hold_leases_until = 0.0

    async def sweep_once(self) -> Sweep:
        """One sweep; raises what PostgreSQL raised."""
        released = republished = 0
        async with self._fast.connection() as connection:
            uptime_s = float(await connection.fetchval(_SERVER_UPTIME_S))
            holding = uptime_s < self._lease_s or time.monotonic() < self._hold_leases_until
            while not holding:
                batch = await release_expired_leases(connection, limit=self._batch_size)
                released += batch
                if batch < self._batch_size:
                    break
            while True:
                batch = await republish_stale(connection, older_than_s=self._republish_after_s, limit=self._batch_size)
                republished += batch
                if batch < self._batch_size:
                    break
            await apply_pending(connection, limit=self._batch_size)
        if released:
            log.warning("leases_released", count=released)
        if republished:
            log.warning("deliveries_republished", count=republished)
        return Sweep(released, republished)

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep until `stop`; a failed sweep is logged and tried again next time."""
        while not stop.is_set():
            try:
                await self.sweep_once()
            except Exception as exc:
                if not is_database_unavailable(exc):
                    log.exception("sweep_failed")
                else:
                    log.warning("sweep_database_unavailable", error=type(exc).__name__)
                    self._hold_leases_until = time.monotonic() + self._lease_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await stop.wait()
