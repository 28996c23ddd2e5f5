"""Presence and typing: hints published straight to the broker, never through a commit.

They are not stored, not sequenced, and may be lost. A user is announced online at their
first connection on any instance and offline when their last one anywhere closes (or their
last instance dies), to the people who share a room with them (realtime/presence.py).
"""

from __future__ import annotations

import logging

from cmschat.realtime.broker import Broker, Envelope
from cmschat.realtime.protocol import dumps, envelope_of, typing_event

log = logging.getLogger(__name__)


def presence_envelope(user_id: int, status: str, contacts: tuple[int, ...]) -> Envelope:
    """``presence`` for the user's contacts' connections."""
    return Envelope(
        room_id=0,
        seq=None,
        type="presence",
        frame=dumps({"type": "presence", "user_id": user_id, "status": status}),
        only_user_ids=contacts,
    )


async def announce_presence(
    broker: Broker, *, user_id: int, status: str, contacts: tuple[int, ...]
) -> None:
    """Tell ``contacts`` the user is ``online`` or ``offline``; a failure is only logged."""
    if not contacts:
        return
    try:
        await broker.publish([presence_envelope(user_id, status, contacts)])
    except Exception:
        log.warning("could not announce presence", exc_info=True)


async def send_typing(broker: Broker, *, room_id: int, user_id: int, display_name: str) -> None:
    """Tell a room the user is typing."""
    event = typing_event(room_id, user_id=user_id, display_name=display_name)
    await broker.publish([envelope_of(event)])
