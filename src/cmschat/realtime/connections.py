"""The hub: which local connection follows which room, and handing events to them.

The hub only routes. Each connection has a bounded queue drained by its own sender task
(delivery.py), which keeps each room's order and repairs gaps from the database; one whose
queue is full is too slow and is closed (1013). Session events (a token revoked, an account
changed) close the matching connections at once (4001/4002, docs/realtime.md), and from
then on nothing more is queued for, sent to or accepted from them.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from cmschat.events import ACCOUNT_CHANGED, EVERYONE, SESSION_ENDED, SESSION_EVENTS
from cmschat.realtime.broker import Envelope
from cmschat.realtime.fanout import WritePass

# Marker types the sender understands; never sent to clients as such.
CATCH_UP = "_catch_up"
CLOSE_SLOW = 1013
CLOSE_RESTART = 1012
CLOSE_SESSION_ENDED = 4001
"""The session (token) is over: sign in again; reconnecting with this token is refused."""
CLOSE_RECONNECT = 4002
"""The account changed (role): reconnect with the same token to pick it up."""


def _nothing() -> None:
    return None


def _not_counted(connection: Connection, connections: int) -> None:
    return None


def _not_told(room_id: int, followed: bool) -> None:
    return None


@dataclass(eq=False, slots=True)
class Connection:
    """One signed-in WebSocket: its user, its rooms, its outgoing queue.

    Plain fields and a deque only while events wait, no asyncio queue or event: at 15,000
    idle connections each container costs memory (docs/performance.md, section 1). The
    endpoint wakes on ``on_queued`` and ``on_close`` instead of waiting on them.
    """

    user_id: int
    queue_size: int
    token_id: int | None = None
    role: str | None = None
    expires_at: datetime | None = None
    """The token's absolute end: the connection closes then, however active."""
    last_used_at: datetime | None = None
    """The token's last recorded use, as this connection last saw it (idle limit)."""
    delivered: dict[int, int] = field(default_factory=dict)
    """Per room: the highest seq already sent. Only the connection's sender touches it."""
    rooms: set[int] = field(default_factory=set)
    """Rooms this connection follows (the hub owns it)."""
    overflowed: bool = False
    close_requested: bool = False
    close_code: int = 1000
    close_reason: str = ""
    ended: bool = False
    """The session ended or the account changed: send nothing more, act on nothing more."""
    queue: deque[Envelope] | None = None
    """Envelopes waiting for the sender, in order (at most ``queue_size``); None while none
    wait: an empty deque still costs ~0.7 KiB, and most connections are idle."""
    on_queued: Callable[[], None] = _nothing
    """Called after an envelope is queued (the endpoint starts its sender if idle)."""
    on_close: Callable[[], None] = _nothing
    """Called when the connection is asked to close (the endpoint stops reading)."""
    opened_after: int = 0
    """Freezes of the connections' objects run when it opened (frozen_connections.py)."""
    catching_up: set[int] | None = None
    """Rooms with a catch-up queued: asked again meanwhile, that one read serves both."""

    def offer(self, envelope: Envelope) -> None:
        """Queue an envelope; a full queue marks the connection for closing (1013)."""
        offer_each((self,), envelope)

    def take(self) -> Envelope | None:
        """The next queued envelope (the sender's), or None when none waits."""
        queue = self.queue
        if not queue:
            return None
        envelope = queue.popleft()
        if not queue:
            self.queue = None
        return envelope

    def waiting(self) -> int:
        """How many envelopes are queued."""
        return len(self.queue) if self.queue else 0

    def close(self, code: int) -> None:
        """Ask the endpoint to close this connection with ``code``."""
        if self.ended:
            return  # the session's end says more (do not come back with this token)
        self.close_code = code
        self._request_close()

    def end(self, code: int, reason: str) -> None:
        """Close for an account reason: nothing is sent or acted on from now on."""
        if self.ended and self.close_code == CLOSE_SESSION_ENDED:
            return  # "sign in again" outranks "reconnect"
        self.ended = True
        self.close_code, self.close_reason = code, reason
        self._request_close()

    def _request_close(self) -> None:
        first = not self.close_requested
        self.close_requested = True
        if first:
            self.on_close()

    def matches(self, token_ids: list[int] | None, except_token_id: int | None) -> bool:
        """Whether this connection's token is among ``token_ids`` (None: any) but the one."""
        if self.token_id is not None and self.token_id == except_token_id:
            return False
        return token_ids is None or self.token_id in token_ids


def offer_each(connections: Iterable[Connection], envelope: Envelope) -> None:
    """``Connection.offer`` to each connection, its steps in this loop: a room's fan-out
    offers every event to each follower (~10 a send), and a call per follower was a
    tenth of the fan-out's main-thread time with sends in flight."""
    for connection in connections:
        if connection.overflowed or connection.ended or connection.close_requested:
            continue
        queue = connection.queue
        if queue is None:
            queue = connection.queue = deque()
        if len(queue) >= connection.queue_size:
            connection.overflowed = True
            connection.close(CLOSE_SLOW)
            continue
        queue.append(envelope)
        connection.on_queued()


class Hub:
    """Routes envelopes from the broker to this process's connections."""

    def __init__(self) -> None:
        self.counted: Callable[[Connection, int], None] = _not_counted
        """Told of each connection opened or closed, and how many are open (frozen_connections)."""
        self.room_interest: Callable[[int, bool], None] = _not_told
        """Told of a room's first follower here (True) and its last leaving (False)."""
        self._connections = 0
        self._by_room: dict[int, set[Connection]] = {}
        self._by_user: dict[int, set[Connection]] = defaultdict(set)
        self.sessions_stale = asyncio.Event()
        """Set when every session should be re-checked soon (see websocket/watch.py)."""
        self.writes = WritePass()
        """Writes, in one callback, what the connections have queued (fanout.py)."""

    def add(self, connection: Connection, room_ids: set[int]) -> None:
        """Start routing events of ``room_ids`` to a connection."""
        users = self._by_user[connection.user_id]
        if connection not in users:
            users.add(connection)
            self._connections += 1
            self.counted(connection, self._connections)
        for room_id in room_ids:
            self.follow(connection, room_id)

    def follow(self, connection: Connection, room_id: int) -> None:
        """Route one more room to a connection."""
        connection.rooms.add(room_id)
        followers = self._by_room.get(room_id)
        if followers is None:
            followers = self._by_room[room_id] = set()
            self.room_interest(room_id, True)
        followers.add(connection)

    def unfollow(self, connection: Connection, room_id: int) -> None:
        """Stop routing a room to a connection."""
        connection.rooms.discard(room_id)
        followers = self._by_room.get(room_id)
        if followers is not None:
            followers.discard(connection)
            if not followers:
                del self._by_room[room_id]
                self.room_interest(room_id, False)

    def remove(self, connection: Connection) -> None:
        """Forget a closed connection."""
        for room_id in list(connection.rooms):
            self.unfollow(connection, room_id)
        users = self._by_user.get(connection.user_id)
        if users is not None and connection in users:
            users.discard(connection)
            if not users:
                del self._by_user[connection.user_id]
            self._connections -= 1
            self.counted(connection, self._connections)

    def online_users(self) -> int:
        """How many users have a connection to this process."""
        return len(self._by_user)

    def user_ids(self) -> list[int]:
        """The users with a connection to this process."""
        return list(self._by_user)

    def connections_of(self, user_id: int) -> set[Connection]:
        """This process's connections of a user."""
        return set(self._by_user.get(user_id, ()))

    def all_connections(self) -> list[Connection]:
        """Every connection of this process."""
        return [c for conns in self._by_user.values() for c in conns]

    def deliver(self, envelope: Envelope) -> None:
        """Route one envelope (called by the broker, on the event loop)."""
        if envelope.type in SESSION_EVENTS:
            self._end_sessions(envelope)
            return
        if envelope.only_user_ids is not None:
            for user_id in envelope.only_user_ids:
                for connection in self._by_user.get(user_id, ()):
                    connection.offer(envelope)
            return
        if envelope.room_id == EVERYONE:
            for connection in self.all_connections():
                connection.offer(envelope)
            return
        joined: list[Connection] = []
        if envelope.type == "member.joined" and envelope.user_id is not None:
            # Route the new room to the joiner; their sender starts the room at this event.
            for connection in self._by_user.get(envelope.user_id, ()):
                if envelope.room_id not in connection.rooms:
                    joined.append(connection)
                    self.follow(connection, envelope.room_id)
        offer_each(list(self._by_room.get(envelope.room_id, ())), envelope)
        # The room's next events may have come (from another instance, or on another
        # channel) before this one and passed the joiner by: read them back.
        offer_catch_up(joined, envelope.room_id)
        if envelope.type == "member.left" and envelope.user_id is not None:
            for connection in self._by_user.get(envelope.user_id, ()):
                self.unfollow(connection, envelope.room_id)

    def _end_sessions(self, envelope: Envelope) -> None:
        body = json.loads(envelope.frame)
        reason = str(body.get("reason") or "ended")
        for user_id in envelope.only_user_ids or ():
            for connection in list(self._by_user.get(user_id, ())):
                if envelope.type == ACCOUNT_CHANGED:
                    connection.end(CLOSE_RECONNECT, reason)
                elif envelope.type == SESSION_ENDED and connection.matches(
                    body.get("token_ids"), body.get("except_token_id")
                ):
                    connection.end(CLOSE_SESSION_ENDED, reason)

    def catch_up_all(self) -> None:
        """After a broker outage: every connection re-reads its rooms from the database,
        and every session is re-checked (a revocation may have been lost meanwhile)."""
        self.sessions_stale.set()
        for connection in self.all_connections():
            for room_id in list(connection.rooms):
                offer_catch_up((connection,), room_id)

    def catch_up(self, room_ids: Iterable[int]) -> None:
        """The followers of ``room_ids`` re-read them (the broker may have missed some)."""
        for room_id in list(room_ids):
            offer_catch_up(list(self._by_room.get(room_id, ())), room_id)

    def close_all(self, code: int) -> None:
        """Ask every connection to close (1012 on shutdown: clients reconnect and resume)."""
        for connection in self.all_connections():
            connection.close(code)


def offer_catch_up(connections: Iterable[Connection], room_id: int) -> None:
    """Have each connection re-read a room from the database (once while it is queued)."""
    envelope = Envelope(room_id=room_id, seq=None, type=CATCH_UP, frame="")
    for connection in connections:
        queued = connection.catching_up
        if queued is None:
            queued = connection.catching_up = set()
        elif room_id in queued:
            continue
        queued.add(room_id)
        connection.offer(envelope)


def caught_up(connection: Connection, room_id: int) -> None:
    """The sender takes a room's catch-up: a request from now on needs a read of its own."""
    queued = connection.catching_up
    if queued is not None:
        queued.discard(room_id)
        if not queued:
            connection.catching_up = None
