"""Past the process's limit a send is refused cheaply, before any work on it (issue 16
point 3): a WebSocket send without validation or the frame worker, an HTTP post before
signing in (a database read)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from cmschat.clock import FakeClock
from cmschat.realtime import protocol
from cmschat.settings import Settings
from cmschat.websocket import refusals as ws_refusals
from cmschat.websocket.actions import FrameActions
from tests.api.test_hot_routes import without_hot_route
from tests.realtime.test_admission import held_sends, one_send_at_a_time, refusals
from tests.realtime.test_gateway import make_room
from tests.realtime.wsclient import serve_app, token_of, ws_client
from tests.support import NamedUser


@pytest.mark.parametrize("client_id", [None, "c1", 'quote " and \\ back', "클라이언트 😀"])
def test_the_busy_frame_built_once_is_the_error_frame(client_id: str | None) -> None:
    busy = ws_refusals.busy(ws_refusals.PROCESS_FULL, 3)
    echo = {} if client_id is None else {"client_id": client_id}
    expected = protocol.error_frame("busy", ws_refusals.PROCESS_FULL, retry_after=3, **echo)
    assert busy.frame(client_id) == expected


async def test_a_full_process_answers_sends_busy_without_acting_on_them(
    settings: Settings,
    clock: FakeClock,
    alice: NamedUser,
    bob: NamedUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    acted: list[str] = []
    real = FrameActions.handle

    async def counting(self: FrameActions, text: str) -> None:
        acted.append(json.loads(text)["type"])
        await real(self, text)

    monkeypatch.setattr(FrameActions, "handle", counting)
    async with serve_app(settings, clock) as (live, http):
        a = await alice.login(http)
        room = await make_room(http, a, bob)
        admission = live.app.state.context.admission
        retry_after = settings.chat.busy_retry_after_seconds
        send: dict[str, Any] = {"type": "message.send", "room_id": room, "content": "x"}
        sent = [
            {**send, "client_id": "c1"},
            {**send, "client_id": "클라 2"},
            send,
            {**send, "room_id": 0, "client_id": "c4"},  # invalid, and not acted on either
        ]
        before = refusals()
        async with ws_client(live, token_of(a)) as ws:
            admission.in_flight = admission.limit  # as if that many sends were being stored
            try:
                for frame in sent:
                    await ws.send(frame)
                answers: list[str] = []
                while len(answers) < len(sent):
                    text = await asyncio.wait_for(ws.connection.recv(), 10)
                    if json.loads(text)["type"] == "error":
                        answers.append(str(text))
                await ws.ping()  # keep-alive answered meanwhile
                # Only sends are refused so: a typing frame goes to the worker.
                await ws.send({"type": "typing", "room_id": room})
            finally:
                admission.in_flight = 0
            ids = [frame.get("client_id") for frame in sent]
            assert answers == [
                protocol.error_frame(
                    "busy",
                    "the server is busy; send again in a moment",
                    retry_after=retry_after,
                    **({} if client_id is None else {"client_id": client_id}),
                )
                for client_id in ids
            ]
            assert refusals() == {
                **before,
                ("websocket", "process"): before["websocket", "process"] + 4,
            }
            await ws.send({**send, "client_id": "c5"})
            ack = (await ws.recv_until(lambda f: f["type"] == "ack"))[-1]
            assert ack["client_id"] == "c5"
            assert acted == ["typing", "message.send"]
            assert ws.connection.close_code is None


async def test_a_full_process_refuses_posts_busy_before_signing_in(
    settings: Settings,
    clock: FakeClock,
    alice: NamedUser,
    bob: NamedUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = one_send_at_a_time(settings)
    async with serve_app(settings, clock) as (live, http):
        a = await alice.login(http)
        room = await make_room(http, a, bob)
        url = f"/api/v1/rooms/{room}/messages"
        context = live.app.state.context
        units: list[Any] = []
        real_unit = context.db.unit_of_work

        def counting(*args: Any, **kwargs: Any) -> Any:
            units.append(args)
            return real_unit(*args, **kwargs)

        monkeypatch.setattr(context.db, "unit_of_work", counting)
        waiting, release = held_sends(monkeypatch)
        held = asyncio.create_task(http.post(url, headers=a, json={"content": "held"}))
        await asyncio.wait_for(waiting.wait(), 10)  # the process's only place is taken
        units.clear()
        before = refusals()
        stranger = {"Authorization": "Bearer not-a-token"}

        async def posts(headers: dict[str, str]) -> list[Any]:
            return list(
                await asyncio.gather(
                    *(http.post(url, headers=headers, json={"content": f"m{n}"}) for n in range(20))
                )
            )

        refused = await posts(a) + await posts(stranger)
        with without_hot_route(live.app):  # FastAPI's declared route alike
            refused += await posts(a) + await posts(stranger)
        for response in refused:
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "2"
            assert response.json()["error"]["code"] == "busy"
        assert units == []  # no database work for any of them, the sign-in included
        assert refusals() == {**before, ("http", "process"): before["http", "process"] + 80}
        release.set()
        assert (await held).status_code == 201
        # With room again, a bad token is 401 and holds no place afterwards.
        assert (await http.post(url, headers=stranger, json={"content": "x"})).status_code == 401
        with without_hot_route(live.app):
            answer = await http.post(url, headers=stranger, json={"content": "x"})
            assert answer.status_code == 401
        assert context.admission.in_flight == 0
        assert (await http.post(url, headers=a, json={"content": "after"})).status_code == 201
