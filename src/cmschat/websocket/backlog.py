"""A room's stored events for a connection's sender: the chat package's replay queries,
each run in its own unit of work (``cmschat.realtime.delivery.StoredEvents``)."""

from __future__ import annotations

from cmschat.chat.messages import reads
from cmschat.context import AppContext
from cmschat.db.actors import user_actor
from cmschat.db.session import on_replica
from cmschat.events import Published
from cmschat.websocket.caller import Caller


class RoomBacklog:
    """A room's stored events as the chat package replays them (``StoredEvents``), each
    read in its own unit of work as the connection's user."""

    def __init__(self, context: AppContext, user: Caller) -> None:
        self.context = context
        self.user = user

    async def after(
        self, room_id: int, *, after: int, until: int | None, limit: int
    ) -> tuple[list[Published], int | None]:
        """Stored events after ``after`` (up to ``until``), or the seq to resync at."""
        # Read-only: on SQLite the replay then never queues behind the writer; with read
        # replicas, on one that has every commit made so far (db/replicas.py).
        async with self.context.db.fresh_read(
            user_actor(self.user.id), actor_name=self.user.username
        ) as session:
            resync_at = await reads.resync_point(session, room_id=room_id, after=after)
            if resync_at is not None:
                return [], resync_at
            events = await reads.load_events(
                session,
                room_id=room_id,
                after=after,
                until=until,
                limit=limit,
                caches=None if on_replica(session) else self.context.caches,
            )
            return events, None
