"""A send's answers are serialised once, without the pydantic model, and stay byte for byte
what the model wrote: the WebSocket ack, the room event every member gets, the HTTP answer.

The expected bytes are built the way they were before the send path skipped the model: the
stored message loaded and shaped as ``MessageRead`` (``message_views``), dumped with
``model_dump(mode="json")`` into the frame, or with ``model_dump_json`` for HTTP.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cmschat.chat.messages.views import message_event, message_views
from cmschat.chat.models import EventType, Message
from cmschat.chat.schemas import MessageRead
from cmschat.clock import FakeClock
from cmschat.realtime import protocol
from tests.realtime.test_gateway import make_room
from tests.realtime.wsclient import TIMEOUT, LiveServer, WsClient, token_of, ws_client
from tests.support import NamedUser


async def _stored(server: LiveServer, message_id: int) -> MessageRead:
    async with server.app.state.context.db.unit_of_work(read_only=True) as session:
        message = (await session.scalars(select(Message).where(Message.id == message_id))).one()
        (view,) = await message_views(session, [message])
    return view


async def _raw_until(ws: WsClient, kind: str) -> str:
    """The text of the next frame of type ``kind``, exactly as it came."""
    while True:
        text = await asyncio.wait_for(ws.connection.recv(), timeout=TIMEOUT)
        assert isinstance(text, str)
        if json.loads(text)["type"] == kind:
            return text


async def _upload(http: httpx.AsyncClient, headers: dict[str, str], room: int, name: str) -> int:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{name}"\r\n\r\nitem one\r\n--{boundary}--\r\n'
    ).encode()
    uploaded = await http.post(
        f"/api/v1/rooms/{room}/attachments",
        content=body,
        headers=headers | {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert uploaded.status_code == 201, uploaded.text
    file_id: int = uploaded.json()["id"]
    return file_id


async def test_acks_and_events_are_the_bytes_the_model_wrote(
    server: LiveServer,
    http: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    clock: FakeClock,
) -> None:
    a, b = await alice.login(http), await bob.login(http)
    room = await make_room(http, a, bob)
    clock.advance(microseconds=123_456)  # a fraction of a second in the timestamps
    parent = await http.post(
        f"/api/v1/rooms/{room}/messages", headers=b, json={"content": "the parent"}
    )
    files = [await _upload(http, a, room, "agenda.txt"), await _upload(http, a, room, "ünï.txt")]
    sends: list[dict[str, Any]] = [
        {
            "content": "@bob see **these**, re: `x` https://example.com/a?b=1&c=2 😀",
            "client_id": "c-1",
            "reply_to": parent.json()["id"],
            "attachment_ids": files,
        },
        {"content": 'plain @bob and @nobody, "quoted" & <b>中文</b>', "client_id": "c-2"},
        {"content": "no client id\nsecond line\u00a0"},
        {"content": "@bob see **these**", "client_id": "c-1"},  # a repeat: the first back
    ]
    acked: list[dict[str, Any]] = []
    async with ws_client(server, token_of(a)) as alice_ws, ws_client(server, token_of(b)) as bob_ws:
        for send in sends:
            await alice_ws.send({"type": "message.send", "room_id": room, **send})
            ack = await _raw_until(alice_ws, "ack")
            view = await _stored(server, json.loads(ack)["message"]["id"])
            model = {
                "type": "ack",
                "client_id": send.get("client_id"),
                "message": view.model_dump(mode="json"),
            }
            assert ack == protocol.dumps(model)
            acked.append(json.loads(ack)["message"])
            if send is not sends[-1]:  # a repeat stores nothing and tells no one
                event = await _raw_until(bob_ws, "message.created")
                built = message_event(EventType.message_created, view.seq, view)
                assert event == protocol.envelope_of(built).frame
    first, second, third, repeat = acked
    assert repeat == first
    assert first["reply_to"] == parent.json()["id"] and first["mentions"] == [bob.id]
    assert [file["id"] for file in first["attachments"]] == files
    assert "<strong>these</strong>" in first["content_html"]
    assert second["mentions"] == [bob.id] and "&lt;b&gt;中文&lt;/b&gt;" in second["content_html"]
    assert third["content_html"] == "no client id<br>second line&nbsp;"
    assert first["created_at"].endswith(".123456Z")


async def test_the_http_answer_is_the_bytes_the_model_wrote(
    http: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, server: LiveServer
) -> None:
    a = await alice.login(http)
    room = await make_room(http, a, bob)
    body = {"content": "hi @bob, «ça va» 😀", "client_id": "h-1"}
    for status in (201, 200):  # sent, then repeated
        answer = await http.post(f"/api/v1/rooms/{room}/messages", headers=a, json=body)
        assert answer.status_code == status
        view = await _stored(server, answer.json()["id"])
        assert answer.content == view.model_dump_json().encode()
        assert answer.json()["mentions"] == [bob.id]


async def test_a_send_serialises_its_message_once_without_the_model(
    server: LiveServer,
    http: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = await alice.login(http), await bob.login(http)
    room = await make_room(http, a, bob)
    dumps: list[str] = []
    for name in ("model_dump", "model_dump_json"):
        monkeypatch.setattr(MessageRead, name, lambda *_a, _n=name, **_k: dumps.append(_n))
    async with ws_client(server, token_of(a)) as alice_ws, ws_client(server, token_of(b)) as bob_ws:
        await alice_ws.send({"type": "message.send", "room_id": room, "content": "hi @bob"})
        ack = json.loads(await _raw_until(alice_ws, "ack"))
        event = json.loads(await _raw_until(bob_ws, "message.created"))
        answer = await http.post(f"/api/v1/rooms/{room}/messages", headers=a, json={"content": "x"})
        assert answer.status_code == 201 and answer.json()["seq"] == event["seq"] + 1
    assert ack["message"] == event["message"] and ack["message"]["mentions"] == [bob.id]
    assert dumps == []
