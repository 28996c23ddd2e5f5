"""The backstop behind revocation events: re-check the sessions of open connections.

Revocations reach connections as broker events within milliseconds, but Redis pub/sub
delivers at most once: one published while an instance was reconnecting is gone. So each
instance also re-checks the tokens of all its connections in one batched query every
``CMSCHAT_REALTIME__SESSION_CHECK_SECONDS`` and right after a broker reconnect, and closes
those that ended. Expiry needs no event at all: every tick (at most a second) compares each
connection's absolute expiry and last known use with the injected clock, and asks the
database only about those whose idle limit seems to have passed.
"""

from __future__ import annotations

import logging
import time

from cmschat.accounts import sessions
from cmschat.clock import Clock
from cmschat.db.session import Database
from cmschat.realtime.connections import (
    CLOSE_RECONNECT,
    CLOSE_SESSION_ENDED,
    Connection,
    Hub,
)
from cmschat.settings import AuthSettings

log = logging.getLogger(__name__)
MAX_TICK_SECONDS = 1.0


class SessionWatch:
    """Closes this instance's connections whose session ended without (or despite) an event."""

    def __init__(
        self, hub: Hub, db: Database, clock: Clock, policy: AuthSettings, interval: float
    ) -> None:
        self.hub = hub
        self.db = db
        self.clock = clock
        self.policy = policy
        self.interval = interval
        self.tick_seconds = min(MAX_TICK_SECONDS, interval)
        self._next_full = time.monotonic() + interval

    async def tick(self) -> None:
        """One round: in-memory expiry for all, a database check for those that need one."""
        connections = [c for c in self.hub.all_connections() if c.token_id is not None]
        now = self.clock.now()
        idle = sessions.idle_window(self.policy)
        full = self.hub.sessions_stale.is_set() or time.monotonic() >= self._next_full
        if full:
            self.hub.sessions_stale.clear()
            self._next_full = time.monotonic() + self.interval
        due: list[Connection] = []
        for connection in connections:
            if connection.ended:
                continue
            if connection.expires_at is not None and now >= connection.expires_at:
                connection.end(CLOSE_SESSION_ENDED, sessions.EXPIRED)
            elif full or (
                connection.last_used_at is not None and now >= connection.last_used_at + idle
            ):
                due.append(connection)
        if due:
            await self._check(due)

    async def _check(self, connections: list[Connection]) -> None:
        async with self.db.unit_of_work() as session:  # reads only: no actor
            states = await sessions.check_sessions(
                session,
                token_ids=[c.token_id for c in connections if c.token_id is not None],
                policy=self.policy,
                now=self.clock.now(),
            )
        closed = 0
        for connection in connections:
            assert connection.token_id is not None  # noqa: S101 - filtered by the caller
            state = states[connection.token_id]
            if state.ended is not None:
                connection.end(CLOSE_SESSION_ENDED, state.ended)
                closed += 1
            elif connection.role is not None and state.role != connection.role:
                connection.end(CLOSE_RECONNECT, sessions.ROLE_CHANGED)
                closed += 1
            else:
                connection.last_used_at = state.last_used_at
        if closed:
            log.info(
                "closed %d connections whose session had ended",
                closed,
                extra={"event.action": "ws.sessions_closed"},
            )
