"""The sweeper: deliveries stuck in SENDING past their lease (their worker died mid-send) go back to the relay."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clarion.core.logging import get_logger
from clarion.delivery.outcomes import release_expired_leases

log = get_logger(__name__)


async def sweep_once(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Release every expired lease (a batch at a time); returns how many deliveries went back."""
    released = 0
    while True:
        async with sessions.begin() as session:
            batch = await release_expired_leases(session)
        released += batch
        if batch == 0:
            break
    if released:
        log.warning("leases_released", count=released)
    return released


async def run_sweeper(sessions: async_sessionmaker[AsyncSession], *, interval_s: float, stop: asyncio.Event) -> None:
    """Sweep every `interval_s` until `stop`; a failed sweep is logged and tried again next time."""
    while not stop.is_set():
        try:
            await sweep_once(sessions)
        except Exception:
            log.exception("sweep_failed")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):
                await stop.wait()
