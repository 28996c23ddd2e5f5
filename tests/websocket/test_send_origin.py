"""A WebSocket's sends name their origin as before, taken once for the connection.

Who a send's audit event names and the request context it carries (the connection's
request id and address, set once by the gateway) are the same for every send of a
connection: ``FrameActions`` takes them at its first send, not per send.
"""

from __future__ import annotations

import pytest

from cmschat.audit import service as audit
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.settings import Settings
from tests.realtime.test_gateway import make_room
from tests.realtime.wsclient import serve_app, token_of, ws_client
from tests.support import NamedUser, audit_events


@pytest.mark.parametrize("database_url", ["sqlite", "mariadb"], indirect=True)
async def test_a_connections_sends_take_its_origin_once_and_record_it(
    settings: Settings,
    clock: FakeClock,
    alice: NamedUser,
    bob: NamedUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken = []
    origin_of = audit.origin_of

    def counted(actor: str, actor_name: str | None) -> audit.Origin:
        taken.append(actor)
        return origin_of(actor, actor_name)

    monkeypatch.setattr(audit, "origin_of", counted)
    async with serve_app(settings, clock) as (live, http):
        context: AppContext = live.app.state.context
        a = await alice.login(http)
        room = await make_room(http, a, bob)
        async with ws_client(live, token_of(a)) as ws:
            taken.clear()
            for n in range(3):
                await ws.send(
                    {
                        "type": "message.send",
                        "room_id": room,
                        "content": f"hi {n}",
                        "client_id": f"c{n}",
                    }
                )
                await ws.recv_until(lambda f: f["type"] == "ack")
        assert taken == [f"user:{alice.id}"]  # once for the connection's three sends
        created = await audit_events(context.db, action="message.created")
    events = created[-3:]
    assert [(e.actor, e.actor_id, e.actor_name) for e in events] == [
        (f"user:{alice.id}", alice.id, alice.username)
    ] * 3
    assert {e.request_id for e in events} == {events[0].request_id}
    assert events[0].request_id is not None and events[0].request_id.startswith("ws-")
    assert {e.client_address for e in events} == {"127.0.0.1"}
