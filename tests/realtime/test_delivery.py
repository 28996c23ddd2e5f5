"""Delivery guarantees: publish only after commit, gaps repaired from the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cmschat.app import create_app
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.db.actors import SYSTEM_CLI
from cmschat.events import Published, queue_events
from cmschat.realtime.broker import Envelope, MemoryBroker
from cmschat.settings import Settings
from cmschat.websocket.backlog import RoomBacklog
from tests.realtime.test_gateway import created, make_room, post
from tests.realtime.wsclient import LiveServer, serve, token_of, ws_client
from tests.support import NamedUser


class SpyBroker(MemoryBroker):
    """Records what was published."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[Envelope] = []

    async def publish(self, envelopes: list[Envelope]) -> None:
        self.published += envelopes
        await super().publish(envelopes)


async def test_events_are_published_only_after_the_commit(context: AppContext) -> None:
    broker = SpyBroker()
    context.broker = broker  # the app's publisher sends to whichever broker the context has
    event = Published(room_id=1, seq=1, type="message.created", payload={})
    with pytest.raises(RuntimeError):
        async with context.db.unit_of_work(SYSTEM_CLI) as session:
            queue_events(session, [event])
            raise RuntimeError("the transaction fails")
    assert broker.published == []
    async with context.db.unit_of_work(SYSTEM_CLI) as session:
        queue_events(session, [event])
        assert broker.published == []  # not yet: still inside the transaction
    assert [e.seq for e in broker.published] == [1]


class LossyBroker(MemoryBroker):
    """Loses the envelopes of chosen room seqs, as Redis pub/sub may during a blip."""

    def __init__(self, lose: set[int]) -> None:
        super().__init__()
        self.lose = lose

    async def publish(self, envelopes: list[Envelope]) -> None:
        await super().publish([e for e in envelopes if e.seq not in self.lose])


async def put_broker(live: LiveServer, broker: MemoryBroker) -> None:
    """Run the live app on ``broker`` from now on."""
    context: AppContext = live.app.state.context
    await context.broker.close()
    context.broker = broker
    await broker.start(context.hub.deliver, context.hub.catch_up_all)


@pytest.fixture
async def lossy_server(settings: Settings, clock: FakeClock) -> AsyncIterator[LiveServer]:
    async with serve(create_app(settings, clock=clock)) as live:
        await put_broker(live, LossyBroker(lose=set()))
        yield live


async def test_clients_converge_when_the_broker_loses_events(
    lossy_server: LiveServer, alice: NamedUser, bob: NamedUser
) -> None:
    context: AppContext = lossy_server.app.state.context
    transport = httpx.ASGITransport(app=lossy_server.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        a, b = await alice.login(http), await bob.login(http)
        room = await make_room(http, a, bob)  # seqs 1 and 2: the joins
        assert isinstance(context.broker, LossyBroker)
        context.broker.lose = {4, 5, 8, 11}  # including two in a row
        async with ws_client(lossy_server, token_of(b)) as bob_ws:
            texts = [f"m{n}" for n in range(10)]  # seqs 3..12
            for text in texts:
                await post(http, a, room, text)
            frames = await bob_ws.recv_until(lambda f: f.get("seq") == 12)
    assert created(frames) == texts
    assert [f["seq"] for f in frames] == list(range(3, 13))


async def test_a_broker_reconnect_makes_every_connection_catch_up(
    lossy_server: LiveServer, alice: NamedUser, bob: NamedUser
) -> None:
    context: AppContext = lossy_server.app.state.context
    transport = httpx.ASGITransport(app=lossy_server.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        a, b = await alice.login(http), await bob.login(http)
        room = await make_room(http, a, bob)
        async with ws_client(lossy_server, token_of(b)) as bob_ws:
            assert isinstance(context.broker, LossyBroker)
            context.broker.lose = {3, 4}  # the last events: no later one reveals the gap
            await post(http, a, room, "lost one")
            await post(http, a, room, "lost two")
            context.hub.catch_up_all()  # what the Redis broker does when it reconnects
            frames = await bob_ws.recv_until(lambda f: f.get("seq") == 4)
    assert created(frames) == ["lost one", "lost two"]


async def test_concurrent_senders_every_client_gets_every_message_once_in_order(
    settings: Settings, clock: FakeClock, alice: NamedUser, bob: NamedUser
) -> None:
    async with serve(create_app(settings, clock=clock)) as live:
        transport = httpx.ASGITransport(app=live.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            a, b = await alice.login(http), await bob.login(http)
            room = await make_room(http, a, bob)
            async with (
                ws_client(live, token_of(a)) as alice_ws,
                ws_client(live, token_of(b)) as bob_ws,
            ):

                async def burst(ws_sender, who: str) -> None:
                    for n in range(25):
                        await ws_sender.send(
                            {
                                "type": "message.send",
                                "room_id": room,
                                "content": f"{who}{n}",
                                "client_id": f"{who}{n}",
                            }
                        )

                await asyncio.gather(
                    burst(alice_ws, "a"),
                    burst(bob_ws, "b"),
                    *[post(http, a, room, f"h{n}") for n in range(10)],
                )
                expected = 60
                for ws in (alice_ws, bob_ws):
                    frames = await ws.recv_until(lambda f: f.get("seq") == 2 + expected)
                    seqs = [f["seq"] for f in frames if f["type"] == "message.created"]
                    assert seqs == list(range(3, 3 + expected))
                    contents = created(frames)
                    assert len(set(contents)) == expected
                    # each sender's own messages keep the order they were sent in
                    assert [c for c in contents if c.startswith("a")] == [
                        f"a{n}" for n in range(25)
                    ]


class SwappingBroker(MemoryBroker):
    """Hands chosen events over after the event above them, as a room's events reach an
    instance from two streams: its own at once, another instance's a little later."""

    def __init__(self, late: set[int]) -> None:
        super().__init__()
        self.late = late
        self.held: list[Envelope] = []

    async def publish(self, envelopes: list[Envelope]) -> None:
        handed: list[Envelope] = []
        for envelope in envelopes:
            if envelope.seq in self.late:
                self.held.append(envelope)
                continue
            handed += [envelope, *self.held]
            self.held = []
        await super().publish(handed)


@pytest.mark.parametrize(("gap_wait_ms", "replays"), [(300, 0), (0, 2)])
async def test_events_out_of_order_are_put_back_in_order_before_the_database_is_asked(
    settings: Settings,
    clock: FakeClock,
    alice: NamedUser,
    bob: NamedUser,
    monkeypatch: pytest.MonkeyPatch,
    gap_wait_ms: float,
    replays: int,
) -> None:
    """Two events each arriving just after the one above it reach the client in order,
    once each; within ``gap_wait_ms`` the sender takes them from its queue instead of
    reading the room's stored events (with no wait, it reads them each time)."""
    read: list[tuple[int, int]] = []
    after = RoomBacklog.after

    async def counted(self: RoomBacklog, room_id: int, **kwargs: Any) -> Any:
        read.append((room_id, kwargs["after"]))
        return await after(self, room_id, **kwargs)

    settings.realtime.gap_wait_ms = gap_wait_ms
    async with serve(create_app(settings, clock=clock)) as live:
        await put_broker(live, SwappingBroker(late={4, 7}))
        transport = httpx.ASGITransport(app=live.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            a, b = await alice.login(http), await bob.login(http)
            room = await make_room(http, a, bob)  # seqs 1 and 2: the joins
            async with ws_client(live, token_of(b)) as bob_ws:
                monkeypatch.setattr(RoomBacklog, "after", counted)
                texts = [f"m{n}" for n in range(6)]  # seqs 3..8; 4 after 5, 7 after 8
                for text in texts:
                    await post(http, a, room, text)
                frames = await bob_ws.recv_until(lambda f: f.get("seq") == 8)
    assert created(frames) == texts
    assert [f["seq"] for f in frames] == list(range(3, 9))
    assert len(read) == replays, read
