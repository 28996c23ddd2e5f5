"""Overload is shed by refusing sends (503 + Retry-After, ``busy``), never by closing sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from cmschat.admission import Admission
from cmschat.chat.messages.group_commit import GroupCommit
from cmschat.clock import FakeClock
from cmschat.errors import Overloaded
from cmschat.settings import Settings
from tests.observability.metrics_support import value
from tests.realtime.test_gateway import make_room
from tests.realtime.wsclient import serve_app, token_of, ws_client
from tests.support import NamedUser


async def test_admission_refuses_past_its_limit_and_frees_a_place_when_a_send_ends() -> None:
    told: list[str] = []
    admission = Admission(2, retry_after=3, on_refused=told.append)
    async with admission.sends("http"), admission.sends("websocket"):
        with pytest.raises(Overloaded) as refused:
            async with admission.sends("websocket"):
                pass
        assert refused.value.retry_after == 3 and refused.value.code == "busy"
    async with admission.sends("http"):
        assert admission.in_flight == 1
    assert admission.in_flight == 0 and admission.refused == 1
    assert told == ["websocket"]  # the refusal, with its transport, for the metric


def refusals() -> dict[tuple[str, str], float]:
    """``cmschat_sends_refused_total`` now, by (transport, limit)."""
    pairs = (("http", "process"), ("websocket", "process"), ("websocket", "connection"))
    return {
        (transport, limit): value("cmschat_sends_refused_total", transport=transport, limit=limit)
        for transport, limit in pairs
    }


def one_send_at_a_time(settings: Settings) -> Settings:
    """The settings of a process that works on one send at a time, and says wait 2 s."""
    settings = settings.model_copy(deep=True)
    settings.chat.sends_in_flight = 1
    settings.chat.busy_retry_after_seconds = 2
    return settings


def held_sends(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Make every send wait at the service until released: (one is waiting, release)."""
    waiting, release = asyncio.Event(), asyncio.Event()
    real: Callable[..., Awaitable[Any]] = GroupCommit.send

    async def held(self: GroupCommit, **kwargs: Any) -> Any:
        waiting.set()
        await release.wait()
        return await real(self, **kwargs)

    monkeypatch.setattr(GroupCommit, "send", held)
    return waiting, release


async def test_a_full_server_answers_busy_keeps_the_socket_and_delivers_what_it_took(
    settings: Settings,
    clock: FakeClock,
    alice: NamedUser,
    bob: NamedUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = one_send_at_a_time(settings)
    async with serve_app(settings, clock) as (live, http):
        a, b = await alice.login(http), await bob.login(http)
        room = await make_room(http, a, bob)
        waiting, release = held_sends(monkeypatch)
        before = refusals()
        async with ws_client(live, token_of(a)) as alice_ws, ws_client(live, token_of(b)) as bob_ws:
            # Alice's first send takes the process's only place...
            first = {"type": "message.send", "room_id": room, "content": "one", "client_id": "c1"}
            await alice_ws.send(first)
            await asyncio.wait_for(waiting.wait(), 10)
            # ...so Bob's is refused at once, over the WebSocket and over HTTP.
            await bob_ws.send({**first, "content": "two", "client_id": "c2"})
            busy = (await bob_ws.recv_until(lambda f: f["type"] == "error"))[-1]
            assert busy["code"] == "busy"
            assert busy["retry_after"] == 2 and busy["client_id"] == "c2"
            refused = await http.post(
                f"/api/v1/rooms/{room}/messages", headers=b, json={"content": "three"}
            )
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "2"
            assert refused.json()["error"]["code"] == "busy"
            # Each refusal counted once, by transport and the limit that was full.
            assert refusals() == {
                **before,
                ("http", "process"): before["http", "process"] + 1,
                ("websocket", "process"): before["websocket", "process"] + 1,
            }
            # Keep-alive is answered meanwhile, and both sockets stay open.
            await bob_ws.ping()
            release.set()
            ack = (await alice_ws.recv_until(lambda f: f["type"] == "ack"))[-1]
            assert ack["client_id"] == "c1"
            # The refused send, sent again with its client_id, now goes through.
            await bob_ws.send({**first, "content": "two", "client_id": "c2"})
            seen = await bob_ws.recv_until(lambda f: f["type"] == "ack")
            assert seen[-1]["client_id"] == "c2"
            if not any(f.get("message", {}).get("content") == "two" for f in seen[:-1]):
                seen += await bob_ws.recv_until(lambda f: f["type"] == "message.created")
            contents = [f["message"]["content"] for f in seen if f["type"] == "message.created"]
            assert contents[-2:] == ["one", "two"]
            assert alice_ws.connection.close_code is None
            assert bob_ws.connection.close_code is None


async def test_one_connection_past_its_frames_in_flight_gets_busy_not_a_close(
    settings: Settings,
    clock: FakeClock,
    alice: NamedUser,
    bob: NamedUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serve_app(settings, clock, frames_in_flight=2) as (live, http):
        a = await alice.login(http)
        room = await make_room(http, a, bob)
        waiting, release = held_sends(monkeypatch)
        before = refusals()
        async with ws_client(live, token_of(a)) as ws:
            for n in range(3):
                await ws.send(
                    {
                        "type": "message.send",
                        "room_id": room,
                        "content": f"m{n}",
                        "client_id": f"c{n}",
                    }
                )
            await asyncio.wait_for(waiting.wait(), 10)
            busy = (await ws.recv_until(lambda f: f["type"] == "error"))[-1]
            assert busy["code"] == "busy" and busy["client_id"] == "c2"
            assert busy["retry_after"] >= 1
            assert refusals() == {
                **before,
                ("websocket", "connection"): before["websocket", "connection"] + 1,
            }
            await ws.ping()  # the socket still answers while its sends wait
            release.set()
            acks = await ws.recv_until(lambda f: f.get("client_id") == "c1" and f["type"] == "ack")
            assert [f["client_id"] for f in acks if f["type"] == "ack"] == ["c0", "c1"]
            assert ws.connection.close_code is None
