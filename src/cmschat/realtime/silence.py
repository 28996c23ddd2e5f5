"""Reading a Redis subscription so that silence is noticed.

redis-py's own reading of a subscription waits forever: a frozen Redis, or one cut off by
the network (no reset ever comes), would leave a subscriber believing it is subscribed,
hearing nothing, for as long as TCP keeps the dead connection (hours). So a silent
subscription is pinged, and given up when the ping goes unanswered. And a task reading
one is stopped with a bound (``stop``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis.asyncio.client import PubSub

PING_SECONDS = 1.0
"""A subscription silent this long is pinged."""
ANSWER_SECONDS = 3.0
"""A ping unanswered this long gives the subscription up. As long as readiness waits on
Redis (``CHECK_SECONDS``): 1 s took a busy Redis (a stall of a second or two: a fork, a
slow command) for a lost one, and every instance resubscribed and caught up at once."""
STOP_SECONDS = 2.0
"""How long ``stop`` waits for a reader to end."""


async def heard_or_pinged(
    pubsub: PubSub, stopped: Callable[[], bool]
) -> AsyncIterator[dict[str, Any]]:
    """What arrives on ``pubsub``; after ``PING_SECONDS`` of silence a ping, and
    ``TimeoutError`` if nothing at all comes within ``ANSWER_SECONDS`` of it (redis-py's own
    reading waits forever). ``pubsub`` must not ignore subscribe messages: an ignored one
    reads as silence. Ends once ``stopped()`` (see ``stop``)."""
    loop = asyncio.get_running_loop()
    pinged_at: float | None = None
    while not stopped():
        message = await pubsub.get_message(timeout=PING_SECONDS)
        if message is None and pinged_at is None:
            await pubsub.ping()
            pinged_at = loop.time()
            continue
        if message is None and pinged_at is not None:
            if loop.time() - pinged_at < ANSWER_SECONDS:
                continue
            # One last look: after a stalled event loop the answer may be waiting, its read
            # outrun by the time-out.
            message = await pubsub.get_message(timeout=0.1)
            if message is None:
                raise TimeoutError(f"no answer to a ping in {ANSWER_SECONDS:g} s")
        pinged_at = None
        yield message


async def stop(reader: asyncio.Task[None]) -> None:
    """Cancel a task reading a subscription, and wait (``STOP_SECONDS`` at most) for it to
    end. Its reading loop must also check a flag set before this: a cancellation that
    lands as redis-py's own read time-out expires can be taken for that time-out (the read
    returns nothing), and the loop would read on, and be awaited, for ever (seen: a
    broker's ``close`` hung)."""
    reader.cancel()
    await asyncio.wait({reader}, timeout=STOP_SECONDS)
    if reader.done() and not reader.cancelled():
        reader.exception()  # retrieved: it ended on its own error, already reported
