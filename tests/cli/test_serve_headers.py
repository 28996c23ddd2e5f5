"""``cmschat serve`` sends header names as the app writes them.

HTTP header names are case-insensitive, but some clients look them up case-sensitively:
the contract smoke (``dict(response.headers)["X-Content-Type-Options"]`` in urllib) is one.
uvicorn's stock httptools protocol and granian lower-case every name on the wire; ``serve``
runs httptools with a head writer that keeps the app's spelling, as h11 did
(``api/transport.py``; docs/performance.md, "The server under the app").
"""

from __future__ import annotations

import http.client
import socket
from pathlib import Path
from urllib.parse import urlsplit

from tests.processes import clean_env, running_server

FAST = {"CMSCHAT_ENVIRONMENT": "test", "CMSCHAT_AUTH__BCRYPT_ROUNDS": "4"}


def test_served_header_names_keep_the_apps_spelling(tmp_path: Path) -> None:
    with running_server(tmp_path, clean_env(**FAST), "headers") as server:
        address = urlsplit(server.base_url)
        connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
        try:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            names = [name for name, _ in response.getheaders()]
        finally:
            connection.close()
        with socket.create_connection((address.hostname or "", address.port or 0), 10) as raw:
            raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
        assert server.stop() == 0
    # The exact spelling a case-sensitive client looks up.
    assert "X-Content-Type-Options" in names, names
    assert "Content-Security-Policy" in names, names
    head = answer.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    assert b"\r\nX-Content-Type-Options: nosniff\r\n" in head, head
    assert head.endswith(b"\r\nConnection: close"), head
