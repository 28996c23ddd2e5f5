"""The WebSocket gateway: authentication, live delivery, resume, errors, limits."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.db.actors import SYSTEM_CLI
from cmschat.observability import instruments
from cmschat.realtime.broker import Envelope
from cmschat.retention import policies
from cmschat.retention.purge import run_purge
from cmschat.settings import Settings
from tests.realtime.wsclient import LiveServer, serve_app, token_of, ws_client
from tests.support import NamedUser


async def make_room(
    http: httpx.AsyncClient, owner: dict[str, str], *members: NamedUser, name: str = "team"
) -> int:
    response = await http.post(
        "/api/v1/rooms",
        headers=owner,
        json={"kind": "group", "name": name, "member_ids": [m.id for m in members]},
    )
    assert response.status_code == 201, response.text
    room_id: int = response.json()["id"]
    return room_id


async def post(
    http: httpx.AsyncClient, headers: dict[str, str], room_id: int, content: str
) -> dict[str, Any]:
    response = await http.post(
        f"/api/v1/rooms/{room_id}/messages", headers=headers, json={"content": content}
    )
    assert response.status_code == 201, response.text
    message: dict[str, Any] = response.json()
    return message


def created(frames: list[dict[str, Any]]) -> list[str]:
    return [f["message"]["content"] for f in frames if f["type"] == "message.created"]


async def test_ready_lists_rooms_and_live_messages_flow_both_ways(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(http), await bob.login(http)
    room = await make_room(http, a, bob)
    async with ws_client(server, token_of(a)) as alice_ws, ws_client(server, token_of(b)) as bob_ws:
        assert alice_ws.ready["user"]["username"] == "alice"
        assert set(bob_ws.ready["rooms"]) == {str(room)}
        await alice_ws.send(
            {"type": "message.send", "room_id": room, "content": "안녕 **bob**", "client_id": "c-1"}
        )
        frames = await alice_ws.recv_until(lambda f: f["type"] == "ack")
        ack = frames[-1]
        assert ack["client_id"] == "c-1" and ack["message"]["content"] == "안녕 **bob**"
        event = (await bob_ws.recv_until(lambda f: f["type"] == "message.created"))[-1]
        assert event["room_id"] == room and event["seq"] == ack["message"]["seq"]
        assert event["message"] == ack["message"]
        assert "<strong>bob</strong>" in event["message"]["content_html"]
        await post(http, b, room, "over http")
        reply = (await alice_ws.recv_until(lambda f: f["type"] == "message.created"))[-1]
        assert reply["message"]["content"] == "over http"
        assert reply["seq"] == event["seq"] + 1


async def test_resume_replays_exactly_what_was_missed_in_order_then_goes_live(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(http), await bob.login(http)
    room = await make_room(http, a, bob)
    await post(http, a, room, "before")
    async with ws_client(server, token_of(b)) as bob_ws:
        last_seen = int(bob_ws.ready["rooms"][str(room)])
    missed = [f"while away {n}" for n in range(7)]
    for text in missed:
        await post(http, a, room, text)
    async with ws_client(server, token_of(b), resume={room: last_seen}) as bob_ws:
        frames = await bob_ws.recv_until(
            lambda f: f.get("message", {}).get("content") == missed[-1]
        )
        assert created(frames) == missed
        seqs = [f["seq"] for f in frames]
        assert seqs == list(range(last_seen + 1, last_seen + 1 + len(missed)))
        await post(http, a, room, "live again")
        live = await bob_ws.recv_until(lambda f: f["type"] == "message.created")
        assert created(live) == ["live again"]


async def test_resume_shows_messages_deleted_meanwhile_as_tombstones(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(http), await bob.login(http)
    room = await make_room(http, a, bob)
    async with ws_client(server, token_of(b)) as bob_ws:
        last_seen = int(bob_ws.ready["rooms"][str(room)])
    secret = await post(http, a, room, "oops, a password")
    await http.delete(f"/api/v1/messages/{secret['id']}", headers=a)
    async with ws_client(server, token_of(b), resume={room: last_seen}) as bob_ws:
        frames = await bob_ws.recv_until(lambda f: f["type"] == "message.deleted")
    assert [f["type"] for f in frames] == ["message.created", "message.deleted"]
    assert all(f["message"]["content"] == "" and f["message"]["deleted"] for f in frames)


async def test_resume_older_than_what_is_kept_gets_resync_required(
    server: LiveServer, http: httpx.AsyncClient, clock: FakeClock, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(http), await bob.login(http)
    room = await make_room(http, a, bob)
    for n in range(5):
        await post(http, a, room, f"m{n}")
    context: AppContext = server.app.state.context
    await purge_everything_older_than_a_day(context, clock)
    a = await alice.login(http)
    b = await bob.login(http)
    async with ws_client(server, token_of(b), resume={room: 1}) as bob_ws:
        frame = await bob_ws.recv()
        # Two joins and five messages: the room stands at seq 7, all of it purged.
        assert frame == {"type": "resync_required", "room_id": room, "seq": 7}
        await post(http, a, room, "after resync")
        live = await bob_ws.recv_until(lambda f: f["type"] == "message.created")
        assert created(live) == ["after resync"] and live[-1]["seq"] == 8
    async with ws_client(server, token_of(b), resume={room: 7}) as bob_ws:
        # Resuming from where the resync left it: the rest, and no resync again.
        assert created(await bob_ws.recv_until(lambda f: f["seq"] == 8)) == ["after resync"]


async def purge_everything_older_than_a_day(context: AppContext, clock: FakeClock) -> None:
    async with context.db.unit_of_work(SYSTEM_CLI) as session:
        await policies.set_defaults(
            session, message_days=1, attachment_days=None, settings=context.settings.retention
        )
    clock.advance(days=2)
    report = await run_purge(
        context.db, clock=clock, settings=context.settings.retention, eraser=context.eraser
    )
    assert report.totals[0] == 5


@pytest.mark.parametrize(
    "first_frame",
    [
        "not json",
        '{"type": "auth"}',
        '{"type": "auth", "token": "forged-token-value"}',
        '{"type": "message.send", "room_id": 1, "content": "x"}',
    ],
)
async def test_a_bad_first_frame_is_refused_with_1008(server: LiveServer, first_frame: str) -> None:
    async with ws_client(server, None) as ws:
        await ws.send(first_frame)
        error = await ws.recv()
        assert error["type"] == "error" and error["code"] == "unauthorized"
        assert await ws.close_code() == 1008


async def test_silence_instead_of_auth_is_closed_1008(settings: Settings, clock: FakeClock) -> None:
    async with (
        serve_app(settings, clock, auth_timeout_seconds=0.2) as (live, _http),
        ws_client(live, None) as ws,
    ):
        assert await ws.close_code() == 1008


async def test_a_token_in_the_url_is_not_a_login(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser
) -> None:
    token = token_of(await alice.login(http))
    async with ws_client(server, None, query=f"?token={token}&access_token={token}") as ws:
        await ws.send({"type": "ping"})
        assert (await ws.recv())["code"] == "unauthorized"


async def test_foreign_origins_are_refused_at_the_handshake(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with ws_client(server, None, headers={"Origin": "https://evil.example.net"}):
            pass
    assert refused.value.response.status_code == 403
    token = token_of(await alice.login(http))
    async with ws_client(server, token, headers={"Origin": f"http://{server.host}"}) as ws:
        assert ws.ready["type"] == "ready"


async def test_a_draining_server_answers_the_upgrade_503_with_retry_after(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser
) -> None:
    """Not a 403 (forbidden): a proxy may try another instance, a client comes back."""
    token = token_of(await alice.login(http))
    context: AppContext = server.app.state.context
    context.draining = True
    try:
        with pytest.raises(InvalidStatus) as refused:
            async with ws_client(server, token):
                pass
    finally:
        context.draining = False
    answer = refused.value.response
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"
    assert json.loads(answer.body)["error"]["code"] == "shutting_down"
    async with ws_client(server, token) as ws:  # the same server once it is not draining
        assert ws.ready["type"] == "ready"


async def test_bad_frames_get_an_error_and_the_connection_lives_on(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser
) -> None:
    a = await alice.login(http)
    room = await make_room(http, a)
    async with ws_client(server, token_of(a)) as ws:
        for frame, code in [
            ("{not json", "invalid"),
            ({"type": "teleport"}, "invalid"),
            ({"type": "message.send", "room_id": room}, "invalid"),
            ({"type": "message.send", "room_id": room, "content": "x", "extra": 1}, "invalid"),
            (
                {"type": "message.send", "room_id": 999999, "content": "x", "client_id": "z9"},
                "not_found",
            ),
            ({"type": "message.send", "room_id": room, "content": "   "}, "invalid"),
            ({"type": "typing", "room_id": 424242}, "not_found"),
            ("x" * 70_000, "frame_too_large"),
            # Escaped lone surrogates: valid JSON, not valid text; the client id is not
            # echoed (it cannot be written back as UTF-8), but the frame is answered.
            (f'{{"type": "message.send", "room_id": {room}, "content": "a\\ud800b"}}', "invalid"),
            (
                f'{{"type": "message.send", "room_id": {room}, "content": "x", '
                f'"client_id": "\\udc00"}}',
                "invalid",
            ),
        ]:
            await ws.send(frame)
            error = await ws.recv()
            assert error["type"] == "error" and error["code"] == code, (frame, error)
            if isinstance(frame, dict) and frame.get("client_id"):
                assert error["client_id"] == frame["client_id"]
        assert await ws.ping() == []
        await ws.send({"type": "message.send", "room_id": room, "content": "still here"})
        assert (await ws.recv_until(lambda f: f["type"] == "ack"))[-1]["message"]["seq"] > 0


async def test_typing_reaches_others_once_per_interval_and_is_not_stored(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(http), await bob.login(http)
    room = await make_room(http, a, bob)
    async with ws_client(server, token_of(a)) as alice_ws, ws_client(server, token_of(b)) as bob_ws:
        for _ in range(3):
            await alice_ws.send({"type": "typing", "room_id": room})
        await alice_ws.send({"type": "message.send", "room_id": room, "content": "done typing"})
        frames = await bob_ws.recv_until(lambda f: f["type"] == "message.created")
    assert [f["type"] for f in frames] == ["typing", "message.created"]
    assert frames[0]["user"]["id"] == alice.id and "seq" not in frames[0]


async def test_joining_a_room_while_connected_starts_its_events(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(http), await bob.login(http)
    room = await make_room(http, a)
    await post(http, a, room, "before bob")
    async with ws_client(server, token_of(b)) as bob_ws:
        assert str(room) not in bob_ws.ready["rooms"]
        await http.post(f"/api/v1/rooms/{room}/members", headers=a, json={"user_ids": [bob.id]})
        await post(http, a, room, "welcome bob")
        frames = await bob_ws.recv_until(lambda f: f["type"] == "message.created")
        assert [f["type"] for f in frames] == ["member.joined", "message.created"]
        assert frames[0]["user"]["id"] == bob.id
        assert created(frames) == ["welcome bob"]
        await http.delete(f"/api/v1/rooms/{room}/members/{bob.id}", headers=a)
        await post(http, a, room, "bob cannot see this")
        left = await bob_ws.recv_until(lambda f: f["type"] == "member.left")
        assert left[-1]["user"]["id"] == bob.id
        assert await bob_ws.ping() == []


async def test_a_client_too_slow_to_keep_up_is_closed_1013(
    settings: Settings, clock: FakeClock, alice: NamedUser
) -> None:
    async with serve_app(settings, clock, send_queue_size=10) as (live, http):
        a = await alice.login(http)
        room = await make_room(http, a)
        async with ws_client(live, token_of(a)) as ws:
            hub = live.app.state.context.hub
            # More events than the queue holds, offered before the sender can run.
            for seq in range(1, 50):
                hub.deliver(
                    Envelope(
                        room_id=room,
                        seq=None,
                        type="typing",
                        frame=f'{{"type":"typing","n":{seq}}}',
                    )
                )
            assert await ws.close_code() == 1013


async def test_shutdown_closes_with_1012_so_clients_reconnect(
    settings: Settings, clock: FakeClock, alice: NamedUser
) -> None:
    async with serve_app(settings, clock) as (live, http):
        token = token_of(await alice.login(http))
        async with ws_client(live, token) as ws:
            closing = asyncio.create_task(ws.close_code())
            live.app.state.context.hub.close_all(1012)
            assert await closing == 1012


async def test_presence_is_told_to_people_sharing_a_room(
    server: LiveServer,
    http: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    agent: NamedUser,
) -> None:
    a, b, stranger = await alice.login(http), await bob.login(http), await agent.login(http)
    await make_room(http, a, bob)
    async with (
        ws_client(server, token_of(a)) as alice_ws,
        ws_client(server, token_of(stranger)) as stranger_ws,
    ):
        assert alice_ws.ready["online"] == []
        async with ws_client(server, token_of(b)) as bob_ws:
            assert bob_ws.ready["online"] == [alice.id]
            online = (await alice_ws.recv_until(lambda f: f["type"] == "presence"))[-1]
            assert online == {"type": "presence", "user_id": bob.id, "status": "online"}
            async with ws_client(server, token_of(b)):
                pass  # a second tab opening and closing changes nothing
        offline = (await alice_ws.recv_until(lambda f: f["type"] == "presence"))[-1]
        assert offline == {"type": "presence", "user_id": bob.id, "status": "offline"}
        assert await stranger_ws.ping() == []  # shares no room: hears nothing


async def test_an_idle_connection_is_closed_but_pings_keep_it_open(
    settings: Settings, clock: FakeClock, alice: NamedUser
) -> None:
    async with serve_app(settings, clock, idle_timeout_seconds=1.0) as (live, http):
        token = token_of(await alice.login(http))
        async with ws_client(live, token) as ws:
            for _ in range(8):  # pings every 0.2 s span longer than the idle limit
                assert await ws.ping() == []
                await asyncio.sleep(0.2)
            assert await ws.close_code() == 1001


async def test_a_message_with_files_arrives_with_their_metadata(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(http), await bob.login(http)
    room = await make_room(http, a, bob)
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="agenda.txt"\r\n\r\nitem one\r\n--{boundary}--\r\n'
    ).encode()
    uploaded = await http.post(
        f"/api/v1/rooms/{room}/attachments",
        content=body,
        headers=a | {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert uploaded.status_code == 201, uploaded.text
    async with ws_client(server, token_of(a)) as alice_ws, ws_client(server, token_of(b)) as bob_ws:
        await alice_ws.send(
            {
                "type": "message.send",
                "room_id": room,
                "content": "see file",
                "attachment_ids": [uploaded.json()["id"]],
            }
        )
        event = (await bob_ws.recv_until(lambda f: f["type"] == "message.created"))[-1]
    (attached,) = event["message"]["attachments"]
    assert attached == uploaded.json() | {"message_id": event["message"]["id"]}


async def test_published_notices_arrive_live_to_their_audience_only(
    server: LiveServer, http: httpx.AsyncClient, admin: NamedUser, alice: NamedUser, bob: NamedUser
) -> None:
    a, b, headers = await alice.login(http), await bob.login(http), await admin.login(http)
    alices_room = await make_room(http, a, name="alice only")

    async def publish(title: str, room_ids: list[int] | None) -> None:
        notice = await http.post(
            "/api/v1/admin/notices",
            json={"title": title, "body_html": "<p>x</p>", "room_ids": room_ids},
            headers=headers,
        )
        published = await http.post(
            f"/api/v1/admin/notices/{notice.json()['id']}/publish", headers=headers
        )
        assert published.status_code == 200

    def is_notice(frame: dict[str, Any]) -> bool:
        return frame["type"] == "notice.published"

    async with ws_client(server, token_of(a)) as alice_ws, ws_client(server, token_of(b)) as bob_ws:
        await publish("for alice's room", [alices_room])
        await publish("for everyone", None)
        alice_frames = await alice_ws.recv_until(
            lambda f: is_notice(f) and f["notice"]["title"] == "for everyone"
        )
        assert [f["notice"]["title"] for f in alice_frames if is_notice(f)] == [
            "for alice's room",
            "for everyone",
        ]
        # Bob's first notice is the one for everyone: the targeted one never reached him.
        bob_frames = await bob_ws.recv_until(is_notice)
        assert bob_frames[-1]["notice"]["title"] == "for everyone"
        assert "room_id" not in bob_frames[-1]


async def test_a_client_gone_before_ready_is_no_error(
    server: LiveServer,
    http: httpx.AsyncClient,
    alice: NamedUser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As when a shutdown closes a socket that has just signed in: the server, still reading
    # the rooms, then sends ``ready`` into a closed connection.
    token = token_of(await alice.login(http))
    open_before = instruments.WS_OPEN._value.get()
    async with connect(server.ws) as connection:
        await connection.send(json.dumps({"type": "auth", "token": token, "resume": {}}))
    deadline = asyncio.get_running_loop().time() + 10
    while instruments.WS_OPEN._value.get() > open_before:  # the handler has not ended yet
        assert asyncio.get_running_loop().time() < deadline, "the handler never ended"
        await asyncio.sleep(0.01)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
