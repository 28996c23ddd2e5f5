"""Revocation reaches open sockets: logout, password change and reset, disabling, role change.

One instance with the in-process broker, on SQLite and MariaDB; the same across two real
instances on Redis is in test_revocation_cluster.py.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.events import SESSION_EVENTS
from cmschat.realtime.broker import Envelope, MemoryBroker
from cmschat.realtime.connections import CLOSE_RECONNECT, CLOSE_SESSION_ENDED
from cmschat.settings import Settings
from cmschat.websocket import gateway
from tests.realtime.test_gateway import make_room, post
from tests.realtime.wsclient import LiveServer, WsClient, serve_app, token_of, ws_client
from tests.support import NamedUser

WITHIN = 2.0
"""The acceptance bound: a revoked session's sockets close within this long."""


async def closed_with(ws: WsClient, within: float = WITHIN) -> tuple[int | None, str, list[Any]]:
    """Wait for the server's close; its code, reason and the frames that came first."""
    frames: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        while True:
            frames.append(await ws.recv(within=max(0.01, within - (time.monotonic() - started))))
    except ConnectionClosed:
        pass
    assert time.monotonic() - started <= within, "closed too late"
    return ws.connection.close_code, ws.connection.close_reason, frames


async def still_open(ws: WsClient) -> None:
    """A ping still gets its pong."""
    await ws.send({"type": "ping"})
    await ws.recv_until(lambda f: f["type"] == "pong")


async def test_logout_closes_the_sockets_of_that_token_only(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser
) -> None:
    first, second = await alice.login(http), await alice.login(http)
    async with (
        ws_client(server, token_of(first)) as one,
        ws_client(server, token_of(second)) as two,
    ):
        assert (await http.post("/api/v1/auth/logout", headers=first)).status_code == 204
        code, reason, _ = await closed_with(one)
        assert (code, reason) == (CLOSE_SESSION_ENDED, "signed_out")
        await still_open(two)


async def test_a_password_change_closes_the_users_other_sockets(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser
) -> None:
    other, current = await alice.login(http), await alice.login(http)
    async with (
        ws_client(server, token_of(other)) as elsewhere,
        ws_client(server, token_of(current)) as here,
    ):
        changed = await http.post(
            "/api/v1/me/password",
            headers=current,
            json={"current_password": alice.password, "new_password": "Another-Horse-8-staple"},
        )
        assert changed.status_code == 200, changed.text
        code, reason, _ = await closed_with(elsewhere)
        assert (code, reason) == (CLOSE_SESSION_ENDED, "password_changed")
        await still_open(here)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("reset", (CLOSE_SESSION_ENDED, "password_reset")),
        ("disable", (CLOSE_SESSION_ENDED, "disabled")),
        ("role", (CLOSE_RECONNECT, "role_changed")),
    ],
)
async def test_an_admins_change_closes_the_users_sockets(
    server: LiveServer,
    http: httpx.AsyncClient,
    admin: NamedUser,
    alice: NamedUser,
    change: str,
    expected: tuple[int, str],
) -> None:
    boss, a = await admin.login(http), await alice.login(http)
    async with ws_client(server, token_of(a)) as ws:
        if change == "reset":
            response = await http.post(
                f"/api/v1/admin/users/{alice.id}/password", headers=boss, json={}
            )
        else:
            body = {"is_active": False} if change == "disable" else {"role": "agent"}
            response = await http.patch(f"/api/v1/admin/users/{alice.id}", headers=boss, json=body)
        assert response.status_code == 200, response.text
        code, reason, _ = await closed_with(ws)
        assert (code, reason) == expected
    if change == "role":  # "reconnect": the same token works and shows the new role
        async with ws_client(server, token_of(a)) as again:
            assert again.ready["user"]["role"] == "agent"


async def test_a_renamed_user_keeps_their_socket(
    server: LiveServer, http: httpx.AsyncClient, admin: NamedUser, alice: NamedUser
) -> None:
    boss, a = await admin.login(http), await alice.login(http)
    async with ws_client(server, token_of(a)) as ws:
        response = await http.patch(
            f"/api/v1/admin/users/{alice.id}", headers=boss, json={"display_name": "Alice A."}
        )
        assert response.status_code == 200
        await still_open(ws)


async def test_after_revocation_nothing_is_received_and_nothing_sent_is_stored(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(http), await bob.login(http)
    room = await make_room(http, a, bob)
    async with ws_client(server, token_of(b)) as bob_ws:
        assert (await http.post("/api/v1/auth/logout", headers=b)).status_code == 204
        # Racing the close: frames the client still manages to send are not acted on.
        try:
            for n in range(3):
                await bob_ws.send({"type": "message.send", "room_id": room, "content": f"late {n}"})
        except ConnectionClosed:
            pass
        await post(http, a, room, "after the logout")
        code, _, frames = await closed_with(bob_ws)
    assert code == CLOSE_SESSION_ENDED
    assert frames == []
    history = await http.get(f"/api/v1/rooms/{room}/messages", headers=a)
    assert [m["content"] for m in history.json()["items"]] == ["after the logout"]


class SessionEventsLost(MemoryBroker):
    """Loses every session event, as Redis pub/sub would while an instance reconnects."""

    async def publish(self, envelopes: list[Envelope]) -> None:
        await super().publish([e for e in envelopes if e.type not in SESSION_EVENTS])


@contextlib.asynccontextmanager
async def forgetful_server(
    settings: Settings, clock: FakeClock, *, check_every: float
) -> AsyncIterator[tuple[LiveServer, httpx.AsyncClient, AppContext]]:
    """A live server whose broker loses session events, checking sessions every so often."""
    async with serve_app(settings, clock, session_check_seconds=check_every) as (live, http):
        context: AppContext = live.app.state.context
        await context.broker.close()
        context.broker = SessionEventsLost()
        await context.broker.start(context.hub.deliver, context.hub.catch_up_all)
        yield live, http, context


async def test_a_lost_revocation_is_caught_after_a_broker_reconnect(
    settings: Settings, clock: FakeClock, alice: NamedUser
) -> None:
    async with forgetful_server(settings, clock, check_every=3600) as (live, http, context):
        a = await alice.login(http)
        async with ws_client(live, token_of(a)) as ws:
            assert (await http.post("/api/v1/auth/logout", headers=a)).status_code == 204
            await still_open(ws)  # the event was lost: nothing closed it yet
            context.hub.catch_up_all()  # what the Redis broker does when it is back
            code, reason, _ = await closed_with(ws)
    assert (code, reason) == (CLOSE_SESSION_ENDED, "ended")


async def test_a_lost_revocation_is_caught_by_the_periodic_check(
    settings: Settings, clock: FakeClock, alice: NamedUser
) -> None:
    async with forgetful_server(settings, clock, check_every=0.5) as (live, http, _context):
        a = await alice.login(http)
        async with ws_client(live, token_of(a)) as ws:
            assert (await http.post("/api/v1/auth/logout", headers=a)).status_code == 204
            code, reason, _ = await closed_with(ws)
    assert (code, reason) == (CLOSE_SESSION_ENDED, "ended")


async def test_a_revocation_between_the_auth_frame_and_ready_still_closes(
    settings: Settings, clock: FakeClock, alice: NamedUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with forgetful_server(settings, clock, check_every=3600) as (live, http, _context):
        a = await alice.login(http)
        checked = gateway.authenticate

        async def revoked_right_after_the_check(*args: Any) -> Any:
            result = await checked(*args)
            assert (await http.post("/api/v1/auth/logout", headers=a)).status_code == 204
            return result

        monkeypatch.setattr(gateway, "authenticate", revoked_right_after_the_check)
        async with ws_client(live, None) as ws:
            await ws.send({"type": "auth", "token": token_of(a)})
            code, reason, frames = await closed_with(ws)
    assert (code, reason) == (CLOSE_SESSION_ENDED, "ended")
    assert frames == []
