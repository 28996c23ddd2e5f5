"""Frame sizes under ``cmschat serve`` itself (its uvicorn configuration, not the tests'):
over the app's limit an error frame and the socket stays; far over it, a 1009 close."""

from __future__ import annotations

from pathlib import Path

import httpx

from cmschat.cli_server import TRANSPORT_FRAME_FACTOR
from tests.processes import clean_env, cmschat, random_password, running_server
from tests.realtime.wsclient import LiveServer, ws_client

LIMIT = 4096  # CMSCHAT_REALTIME__MAX_FRAME_BYTES, small to keep the frames small


async def test_a_frame_over_the_limit_is_answered_and_one_far_over_closes(
    tmp_path: Path,
) -> None:
    env = clean_env(
        CMSCHAT_ENVIRONMENT="test",
        CMSCHAT_AUTH__BCRYPT_ROUNDS="4",
        CMSCHAT_DATA_DIR=str(tmp_path / "var"),
        CMSCHAT_LOG_LEVEL="WARNING",
        CMSCHAT_REALTIME__MAX_FRAME_BYTES=str(LIMIT),
    )
    password = random_password()
    assert cmschat(tmp_path, "migrate", env=env).returncode == 0
    made = cmschat(tmp_path, "user", "create", "alice", "--password-stdin", env=env, stdin=password)
    assert made.returncode == 0, made.stderr
    with running_server(tmp_path, env, "frames") as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            login = await http.post(
                "/api/v1/auth/login", json={"username": "alice", "password": password}
            )
        token = login.json()["access_token"]
        live = LiveServer(app=None, host=server.base_url.removeprefix("http://"))  # type: ignore[arg-type]

        async with ws_client(live, token) as ws:
            await ws.send("x" * (LIMIT + 1))
            error = await ws.recv()
            assert (error["type"], error["code"]) == ("error", "frame_too_large"), error
            assert str(LIMIT) in error["message"]
            await ws.ping()  # answered: the socket is still open
            # A send too large is refused by its client_id, so the client knows which.
            await ws.send(
                {"type": "message.send", "room_id": 1, "client_id": "c-1", "content": "x" * LIMIT}
            )
            refused = await ws.recv()
            assert (refused["code"], refused.get("client_id")) == ("frame_too_large", "c-1")

            await ws.send("x" * (LIMIT * TRANSPORT_FRAME_FACTOR + 1))
            assert await ws.close_code() == 1009
