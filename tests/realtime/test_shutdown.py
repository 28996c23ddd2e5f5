"""Graceful shutdown of a real ``cmschat serve``: drain HTTP, close WebSockets with 1012."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.processes import clean_env, cmschat, running_server
from tests.realtime.wsclient import LiveServer, ws_client
from tests.support import PASSWORD

pytestmark = pytest.mark.slow


async def test_sigterm_finishes_requests_in_flight_and_closes_websockets_with_1012(
    tmp_path: Path,
) -> None:
    env = clean_env(CMSCHAT_ENVIRONMENT="test", CMSCHAT_AUTH__BCRYPT_ROUNDS="4")
    assert (
        cmschat(
            tmp_path, "user", "create", "ann", "--password-stdin", env=env, stdin=PASSWORD + "\n"
        ).returncode
        == 0
    )
    with running_server(tmp_path, env, "drain") as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            login = await http.post(
                "/api/v1/auth/login", json={"username": "ann", "password": PASSWORD}
            )
            token = login.json()["access_token"]
            host = server.base_url.removeprefix("http://")
            async with ws_client(LiveServer(app=None, host=host), token) as ws:  # type: ignore[arg-type]
                body_sent = asyncio.Event()
                release = asyncio.Event()

                async def slow_body() -> AsyncIterator[bytes]:
                    yield b'{"kind": "group", "name": "in flight", '
                    body_sent.set()
                    await release.wait()
                    yield b'"member_ids": []}'

                # A request whose body is still arriving when SIGTERM comes.
                in_flight = asyncio.create_task(
                    http.post(
                        "/api/v1/rooms",
                        content=slow_body(),
                        headers={
                            "Authorization": f"Bearer {token}",
                            "Content-Type": "application/json",
                        },
                    )
                )
                await body_sent.wait()
                server.process.send_signal(signal.SIGTERM)
                assert await ws.close_code() == 1012
                release.set()
                response = await in_flight
                assert response.status_code == 201, response.text
        assert server.process.wait(timeout=15) == 0
