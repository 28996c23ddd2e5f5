"""Expiry reaches open sockets, and activity keeps a session alive (idle timeout).

Time is a FakeClock: the tests move it, and the server's session check (every 0.2 s here)
sees the new time; nothing sleeps for the expiry itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from cmschat.clock import FakeClock
from cmschat.realtime.connections import CLOSE_SESSION_ENDED
from cmschat.settings import Settings
from tests.realtime.test_gateway import make_room, post
from tests.realtime.test_revocation import closed_with, still_open
from tests.realtime.wsclient import LiveServer, serve_app, token_of, ws_client
from tests.support import NamedUser


@contextlib.asynccontextmanager
async def serve_with(
    settings: Settings, clock: FakeClock, auth: dict[str, Any], **realtime: Any
) -> AsyncIterator[tuple[LiveServer, httpx.AsyncClient]]:
    """A live server with some auth and realtime settings changed."""
    changed = settings.model_copy(deep=True)
    for name, value in auth.items():
        setattr(changed.auth, name, value)
    realtime.setdefault("session_check_seconds", 0.2)
    async with serve_app(changed, clock, **realtime) as pair:
        yield pair


async def test_a_socket_closes_when_its_token_reaches_its_absolute_expiry(
    settings: Settings, clock: FakeClock, alice: NamedUser
) -> None:
    async with serve_with(settings, clock, {"token_absolute_hours": 1}) as (live, http):
        a = await alice.login(http)
        async with ws_client(live, token_of(a)) as ws:
            clock.advance(minutes=59)
            await still_open(ws)
            clock.advance(minutes=1)
            code, reason, _ = await closed_with(ws)
    assert (code, reason) == (CLOSE_SESSION_ENDED, "expired")


async def test_a_socket_with_no_activity_but_pings_closes_at_the_idle_limit(
    settings: Settings, clock: FakeClock, alice: NamedUser
) -> None:
    async with serve_with(settings, clock, {"token_idle_minutes": 1}) as (live, http):
        a = await alice.login(http)
        async with ws_client(live, token_of(a)) as ws:
            clock.advance(seconds=50)
            await still_open(ws)  # a ping is the client's doing, not the user's
            clock.advance(seconds=11)
            code, reason, _ = await closed_with(ws)
    assert (code, reason) == (CLOSE_SESSION_ENDED, "expired")


async def test_activity_on_a_socket_keeps_its_token_alive(
    settings: Settings, clock: FakeClock, alice: NamedUser, bob: NamedUser
) -> None:
    async with serve_with(settings, clock, {"token_idle_minutes": 1}) as (live, http):
        a, b = await alice.login(http), await bob.login(http)
        room = await make_room(http, a, bob)
        message = await post(http, b, room, "read me")
        async with ws_client(live, token_of(a)) as ws:
            for _ in range(6):  # five minutes, five times the idle limit
                clock.advance(seconds=50)
                await ws.send({"type": "read", "room_id": room, "message_id": message["id"]})
                await ws.recv_until(lambda f: f["type"] == "read")
            await still_open(ws)
            assert (await http.get("/api/v1/me", headers=a)).status_code == 200


async def test_a_token_in_continuous_use_over_http_never_idles_out(
    settings: Settings, clock: FakeClock, alice: NamedUser
) -> None:
    async with serve_with(settings, clock, {"token_idle_minutes": 1}) as (_live, http):
        a = await alice.login(http)
        statuses = []
        for _ in range(6):
            clock.advance(seconds=50)
            statuses.append((await http.get("/api/v1/me", headers=a)).status_code)
        assert statuses == [200] * 6
        clock.advance(seconds=61)
        assert (await http.get("/api/v1/me", headers=a)).status_code == 401
