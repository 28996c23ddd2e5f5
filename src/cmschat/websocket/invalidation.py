"""The caches' side of the events (composition): what this instance commits drops its own
entries at once; what the broker delivers from the others drops theirs; a broker that was
away flushes everything, since whatever it carried meanwhile may be lost.

The caches are the chat package's (``cmschat.chat.caches``); the envelopes the real-time
layer's. This module only connects the two, so neither has to know the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cmschat.chat.caches import HotCaches
from cmschat.events import Published, Publisher
from cmschat.realtime.broker import Deliver, Envelope


def invalidating(caches: HotCaches, publish: Publisher) -> Publisher:
    """The unit of work's publisher, dropping what the events change before they leave.

    Before the broker is even asked: a lossy or failing broker must not keep this
    instance's own caches stale, and the request that made the change (a removal) returns
    only after this, so the next request here already sees it.
    """

    async def publish_invalidating(events: Sequence[Published]) -> None:
        caches.invalidate_all(events)
        await publish(events)

    return publish_invalidating


def invalidating_deliveries(caches: HotCaches, deliver: Deliver) -> Deliver:
    """The hub's delivery callback, dropping what each event (from any instance) changes.

    Every instance hears every event on the one channel, whichever rooms its sockets are
    in, so every instance's caches hear of every change.
    """

    def delivered(envelope: Envelope) -> None:
        caches.invalidate(
            type=envelope.type,
            room_id=envelope.room_id,
            user_id=envelope.user_id,
            only_user_ids=envelope.only_user_ids,
        )
        deliver(envelope)

    return delivered


def flushing(caches: HotCaches, on_reconnect: Callable[[], None]) -> Callable[[], None]:
    """The broker's reconnect callback, flushing the caches first (events were missed)."""

    def reconnected() -> None:
        caches.flush()
        on_reconnect()

    return reconnected
