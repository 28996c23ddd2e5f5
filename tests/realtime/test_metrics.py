"""Real-time metrics: connections, frames, delivery latency, broker traffic, auth failures."""

from __future__ import annotations

import httpx

from tests.observability.metrics_support import value
from tests.realtime.test_gateway import make_room
from tests.realtime.wsclient import LiveServer, token_of, ws_client
from tests.support import NamedUser


async def test_a_message_send_is_counted_from_commit_to_frame(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(http), await bob.login(http)
    room = await make_room(http, a, bob)
    open_before = value("cmschat_websocket_connections_open")
    frames = value("cmschat_websocket_frames_sent_total")
    stored = value("cmschat_messages_stored_total")
    delivered = value("cmschat_delivery_latency_seconds_count")
    published = value("cmschat_broker_published_total")
    received = value("cmschat_broker_received_total")
    async with ws_client(server, token_of(a)) as alice_ws, ws_client(server, token_of(b)) as bob_ws:
        assert value("cmschat_websocket_connections_open") == open_before + 2
        await alice_ws.send(
            {"type": "message.send", "room_id": room, "content": "hi", "client_id": "m-1"}
        )
        await alice_ws.recv_until(lambda f: f["type"] == "message.created")
        await bob_ws.recv_until(lambda f: f["type"] == "message.created")
    assert value("cmschat_messages_stored_total") == stored + 1
    assert value("cmschat_broker_published_total") > published
    assert value("cmschat_broker_received_total") > received
    # Both connections wrote the message.created frame, each timed from the commit.
    assert value("cmschat_delivery_latency_seconds_count") >= delivered + 2
    assert value("cmschat_websocket_frames_sent_total") >= frames + 4  # ready x2, ack, events


async def test_a_failed_websocket_sign_in_is_counted(server: LiveServer) -> None:
    before = value("cmschat_websocket_closes_total", reason="auth_failed")
    async with ws_client(server, None) as client:
        await client.send({"type": "auth", "token": "not-a-token"})
        assert await client.close_code() == 1008
    assert value("cmschat_websocket_closes_total", reason="auth_failed") == before + 1
