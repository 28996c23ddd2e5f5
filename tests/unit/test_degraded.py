"""Falling back to local counts: only when Redis is silent, not when this process is busy."""

from __future__ import annotations

import asyncio
import time

from cmschat.degraded import LocalWhileDown

DEADLINE = 1.0


async def test_a_call_queued_behind_a_burst_keeps_its_shared_answer() -> None:
    # Under a burst a call waits its turn longer than the deadline while Redis keeps
    # answering the others: counting it locally would let it past the shared limit.
    limits = LocalWhileDown("test", deadline=DEADLINE)
    turn = asyncio.Event()
    local_calls = 0

    async def queued() -> str:
        await turn.wait()
        return "shared"

    async def answered_at_once() -> str:
        return "shared"

    async def local() -> str:
        nonlocal local_calls
        local_calls += 1
        return "local"

    slow = asyncio.create_task(limits.call(queued, local))
    started = time.monotonic()
    while time.monotonic() - started < 2.5 * DEADLINE:
        assert await limits.call(answered_at_once, local) == "shared"
        await asyncio.sleep(0.01)  # the burst's other calls, answered all along
    assert not slow.done()
    turn.set()
    assert await slow == "shared"
    assert (local_calls, limits.down) == (0, False)


async def test_a_redis_that_answers_nobody_falls_back_after_the_deadline() -> None:
    limits = LocalWhileDown("test", deadline=0.2)
    never = asyncio.Event()

    async def stalled() -> str:
        await never.wait()
        return "shared"

    async def local() -> str:
        return "local"

    started = time.monotonic()
    assert await limits.call(stalled, local) == "local"
    assert time.monotonic() - started < 5
    assert limits.down
    # While down, calls go local at once, without waiting for Redis again.
    assert await asyncio.wait_for(limits.call(stalled, local), timeout=1) == "local"


async def test_time_spent_waiting_for_a_cpu_is_not_counted_as_redis_silence() -> None:
    # A starved process (the machine's CPUs busy elsewhere) sees no answer for a while
    # although Redis answered at once: here every second passed is a second starved.
    limits = LocalWhileDown("test", deadline=0.2, starved=time.monotonic)
    turn = asyncio.Event()

    async def late() -> str:
        await turn.wait()
        return "shared"

    async def local() -> str:
        return "local"

    call = asyncio.create_task(limits.call(late, local))
    done, _ = await asyncio.wait({call}, timeout=1.0)  # five deadlines
    assert not done
    turn.set()
    assert await call == "shared"
    assert not limits.down
