"""Sends the probe's 3.5 MB / 300,000-key login body, declared and chunked, three times.

Run as a separate process by test_request_limits, so building and sending the body
cannot slow down the polls measured against it. Prints ``ready`` once the body is
built, then one ``STATUS CODE`` line per request.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx

EXTRA = b",".join(b'"k%d":1' % n for n in range(300_000))
BODY = b'{"username":"alice","password":"x",' + EXTRA + b"}"


def chunks() -> Iterator[bytes]:
    """The body as a generator: httpx sends it chunked, with no Content-Length."""
    for start in range(0, len(BODY), 8192):
        yield BODY[start : start + 8192]


def main(base_url: str) -> None:
    """Send the body six times and print what came back."""
    print("ready", flush=True)
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for _ in range(3):
            for content in (BODY, chunks()):
                response = http.post(
                    "/api/v1/auth/login",
                    content=content,
                    headers={"content-type": "application/json"},
                )
                print(response.status_code, response.json()["error"]["code"], flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
