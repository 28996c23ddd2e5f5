"""Keeps this instance's presence claims alive, and says ``offline`` for a dead one's users.

Each round renews the claims of every user connected here (those whose claims had lapsed,
after a Redis outage or a stalled process, are announced ``online`` again) and sweeps the
claims no instance renewed: a user whose last instance died is announced ``offline`` to
their contacts by whichever instance swept first (realtime/presence.py).
"""

from __future__ import annotations

import logging

from cmschat.chat import listing
from cmschat.db.session import Database
from cmschat.realtime import signals
from cmschat.realtime.broker import Broker
from cmschat.realtime.presence import Presence

log = logging.getLogger(__name__)


class PresenceWatch:
    """One instance's share of keeping presence right across instances."""

    def __init__(self, presence: Presence, db: Database, broker: Broker, ttl: float) -> None:
        self.presence = presence
        self.db = db
        self.broker = broker
        self.tick_seconds = ttl / 3

    async def tick(self) -> None:
        """Renew, then sweep; tell the contacts of every user whose state changed."""
        back = await self.presence.renew()
        gone = await self.presence.lapsed()
        for status, users in (("online", back), ("offline", gone)):
            for user_id in users:
                try:
                    await self._announce(user_id, status)
                except Exception:  # the others are still told
                    log.warning("could not announce %s for user %d", status, user_id, exc_info=True)
        if gone:
            log.info(
                "%d users went offline with an instance that stopped renewing presence",
                len(gone),
                extra={"event.action": "presence.lapsed"},
            )

    async def _announce(self, user_id: int, status: str) -> None:
        async with self.db.unit_of_work(read_only=True) as session:
            contacts = await listing.contacts_of(session, user_id=user_id)
        await signals.announce_presence(
            self.broker, user_id=user_id, status=status, contacts=contacts
        )
