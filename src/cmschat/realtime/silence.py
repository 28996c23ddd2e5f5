"""Reading a Redis subscription so that silence is noticed.

redis-py's own reading of a subscription waits forever: a frozen Redis, or one cut off by
the network (no reset ever comes), would leave a subscriber believing it is subscribed,
hearing nothing, for as long as TCP keeps the dead connection (hours). So a silent
subscription is pinged, and given up when the ping goes unanswered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis.asyncio.client import PubSub

PING_SECONDS = 1.0
"""A subscription silent this long is pinged; silent as long again, it is given up."""
STOP_SECONDS = 2 * PING_SECONDS
"""How long ``stop`` waits for a reader to end."""


async def heard_or_pinged(
    pubsub: PubSub, stopped: Callable[[], bool]
) -> AsyncIterator[dict[str, Any]]:
    """What arrives on ``pubsub``; after ``PING_SECONDS`` of silence a ping, and
    ``TimeoutError`` if it stays unanswered as long (redis-py's own reading waits forever).
    ``pubsub`` must not ignore subscribe messages: an ignored one reads as silence. Ends
    once ``stopped()`` (see ``stop``)."""
    pinged = False
    while not stopped():
        message = await pubsub.get_message(timeout=PING_SECONDS)
        if message is None:
            if pinged:
                raise TimeoutError(f"no answer to a ping in {2 * PING_SECONDS:g} s")
            await pubsub.ping()
            pinged = True
            continue
        pinged = False
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
