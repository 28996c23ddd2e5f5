"""A client that stops reading: cut off as documented (1013, or an aborted socket when not
even the close frame can go out), removed from presence, logged and counted, while everyone
else keeps receiving; it never holds the server up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import time
from urllib.parse import urlparse

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from cmschat.clock import FakeClock
from cmschat.settings import Settings
from tests.realtime.wsclient import serve_app, token_of, ws_client
from tests.support import NamedUser

WRITE_TIMEOUT = 2.0
SLOW_CLOSES = re.compile(r'^cmschat_websocket_closes_total\{reason="slow_client"\} (\S+)$', re.M)
MESSAGE = "x" * 3900


async def test_a_client_that_stops_reading_is_cut_off_and_forgotten(
    settings: Settings,
    clock: FakeClock,
    alice: NamedUser,
    bob: NamedUser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with (
        serve_app(settings, clock, send_queue_size=10, write_timeout_seconds=WRITE_TIMEOUT) as (
            live,
            http,
        ),
        contextlib.AsyncExitStack() as closing,
    ):
        alice_headers = await alice.login(http)
        bob_headers = await bob.login(http)
        made = await http.post(
            "/api/v1/rooms",
            headers=alice_headers,
            json={"kind": "group", "name": "slow", "member_ids": [bob.id]},
        )
        room = made.json()["id"]
        hub = live.app.state.context.hub
        closes_before = await slow_closes(http)

        # Bob's client: a tiny receive buffer, and it never reads after "ready".
        address = urlparse(live.ws)
        raw = closing.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect((address.hostname, address.port))
        # No client-side keep-alive: a client that reads nothing never sees its pongs, and
        # the library would close with 1011 after ping_interval + ping_timeout (40 s),
        # which a loaded machine reaches before the server's cut-off.
        stalled = await connect(live.ws, sock=raw, max_queue=1, open_timeout=10, ping_interval=None)
        closing.push_async_callback(stalled.close)
        await stalled.send(json.dumps({"type": "auth", "token": token_of(bob_headers)}))
        assert json.loads(await stalled.recv())["type"] == "ready"
        assert hub.connections_of(bob.id)

        async with ws_client(live, token_of(alice_headers)) as watcher:
            got: list[int] = []
            everything = asyncio.Event()
            last_seq = 0

            async def watch() -> None:  # Alice reads as she should, all along
                while True:
                    frame = await watcher.recv(within=60)
                    if frame["type"] == "message.created":
                        got.append(frame["seq"])
                        if frame["seq"] == last_seq:
                            everything.set()

            watching = asyncio.create_task(watch())
            started = time.monotonic()
            sent = 0
            while hub.connections_of(bob.id):
                assert time.monotonic() - started < 60, "the stalled client was never cut off"
                response = await http.post(
                    f"/api/v1/rooms/{room}/messages",
                    headers=alice_headers,
                    json={"content": f"{sent} {MESSAGE}"},
                )
                assert response.status_code == 201, response.text
                sent, last_seq = sent + 1, response.json()["seq"]
            # Everyone else got everything, in order.
            everything.clear()  # an earlier frame may have matched an earlier last_seq
            if last_seq not in got:
                await asyncio.wait_for(everything.wait(), timeout=30)
            watching.cancel()
            missing = sorted(set(range(last_seq - sent + 1, last_seq + 1)) - set(got))
            assert got == sorted(got) and not missing, missing

        slow = [r for r in caplog.records if "closing a slow client" in r.getMessage()]
        assert len(slow) == 1, [r.getMessage() for r in slow]
        assert getattr(slow[0], "event.reason") in ("queue_overflow", "write_timeout")
        assert await slow_closes(http) == closes_before + 1

        # The client, once it reads again, finds its connection over (1013, or reset).
        code = None
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(15):
                while True:
                    await stalled.recv()
        code = stalled.close_code
        assert code in (1013, 1006, None), code
        await stalled.close()


async def slow_closes(http: httpx.AsyncClient) -> float:
    """The process's count of slow-client closes so far (metrics are process-wide)."""
    found = SLOW_CLOSES.search((await http.get("/metrics")).text)
    return float(found.group(1)) if found else 0.0
