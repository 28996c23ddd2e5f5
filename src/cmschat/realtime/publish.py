"""Publishing committed events: the unit of work's publisher, in front of the broker.

Services queue events on the unit of work (``cmschat.events.queue_events``); once it has
committed, db/session.py hands them here. Events are serialised once each, into the frame
every recipient gets, and published in the order they were queued.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from cmschat.events import Published, Publisher
from cmschat.observability import instruments, tracing
from cmschat.realtime.broker import Broker, Deliver, Envelope
from cmschat.realtime.protocol import envelope_of

log = logging.getLogger(__name__)


async def publish_committed(broker: Broker, events: Sequence[Published]) -> None:
    """Publish events whose transaction has committed; a failure is logged, not raised."""
    if not events:
        return
    try:
        envelopes = [envelope_of(event) for event in events]
        instruments.committed([(envelope.type, envelope.frame) for envelope in envelopes])
        await tracing.traced("broker.publish", broker.publish(envelopes))
    except Exception:
        # The events are committed: clients get them by gap repair or catch-up, late
        # but not lost. The request itself succeeded and must say so.
        log.warning("could not publish %d committed events", len(events), exc_info=True)


def publisher_for(broker: Callable[[], Broker]) -> Publisher:
    """The unit of work's publisher: to whichever broker ``broker()`` answers at the time
    (the app's context may replace its broker, as tests of a lossy one do)."""

    async def publish(events: Sequence[Published]) -> None:
        await publish_committed(broker(), events)

    return publish


def counting_deliveries(deliver: Deliver) -> Deliver:
    """The hub's delivery callback, counting what the broker delivers here."""

    def counted(envelope: Envelope) -> None:
        instruments.broker_received(envelope.frame)
        deliver(envelope)

    return counted
