"""Running a synchronous provider client (sendgrid, firebase-admin) off the event loop, with a deadline."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

# Calls in flight per provider. More than the worker's prefetch would only queue inside the pool.
MAX_THREADS = 32


class BlockingCalls:
    """A provider's own thread pool, rather than asyncio.to_thread's shared default executor: a provider that
    hangs then ties up only its own threads, never the loop's DNS lookups (getaddrinfo runs in the default
    executor) or other providers."""

    def __init__(self, *, name: str, max_threads: int = MAX_THREADS) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix=f"clarion-{name}")

    async def run(self, call: Callable[[], T], *, timeout_s: float) -> T:
        """`call()` in a pool thread, with the caller's context variables (the request id for logs).

        Raises TimeoutError after `timeout_s`. The thread itself cannot be interrupted: it finishes when the
        client's own socket timeout fires, which is why every client is also given `timeout_s`."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        future = loop.run_in_executor(self._executor, context.run, call)
        return await asyncio.wait_for(future, timeout_s)

    def close(self) -> None:
        """Stop taking calls; a call still blocked finishes on its own socket timeout."""
        self._executor.shutdown(wait=False, cancel_futures=True)
