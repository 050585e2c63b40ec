"""GroupCommit: concurrent callers share batches, each gets its own result, failures reach every caller of a batch."""

from __future__ import annotations

import asyncio

import pytest

from clarion.core.batching import GroupCommit


class Recorder:
    """A batch function that records its batches and can be held in flight."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def run(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await self.release.wait()
        return [item * 10 for item in items]


async def test_a_lone_call_runs_at_once_as_a_batch_of_one() -> None:
    recorder = Recorder()
    assert await GroupCommit(recorder.run).submit(7) == 70
    assert recorder.batches == [[7]]


async def test_calls_arriving_while_a_batch_runs_form_the_next_batch() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.run)
    recorder.release.clear()
    first = asyncio.create_task(commit.submit(1))
    await asyncio.sleep(0.01)  # the first batch, [1], is now in flight
    rest = [asyncio.create_task(commit.submit(n)) for n in range(2, 6)]
    await asyncio.sleep(0.01)
    recorder.release.set()
    assert await first == 10
    assert [await task for task in rest] == [20, 30, 40, 50], "each caller gets its own item's result"
    assert recorder.batches == [[1], [2, 3, 4, 5]]


async def test_batches_are_bounded() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.run, max_batch=2)
    results = await asyncio.gather(*(commit.submit(n) for n in range(5)))
    assert results == [0, 10, 20, 30, 40]
    assert [len(batch) for batch in recorder.batches] == [2, 2, 1]


async def test_a_failing_batch_fails_its_callers_and_the_next_batch_still_runs() -> None:
    calls: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        calls.append(items)
        if 13 in items:
            raise ValueError("unlucky")
        return items

    commit = GroupCommit(run, max_batch=2)
    outcomes = await asyncio.gather(*(commit.submit(n) for n in (12, 13, 14)), return_exceptions=True)
    assert [type(o).__name__ for o in outcomes[:2]] == ["ValueError", "ValueError"]
    assert outcomes[2] == 14
    assert calls == [[12, 13], [14]]


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.run)
    recorder.release.clear()
    gone = asyncio.create_task(commit.submit(1))
    kept = asyncio.create_task(commit.submit(2))
    await asyncio.sleep(0.01)
    gone.cancel()
    recorder.release.set()
    assert await kept == 20
    with pytest.raises(asyncio.CancelledError):
        await gone


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit(Recorder().run, max_batch=0)


async def test_a_caller_cancelled_while_waiting_is_left_out_of_the_next_batch() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.run)
    recorder.release.clear()
    first = asyncio.create_task(commit.submit(1))
    await asyncio.sleep(0.01)
    gone = asyncio.create_task(commit.submit(2))
    kept = asyncio.create_task(commit.submit(3))
    await asyncio.sleep(0.01)
    gone.cancel()
    await asyncio.sleep(0)
    recorder.release.set()
    assert (await first, await kept) == (10, 30)
    assert recorder.batches == [[1], [3]], "the cancelled caller's item never ran"


async def test_a_batch_giving_the_wrong_number_of_results_fails_its_callers() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    outcomes = await asyncio.gather(*(GroupCommit(short).submit(n) for n in (1, 2)), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes), "no caller is left waiting"
