"""``cmschat serve`` sends header names as the app writes them.

HTTP header names are case-insensitive, but some clients look them up case-sensitively:
the contract smoke (``dict(response.headers)["X-Content-Type-Options"]`` in urllib) is one.
uvicorn's httptools implementation and granian lower-case every name on the wire; h11
keeps the app's spelling, which is why ``serve`` stays on h11 (docs/performance.md, "The
server under the app").
"""

from __future__ import annotations

import http.client
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
        assert server.stop() == 0
    # The exact spelling a case-sensitive client looks up.
    assert "X-Content-Type-Options" in names, names
    assert "Content-Security-Policy" in names, names
