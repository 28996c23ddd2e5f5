"""HTTP/1.0 against a real ``cmschat serve`` (httptools, ``api/transport.py``), RFC 9112:
a 1.0 client never gets a chunked answer, and a 1.0 request framed with
``Transfer-Encoding`` is answered and its connection closed after."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.processes import Server, clean_env, cmschat, random_password, running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    """A server with an admin: the server, the admin's password and bearer token."""
    directory = tmp_path_factory.mktemp("http10")
    env = clean_env(
        CMSCHAT_ENVIRONMENT="test",
        CMSCHAT_AUTH__BCRYPT_ROUNDS="4",
        CMSCHAT_DATA_DIR=str(directory / "var"),
        CMSCHAT_LOG_LEVEL="WARNING",
        CMSCHAT_CHAT__SEND_RATE="0",
    )
    password = random_password()
    made = cmschat(
        directory,
        "user",
        "create",
        "boss",
        "--role",
        "admin",
        "--password-stdin",
        env=env,
        stdin=password + "\n",
    )
    assert made.returncode == 0, made.stderr
    with running_server(directory, env, "http10") as server:
        login = httpx.post(
            f"{server.base_url}/api/v1/auth/login",
            json={"username": "boss", "password": password},
            timeout=30,
        )
        assert login.status_code == 200, login.text
        yield server, password, login.json()["access_token"]


def exchange(server: Server, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request`` on a new connection; the answer's head and body, read until the
    server closes (a kept connection would time out here)."""
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def test_a_streamed_answer_to_http_1_0_is_not_chunked(served: tuple[Server, str, str]) -> None:
    server, _password, token = served
    head, body = exchange(
        server,
        b"GET /api/v1/admin/audit/export HTTP/1.0\r\nAuthorization: Bearer "
        + token.encode()
        + b"\r\n\r\n",
    )
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower() and b"content-length" not in head.lower()
    assert b"\r\nConnection: close" in head
    assert body.startswith(b"id,") and body.endswith(b"\n")  # the whole CSV, unchunked


def chunked_login(password: str) -> bytes:
    data = json.dumps({"username": "boss", "password": password}).encode()
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


def test_a_http_1_0_request_with_transfer_encoding_is_answered_then_closed(
    served: tuple[Server, str, str],
) -> None:
    server, password, _token = served
    head, body = exchange(
        server,
        b"POST /api/v1/auth/login HTTP/1.0\r\nConnection: keep-alive\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked_login(password)
        + b"GET /healthz HTTP/1.0\r\n\r\n",  # never answered: the connection closes first
    )
    assert head.startswith(b"HTTP/1.1 200 ") and b"\r\nConnection: close" in head
    assert b"access_token" in body and b"HTTP/1.1" not in body


def test_a_http_1_0_request_with_both_framings_is_refused(
    served: tuple[Server, str, str],
) -> None:
    server, password, _token = served
    login = chunked_login(password)
    head, _body = exchange(
        server,
        b"POST /api/v1/auth/login HTTP/1.0\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n%s" % (len(login), login),
    )
    assert head.startswith(b"HTTP/1.1 400 ")
