"""Deeply nested client frames: an error frame and a log line, never a silent close."""

from __future__ import annotations

import logging

import httpx
import pytest

from cmschat.realtime import protocol
from tests.realtime.wsclient import LiveServer, token_of, ws_client
from tests.support import NamedUser

DEEP = [
    "[" * 5000 + "]" * 5000,
    '{"a":' * 5000 + "1" + "}" * 5000,
    '{"type": "message.send", "room_id": 1, "content": "x", "attachment_ids": '
    + "[" * 5000
    + "]" * 5000
    + "}",
]


@pytest.mark.parametrize("frame", DEEP, ids=["arrays", "objects", "inside-a-send"])
async def test_a_deeply_nested_frame_gets_an_error_and_the_socket_lives_on(
    server: LiveServer,
    http: httpx.AsyncClient,
    alice: NamedUser,
    frame: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="cmschat.websocket.endpoint")
    a = await alice.login(http)
    async with ws_client(server, token_of(a)) as ws:
        await ws.send(frame)
        error = (await ws.recv_until(lambda f: f["type"] == "error"))[-1]
        assert error["code"] == "invalid" and "nest" in error["message"]
        await ws.send({"type": "ping"})
        await ws.recv_until(lambda f: f["type"] == "pong")
    assert any("nested deeper" in r.getMessage() for r in caplog.records)


async def test_a_deeply_nested_auth_frame_is_refused_with_1008(server: LiveServer) -> None:
    async with ws_client(server, None) as ws:
        await ws.send('{"type": "auth", "token": "x", "resume": ' + "[" * 5000 + "]" * 5000 + "}")
        frame = await ws.recv()
        assert frame["type"] == "error" and "nested" in frame["message"]
        assert await ws.close_code() == 1008


@pytest.mark.parametrize(
    ("text", "deep"),
    [
        ('{"content": "' + "[" * 100 + '"}', False),  # brackets inside a string do not count
        ('{"content": "a \\" [[[[[[[[[[ b"}', False),  # nor after an escaped quote
        ('{"a": [[[[[[[[1]]]]]]]]}', True),
        ('{"a": [[[[[[[1]]]]]]]}', False),  # 8 levels: allowed
    ],
)
def test_nesting_is_measured_outside_strings(text: str, deep: bool) -> None:
    assert protocol.too_deep(text) is deep
