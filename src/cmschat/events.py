"""What a committed change tells connected clients: the event type every service returns.

Neutral ground: chat, notices and accounts all produce ``Published`` events, and the
realtime layer routes them, so none of those packages has to import another to do so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

EVERYONE = 0
"""The ``room_id`` of an event for every connected user (a notice); no room has it."""

SESSION_ENDED = "session.ended"
"""Some sessions (tokens) of a user ended: their sockets close and must not come back."""
ACCOUNT_CHANGED = "account.changed"
"""A user's account changed (role): their sockets close and reconnect to pick it up."""
SESSION_EVENTS = frozenset({SESSION_ENDED, ACCOUNT_CHANGED})


@dataclass(frozen=True)
class Published:
    """An event as the realtime layer routes it: to a room, or only to some users."""

    room_id: int
    seq: int | None
    type: str
    payload: Mapping[str, Any]
    user_id: int | None = None
    """For member events: who joined or left (their connections re-subscribe)."""
    only_user_ids: tuple[int, ...] | None = None
    """Deliver only to these users' connections (read markers), not the whole room."""


def session_ended(
    user_id: int,
    *,
    reason: str,
    token_ids: tuple[int, ...] | None = None,
    except_token_id: int | None = None,
) -> Published:
    """Sessions of ``user_id`` ended: ``token_ids`` (None: all), except ``except_token_id``."""
    return Published(
        room_id=EVERYONE,
        seq=None,
        type=SESSION_ENDED,
        payload={
            "reason": reason,
            "token_ids": list(token_ids) if token_ids is not None else None,
            "except_token_id": except_token_id,
        },
        only_user_ids=(user_id,),
    )


def account_changed(user_id: int, *, reason: str) -> Published:
    """The account of ``user_id`` changed in a way open sockets must reconnect to see."""
    return Published(
        room_id=EVERYONE,
        seq=None,
        type=ACCOUNT_CHANGED,
        payload={"reason": reason},
        only_user_ids=(user_id,),
    )
