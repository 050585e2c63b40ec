"""Group commit: many concurrent callers, one statement for all of them.

Written here rather than taken from a library: what exists (DataLoader ports such as aiodataloader) batches the
calls of one event-loop tick, then waits for the next. Under load the calls that matter arrive while a batch is in
the database, so the next batch is whatever queued up meanwhile, with no timer: an idle system answers one call at
once, a busy one amortises each round trip over as many calls as arrived during the previous one.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """`await submit(item)` returns what `run(batch)` gave for that item; `run` gets each waiting item once, at most
    `max_batch` at a time, one batch after another. An exception from `run` is raised to every caller of its batch."""

    def __init__(self, run: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_batch: int = 256) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._run = run
        self._max_batch = max_batch
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._draining is None:
            # A task, not an inline run: callers woken in the same loop iteration join the first batch. Its own
            # empty context: the batches serve many callers, so none of their log or trace context belongs there.
            self._draining = asyncio.create_task(self._drain(), context=contextvars.Context())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = [(item, future) for item, future in self._waiting[: self._max_batch] if not future.done()]
                del self._waiting[: self._max_batch]
                if batch:  # callers cancelled while waiting are left out
                    await self._run_batch(batch)
        finally:
            self._draining = None
            # Cancelled (the process is stopping): nobody will run what is still waiting.
            for _, future in self._waiting:
                if not future.done():
                    future.set_exception(RuntimeError("group commit stopped"))
            self._waiting.clear()

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
        except Exception as exc:  # noqa: BLE001 - handed to the callers, who decide
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled: the callers learn it, then the drain stops
            for _, future in batch:
                if not future.done():
                    future.set_exception(RuntimeError("group commit stopped"))
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # its caller may have been cancelled meanwhile
                future.set_result(result)
