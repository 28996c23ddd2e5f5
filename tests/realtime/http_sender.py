"""An HTTP sender of the overload test's load generator (``load_worker.py``)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import orjson

from tests.realtime.crowd import ANSWER_WITHIN, Tally


class HttpSender:
    """A member who also sends over HTTP (its own client ids), open loop.

    Raw HTTP/1.1 on keep-alive sockets, one post at a time each and at most six to the
    host, as browsers do: a post due goes out on an idle socket, or a new one up to
    ``CONNECTIONS``, or when the first is free, if that is before the phase ends. It is
    stamped (and counted as sent) when written: its send -> deliver time is the server's,
    not this client's queue. httpx queues requests past its pool in a list it walks at
    every change: at a thousand unanswered posts its event loop did nothing else.
    """

    CONNECTIONS = 6

    def __init__(self, name: str, room: int, token: str, tally: Tally) -> None:
        self.name = name
        self.room = room
        self.tally = tally
        self.sequence = 0
        self.address = ("", 0)
        self.head = b""
        self.token = token
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0
        self.due = 0
        """Posts due while every socket was busy, not yet written."""
        self.tasks: set[asyncio.Task[None]] = set()

    def open(self, host: str, port: int) -> None:
        """Send to the server at ``host:port`` from now on."""
        self.address = (host, port)
        self.head = (
            f"POST /api/v1/rooms/{self.room}/messages HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
        ).encode()

    async def close(self) -> None:
        """Close the idle connections (after ``answered``)."""
        for _, writer in self.idle:
            writer.close()

    async def at_rate(self, rate: float, until: float) -> None:
        """Fire ``rate`` posts a second without waiting for the answers, until ``until``."""
        interval = 1 / rate
        due = time.perf_counter() + random.random() * interval
        while due < until:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self._post()
            due += interval
        # Posts still waiting for a socket are dropped, not carried into the next phase
        # (they were never written, so never counted as sent).
        self.due = 0

    def _post(self) -> None:
        if not self.idle and self.opened >= self.CONNECTIONS:
            self.due += 1  # written by the first socket to be free
            return
        connection = self.idle.pop() if self.idle else None
        self.opened += connection is None
        task = asyncio.create_task(self._posting(connection))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _request(self) -> tuple[str, bytes]:
        """The next post (client id, bytes), stamped now: as it leaves, not when it was due."""
        self.sequence += 1
        self.tally.http_sent += 1
        client_id = f"{self.name}-h{self.sequence}"
        body = orjson.dumps(
            {"content": f"{client_id}|{time.perf_counter()}", "client_id": client_id}
        )
        return client_id, self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    async def _posting(
        self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None
    ) -> None:
        """Post on ``connection`` (or a new one) until no post is due, then go idle."""
        reader, writer = connection or await asyncio.open_connection(*self.address)
        while True:
            client_id, request = self._request()
            writer.write(request)
            status = int((await reader.readline()).split()[1])
            headers = {}
            while (line := await reader.readline()) != b"\r\n":
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = orjson.loads(await reader.readexactly(int(headers["content-length"])))
            self._answered(client_id, status, headers, body)
            if not self.due:
                break
            self.due -= 1
        self.idle.append((reader, writer))

    def _answered(
        self, client_id: str, status: int, headers: dict[str, str], body: dict[str, Any]
    ) -> None:
        self.tally.http_statuses[status] += 1
        if status == 201:
            self.tally.acked[client_id] = (body["room_id"], body["seq"])
        elif not (
            status == 503
            and int(headers.get("retry-after", "0")) >= 1
            and body["error"]["code"] == "busy"
        ):
            self.tally.http_bad.append(f"{status} {str(body)[:200]}")

    async def answered(self) -> None:
        """Every post fired has its answer."""
        async with asyncio.timeout(ANSWER_WITHIN):
            while self.tasks:
                await asyncio.gather(*self.tasks)
