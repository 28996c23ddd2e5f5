"""Per-process caches of the hot path's facts: who belongs to which room (with the room's
facts a send needs), and how users are shown. Invalidated by the events that change them.

A send and a history page ask "is this user a member, and is the room archived?" and
"what is the author called?" far more often than the answers change. The answers are kept
here, bounded (least recently used out first) and for ``ttl`` seconds at most, and dropped
by the committed events of the changes themselves (``Published``, events.py): on this
instance as its unit of work commits, on the others as the broker delivers.

Safety rules, because a stale "yes, a member" would let a removed member read or send:

- only positive answers are kept (a non-member is asked of the database every time);
- an answer read from the database is kept only if no invalidation arrived while it was
  being read (``epoch``): a removal committed during the read cannot be overwritten by it;
- while the broker is disconnected, invalidations from other instances may be missed: the
  caches are flushed and bypassed (``trusted``), and flushed again on reconnect;
- ``ttl`` bounds what is left: a change made where no broker reaches (a CLI without Redis).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cmschat.chat.models import MemberRole, RoomKind
from cmschat.events import (
    ACCOUNT_CHANGED,
    MEMBER_CHANGED,
    SESSION_ENDED,
    USER_CHANGED,
    Published,
)

K = TypeVar("K")
V = TypeVar("V")

MEMBER_JOINED = "member.joined"
MEMBER_LEFT = "member.left"
ROOM_UPDATED = "room.updated"


@dataclass(frozen=True)
class Membership:
    """What a send needs to know of a member and their room."""

    role: MemberRole
    archived: bool
    kind: RoomKind


@dataclass(frozen=True)
class Shown:
    """How a user is shown in messages and events."""

    username: str
    display_name: str


class Bounded(Generic[K, V]):
    """At most ``size`` entries, each for ``ttl`` seconds; least recently used out first."""

    def __init__(self, *, size: int, ttl: float, now: Callable[[], float]) -> None:
        self.size = size
        self.ttl = ttl
        self._now = now
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The value, if present and younger than ``ttl``."""
        found = self._entries.get(key)
        if found is None:
            return None
        if self._now() >= found[0]:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return found[1]

    def put(self, key: K, value: V) -> None:
        """Keep ``value``; the least recently used entry goes if the cache is full."""
        if self.size <= 0 or self.ttl <= 0:
            return
        self._entries[key] = (self._now() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def drop(self, key: K) -> None:
        """Forget one entry."""
        self._entries.pop(key, None)

    def drop_where(self, match: Callable[[K], bool]) -> None:
        """Forget every entry whose key matches."""
        for key in [key for key in self._entries if match(key)]:
            del self._entries[key]

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()


class HotCaches:
    """This process's membership and user caches, and the rules that invalidate them."""

    def __init__(
        self,
        *,
        size: int,
        ttl: float,
        trusted: Callable[[], bool] = lambda: True,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.members: Bounded[tuple[int, int], Membership] = Bounded(size=size, ttl=ttl, now=now)
        self.users: Bounded[int, Shown] = Bounded(size=size, ttl=ttl, now=now)
        self.trusted = trusted
        """Whether every instance's invalidations reach this one now (the broker is up)."""
        self.epoch = 0
        """Moves on every invalidation: a read that saw it move keeps nothing."""
        self.flushes = 0
        """Whole flushes so far (a broker outage or reconnect)."""

    def usable(self) -> bool:
        """Whether to read the caches now; an untrusted moment flushes them."""
        if self.trusted():
            return True
        if len(self.members) or len(self.users):
            self.flush()
        return False

    def membership(self, room_id: int, user_id: int) -> Membership | None:
        """The cached membership, or None (ask the database)."""
        return self.members.get((room_id, user_id)) if self.usable() else None

    def shown(self, user_id: int) -> Shown | None:
        """How a user is shown, if cached."""
        return self.users.get(user_id) if self.usable() else None

    def keep_membership(self, epoch: int, room_id: int, user_id: int, found: Membership) -> None:
        """Keep a membership read from the database when ``epoch`` was current."""
        if epoch == self.epoch and self.usable():
            self.members.put((room_id, user_id), found)

    def keep_shown(self, epoch: int, user_id: int, found: Shown) -> None:
        """Keep how a user is shown, read from the database when ``epoch`` was current."""
        if epoch == self.epoch and self.usable():
            self.users.put(user_id, found)

    def flush(self) -> None:
        """Forget everything (invalidations may have been missed)."""
        self.epoch += 1
        self.flushes += 1
        self.members.clear()
        self.users.clear()

    def invalidate(
        self,
        *,
        type: str,
        room_id: int,
        user_id: int | None,
        only_user_ids: Iterable[int] | None = None,
    ) -> None:
        """Drop what an event (local or from another instance) says has changed."""
        if type in (MEMBER_JOINED, MEMBER_LEFT, MEMBER_CHANGED) and user_id is not None:
            self.epoch += 1
            self.members.drop((room_id, user_id))
        elif type == ROOM_UPDATED:
            self.epoch += 1
            self.members.drop_where(lambda key: key[0] == room_id)
        elif type == USER_CHANGED and user_id is not None:
            self.epoch += 1
            self.users.drop(user_id)
        elif type in (SESSION_ENDED, ACCOUNT_CHANGED):
            self.epoch += 1
            for ended in only_user_ids or ():
                self.users.drop(ended)

    def invalidate_all(self, events: Iterable[Published]) -> None:
        """Drop what committed events say has changed (this instance's own)."""
        for event in events:
            self.invalidate(
                type=event.type,
                room_id=event.room_id,
                user_id=event.user_id,
                only_user_ids=event.only_user_ids,
            )
