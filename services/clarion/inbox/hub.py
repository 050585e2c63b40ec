"""The live side of the inbox: one LISTEN connection per server process, waking the watchers of the user each
NOTIFY names (clarion.inbox.store.CHANGES). A wake-up only says "look again": watchers read what changed from the
database, so a lost notification costs latency, never a message, and every watcher also looks again on its own at
least every `poll_s` and whenever the LISTEN connection is made again."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator

import asyncpg

from clarion.core.errors import ResourceExhausted
from clarion.core.logging import get_logger
from clarion.inbox.store import CHANGES

log = get_logger(__name__)


class InboxHub:
    """Watchers by user id. `watch` refuses (RESOURCE_EXHAUSTED) beyond `max_watchers` in this process: each holds
    a stream open, and the edge's own stream limits are per cluster, not per user."""

    def __init__(self, dsn: str, *, max_watchers: int, max_per_user: int = 10, reconnect_s: float = 2.0) -> None:
        self._dsn = dsn
        self._max_watchers = max_watchers
        # One user's streams (a tab each): so that one token cannot take every stream of the process.
        self._max_per_user = max_per_user
        self._reconnect_s = reconnect_s
        self._watchers: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._count = 0
        self._listener: asyncio.Task[None] | None = None
        self.closing = asyncio.Event()

    @property
    def watchers(self) -> int:
        return self._count

    @contextlib.asynccontextmanager
    async def watch(self, user_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever the user's inbox may have changed (and when the hub closes); the watcher clears it
        before it reads."""
        if self._count >= self._max_watchers:
            raise ResourceExhausted(
                f"this server already streams {self._max_watchers} inboxes; retry shortly (another instance may "
                "have room)",
                retry_after_s=5.0,
                reason="INBOX_WATCHERS_EXHAUSTED",
            )
        if len(self._watchers.get(user_id, ())) >= self._max_per_user:
            raise ResourceExhausted(
                f"this user already has {self._max_per_user} inbox streams open here; close one first",
                retry_after_s=5.0,
                reason="INBOX_WATCHERS_PER_USER_EXHAUSTED",
            )
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="inbox-listen")
        wake = asyncio.Event()
        self._watchers[user_id].add(wake)
        self._count += 1
        try:
            yield wake
        finally:
            self._count -= 1
            watchers = self._watchers[user_id]
            watchers.discard(wake)
            if not watchers:
                del self._watchers[user_id]

    def _notified(self, _connection: object, _pid: int, _channel: str, user_id: object) -> None:
        for wake in self._watchers.get(str(user_id), ()):
            wake.set()

    def _wake_all(self) -> None:
        for watchers in self._watchers.values():
            for wake in watchers:
                wake.set()

    async def _listen(self) -> None:
        """LISTEN until closed, connecting again after any failure; every watcher looks again after a reconnect
        (notifications sent while the connection was down are lost)."""
        while not self.closing.is_set():
            try:
                connection = await asyncpg.connect(self._dsn, timeout=5)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("inbox_listen_unavailable", error=type(exc).__name__)
                await _sleep_unless(self.closing, self._reconnect_s)
                continue
            try:
                closed = asyncio.Event()
                connection.add_termination_listener(lambda _connection, closed=closed: closed.set())
                await connection.add_listener(CHANGES, self._notified)
                self._wake_all()
                waits = [asyncio.ensure_future(closed.wait()), asyncio.ensure_future(self.closing.wait())]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for wait in waits:
                        wait.cancel()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("inbox_listen_lost", error=type(exc).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await connection.close(timeout=2)

    async def close(self) -> None:
        """End every watch (its stream returns, and the client resumes elsewhere from its cursor) and stop
        listening."""
        self.closing.set()
        self._wake_all()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
