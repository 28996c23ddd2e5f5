"""Sending is one service call (the group commit), whichever transport a message comes by."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cmschat.chat.messages.group_commit import GroupCommit
from tests.realtime.test_gateway import make_room, post
from tests.realtime.wsclient import LiveServer, token_of, ws_client
from tests.support import NamedUser


async def test_http_and_websocket_sends_make_the_same_service_call(
    server: LiveServer,
    http: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = await alice.login(http)
    room = await make_room(http, a, bob)
    calls: list[str] = []
    real = GroupCommit.send

    async def spy(self: GroupCommit, **kwargs: Any) -> Any:
        calls.append(kwargs["draft"].content)
        assert self is server.app.state.context.sends  # the process's one writer
        return await real(self, **kwargs)

    monkeypatch.setattr(GroupCommit, "send", spy)
    await post(http, a, room, "by http")
    async with ws_client(server, token_of(a)) as ws:
        await ws.send({"type": "message.send", "room_id": room, "content": "by socket"})
        await ws.recv_until(lambda f: f["type"] == "ack")
    assert calls == ["by http", "by socket"]
