"""Reading a Redis subscription so that silence is noticed.

redis-py's own reading of a subscription waits forever: a frozen Redis, or one cut off by
the network (no reset ever comes), would leave a subscriber believing it is subscribed,
hearing nothing, for as long as TCP keeps the dead connection (hours). So a silent
subscription is pinged, and given up when the ping goes unanswered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio.client import PubSub

PING_SECONDS = 1.0
"""A subscription silent this long is pinged; silent as long again, it is given up."""


async def heard_or_pinged(pubsub: PubSub) -> AsyncIterator[dict[str, Any]]:
    """What arrives on ``pubsub``; after ``PING_SECONDS`` of silence a ping, and
    ``TimeoutError`` if it stays unanswered as long (redis-py's own reading waits forever).
    ``pubsub`` must not ignore subscribe messages: an ignored one reads as silence."""
    pinged = False
    while True:
        message = await pubsub.get_message(timeout=PING_SECONDS)
        if message is None:
            if pinged:
                raise TimeoutError(f"no answer to a ping in {2 * PING_SECONDS:g} s")
            await pubsub.ping()
            pinged = True
            continue
        pinged = False
        yield message
