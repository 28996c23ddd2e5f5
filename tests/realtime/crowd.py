"""Load for the overload test: WebSocket members, in one event loop (``load_worker.py``).

Every send carries its ``client_id`` and the ``perf_counter`` at which it left (the content
is ``client_id|stamp``), so one clock times send -> deliver. Each member records what its
socket saw: acks, ``busy`` refusals, any other error, every ``message.created`` of its room
(by ``seq``), the pong of each protocol-level keep-alive ping it sent, and whether the
server closed it. HTTP senders record every status and check the refusals' form.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

PING_EVERY = 1.0
"""Each member pings the server this often (protocol-level ping, answered by pong)."""
PONG_WITHIN = 10.0
"""A ping not answered within this is counted as unanswered."""
ANSWER_WITHIN = 60.0
"""Every send must be answered (ack, busy, or HTTP status) within this."""


@dataclass
class Tally:
    """What every client saw (one event loop: no locks)."""

    ws_sent: int = 0
    ws_busy: int = 0
    ws_bad_busy: list[dict[str, Any]] = field(default_factory=list)
    """``busy`` frames without ``retry_after`` >= 1 or without the send's ``client_id``."""
    ws_other_errors: list[dict[str, Any]] = field(default_factory=list)
    http_sent: int = 0
    http_statuses: Counter[int] = field(default_factory=Counter)
    http_bad: list[str] = field(default_factory=list)
    """Answers other than 201, or 503s without ``Retry-After`` and code ``busy``."""
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)
    """client_id -> (room, seq) of every acknowledged send, WebSocket or HTTP."""
    deliveries: list[tuple[float, float]] = field(default_factory=list)
    """(sent at, send -> deliver seconds) of every message.created to every member."""
    max_send_lag: float = 0.0
    """How far behind its schedule a sender fell (the load generator's own limit)."""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at each delivery (for waiting on the last ones)."""


class Member:
    """One signed-in WebSocket client in one room."""

    def __init__(self, name: str, room: int, first_seq: int, connection: ClientConnection) -> None:
        self.name = name
        self.room = room
        self.first_seq = first_seq
        """The room's last seq at ``ready``: every later one must arrive, once, in order."""
        self.connection = connection
        self.tally = Tally()
        self.sequence = 0
        self.seqs: list[int] = []
        self.waiting: dict[str, asyncio.Future[str]] = {}
        self.pongs: list[tuple[float, float]] = []
        """(ping sent at, pong delay) of every answered ping."""
        self.unanswered_pings = 0
        self.closed_by_server: int | str | None = None
        self.leaving = False
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def last_seq(self) -> int:
        """The newest seq of its room this member has received."""
        return self.seqs[-1] if self.seqs else self.first_seq

    def start(self, tally: Tally) -> None:
        """Read the socket and ping the server from now on."""
        self.tally = tally
        self.tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._keep_alive())]

    async def stop(self) -> None:
        """Stop pinging and reading (before the client closes the socket)."""
        self.leaving = True
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def send(self) -> asyncio.Future[str]:
        """Send one message; the future resolves to ``ack``, ``busy`` or ``error``."""
        self.sequence += 1
        client_id = f"{self.name}-{self.sequence}"
        answer = asyncio.get_running_loop().create_future()
        self.waiting[client_id] = answer
        frame = {
            "type": "message.send",
            "room_id": self.room,
            "content": f"{client_id}|{time.perf_counter()}",
            "client_id": client_id,
        }
        self.tally.ws_sent += 1
        await self.connection.send(orjson.dumps(frame).decode())
        return answer

    async def as_fast_as_acks(self, until: float) -> None:
        """One send in flight at a time: the next as soon as the last is answered."""
        with contextlib.suppress(ConnectionClosed):  # recorded by the reader
            while time.perf_counter() < until:
                async with asyncio.timeout(ANSWER_WITHIN):
                    await (await self.send())

    async def at_rate(self, rate: float, until: float) -> None:
        """Open loop: ``rate`` sends a second whatever the answers, until ``until``."""
        interval = 1 / rate
        due = time.perf_counter() + random.random() * interval
        while due < until and self.closed_by_server is None:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.tally.max_send_lag = max(self.tally.max_send_lag, -delay)
            try:
                await self.send()
            except ConnectionClosed:
                return  # recorded by the reader
            due += interval

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.connection:
                now = time.perf_counter()
                frame: dict[str, Any] = orjson.loads(raw)
                kind = frame["type"]
                if kind == "message.created":
                    self._delivered(frame, now)
                elif kind == "ack":
                    message = frame["message"]
                    self.tally.acked[frame["client_id"]] = (message["room_id"], message["seq"])
                    self._answer(frame["client_id"], "ack")
                elif kind == "error":
                    self._refused(frame)
        if not self.leaving:
            self.closed_by_server = self.connection.close_code or "dropped"
            for answer in self.waiting.values():
                answer.cancel()  # never answered: the socket is gone

    def _delivered(self, frame: dict[str, Any], now: float) -> None:
        if frame["room_id"] != self.room:
            self.tally.ws_other_errors.append(frame)  # nothing of another room may come
            return
        self.seqs.append(frame["seq"])
        _client_id, stamp = frame["message"]["content"].split("|")
        self.tally.deliveries.append((float(stamp), now - float(stamp)))
        self.tally.arrived.set()

    def _refused(self, frame: dict[str, Any]) -> None:
        client_id = frame.get("client_id")
        if frame.get("code") != "busy":
            self.tally.ws_other_errors.append(frame)
            self._answer(client_id, "error")
            return
        self.tally.ws_busy += 1
        if client_id not in self.waiting or int(frame.get("retry_after", 0)) < 1:
            self.tally.ws_bad_busy.append(frame)
        self._answer(client_id, "busy")

    def _answer(self, client_id: str | None, outcome: str) -> None:
        answer = self.waiting.pop(client_id or "", None)
        if answer is not None and not answer.done():
            answer.set_result(outcome)

    async def _keep_alive(self) -> None:
        while not self.leaving:
            sent = time.perf_counter()
            try:
                pong = await self.connection.ping()
                async with asyncio.timeout(PONG_WITHIN):
                    await pong
            except TimeoutError:
                self.unanswered_pings += 1
            except ConnectionClosed:
                return
            else:
                self.pongs.append((sent, time.perf_counter() - sent))
            await asyncio.sleep(max(0.0, sent + PING_EVERY - time.perf_counter()))


async def all_answered(members: list[Member]) -> None:
    """Every WebSocket send has its answer (ack or error)."""
    async with asyncio.timeout(ANSWER_WITHIN):
        for member in members:
            await asyncio.gather(*member.waiting.values(), return_exceptions=True)


async def all_delivered(members: list[Member], last_seq: dict[int, int], within: float) -> None:
    """Every member has received its room's messages up to ``last_seq`` (or time is up)."""
    arrived = members[0].tally.arrived
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while any(m.last_seq < last_seq.get(m.room, m.first_seq) for m in members):
                arrived.clear()
                await arrived.wait()


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile of ``values`` (nearest rank), or NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * len(ordered)))]
