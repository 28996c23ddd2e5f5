"""Publishing after commit: events reach clients only once their transaction is durable."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.chat.events import Published
from cmschat.db.session import after_commit
from cmschat.observability import instruments, tracing
from cmschat.realtime.broker import Broker
from cmschat.realtime.protocol import envelope_of

log = logging.getLogger(__name__)


def publish_after_commit(
    session: AsyncSession, broker: Broker, events: Sequence[Published]
) -> None:
    """Serialise now, publish when the unit of work has committed."""
    if not events:
        return
    envelopes = [envelope_of(event) for event in events]

    async def publish() -> None:
        try:
            instruments.committed([(envelope.type, envelope.frame) for envelope in envelopes])
            await tracing.traced("broker.publish", broker.publish(envelopes))
        except Exception:
            # The events are committed: clients get them by gap repair or catch-up, late
            # but not lost. The request itself succeeded and must say so.
            log.warning("could not publish %d committed events", len(envelopes), exc_info=True)

    after_commit(session, publish)
