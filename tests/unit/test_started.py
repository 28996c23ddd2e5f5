"""``Started``: a coroutine stepped at once, awaited later, as if awaited from the start."""

from __future__ import annotations

import asyncio

import pytest

from cmschat.db.started import Started


async def test_it_runs_to_its_first_wait_at_once_and_finishes_when_awaited() -> None:
    steps: list[str] = []
    first, second = asyncio.Event(), asyncio.Event()

    async def work() -> int:
        steps.append("sent")
        await first.wait()
        steps.append("half")
        await second.wait()
        return 42

    started = Started(work())
    assert steps == ["sent"]  # before any turn of the loop
    waiter = asyncio.ensure_future(_awaited(started))
    first.set()
    second.set()
    assert await asyncio.wait_for(waiter, timeout=5) == 42
    assert steps == ["sent", "half"]


async def _awaited(started: Started[int]) -> int:
    return await started


async def test_a_coroutine_that_never_waits_gives_its_result() -> None:
    async def quick() -> str:
        return "done"

    assert await Started(quick()) == "done"


async def test_errors_and_cancellation_reach_the_awaiting_task() -> None:
    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await Started(failing())

    cleaned: list[str] = []
    never = asyncio.Event()

    async def waits() -> None:
        try:
            await never.wait()
        finally:
            cleaned.append("cleaned")

    started = Started(waits())
    task = asyncio.ensure_future(_awaited(started))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["cleaned"]
