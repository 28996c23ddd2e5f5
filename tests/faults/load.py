"""Steady chat load for the fault suite: senders that retry, readers that resume.

Senders post over HTTP at a steady pace, each message with its own ``client_id``; a
refused or failed post is retried with the same ``client_id`` (on the other instance after
a connection error), as a well-behaved client does. Readers hold a WebSocket and, whenever
it closes, reconnect (to the other instance first) resuming from the last ``seq`` they saw.
Afterwards every reader must have every stored message exactly once, in order, and the room
must hold each ``client_id`` exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.processes import Server
from tests.realtime.test_multi_instance import live
from tests.realtime.wsclient import TIMEOUT, ws_client

SEND_INTERVAL = 0.2
"""Per sender: 4 senders make 20 messages per second, as in the issue's measurement."""
RETRY_PAUSE = 0.2
CLOSED_UNANSWERED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
"""How a request on a kept-alive connection the server closed as it went out ends: closed
without an answer, or reset with the request's bytes unread (a close with unread bytes is
a reset; nginx's old workers close their idle connections at a reload). A client sends it
again at once on a new connection, as browsers do (RFC 9112, 9.3.1)."""


@dataclass
class Traffic:
    """What the senders saw."""

    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    """Every transport error by its kind, the resent ones included (for the failure report)."""
    acknowledged: set[str] = field(default_factory=set)
    first_ack_after: dict[str, float] = field(default_factory=dict)
    """Per mark name: seconds from the mark until the next acknowledged send."""
    marks: dict[str, float] = field(default_factory=dict)
    ws_acks: int = 0
    ws_refusals: Counter[str] = field(default_factory=Counter)
    """Error frames a WebSocket sender got instead of an ack, by code (retried)."""
    ws_close_codes: Counter[int | None] = field(default_factory=Counter)
    """How WebSocket senders' connections ended (None: no close frame, e.g. refused)."""
    resent: int = 0
    """Posts sent again at once because a kept-alive connection closed before any answer."""
    first_ack_of: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per sender, per mark: seconds from the mark until that sender's next ack."""

    def resumed_after(self, mark: str, senders: list[str]) -> float:
        """Seconds from ``mark`` until the last of ``senders`` had a send acknowledged."""
        return max(self.first_ack_of.get(name, {}).get(mark, -1.0) for name in senders)

    def mark(self, name: str) -> None:
        """Remember now, to time the first success after it."""
        self.marks[name] = time.monotonic()

    def acked(self, sender: str) -> None:
        now = time.monotonic()
        self.first_ack_of.setdefault(sender, {})
        for name, at in self.marks.items():
            if name not in self.first_ack_of[sender] and now >= at:
                self.first_ack_of[sender][name] = now - at
            if name not in self.first_ack_after and now >= at:
                self.first_ack_after[name] = now - at


async def sender(
    servers: list[Server],
    headers: dict[str, str],
    room: int,
    name: str,
    traffic: Traffic,
    stop: asyncio.Event,
    *,
    move_on_refusal: bool = False,
    answer_within: float = 10,
) -> None:
    """Post until ``stop``, each message retried with its client_id until acknowledged
    (``move_on_refusal``: a refused one on the next server, as a client that knows every
    node does; otherwise on the same one, as behind a load balancer). A post unanswered
    for ``answer_within`` seconds goes to the next server."""
    number, turn = 0, 0
    async with httpx.AsyncClient(timeout=answer_within) as http:
        while not stop.is_set():
            client_id = f"{name}-{number}"
            resent = False
            while True:
                server = servers[turn % len(servers)]
                try:
                    response = await http.post(
                        f"{server.base_url}/api/v1/rooms/{room}/messages",
                        headers=headers,
                        json={"content": client_id, "client_id": client_id},
                    )
                except httpx.TransportError as error:
                    traffic.errors[type(error).__name__] += 1
                    if isinstance(error, CLOSED_UNANSWERED) and not resent:
                        # Sent again at once, the client_id making a repeat harmless;
                        # twice in a row is an error.
                        traffic.resent += 1
                        resent = True
                        continue
                    traffic.transport_errors += 1
                    turn += 1
                    await asyncio.sleep(RETRY_PAUSE)  # back off before the retry
                    continue
                traffic.statuses[response.status_code] += 1
                if response.status_code in (200, 201):
                    traffic.acknowledged.add(client_id)
                    traffic.acked(name)
                    break
                assert response.status_code in (503, 507), response.text
                turn += move_on_refusal
                await asyncio.sleep(RETRY_PAUSE)  # Retry-After is seconds; we retry sooner
            number += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SEND_INTERVAL)


def close_code(error: BaseException) -> int | None:
    """The server's close code; 1006 for a connection that ended without one (a killed
    process); None when no connection was made (refused, not ready)."""
    if isinstance(error, ConnectionClosed):
        return 1006 if error.rcvd is None else error.rcvd.code
    return None


WS_REFUSALS = frozenset(
    {
        "busy",
        "unavailable",
        "database_unavailable",
        "database_busy",
        "database_conflict",
        "broker_unavailable",
    }
)
"""Error codes a WebSocket send may get under a fault; the client retries the same client_id."""


async def ws_sender(
    servers: list[Server],
    token: str,
    room: int,
    name: str,
    traffic: Traffic,
    stop: asyncio.Event,
    start_at: int = 0,
    keepalive: float = TIMEOUT,
) -> None:
    """Send over a WebSocket until ``stop``, each message resent with its client_id (on a
    new connection, to the next server, when one closes) until an ack comes. An ack that
    does not come within ``keepalive`` seconds counts as a dead connection."""
    number, turn = 0, start_at
    while not stop.is_set():
        server = servers[turn % len(servers)]
        try:
            async with ws_client(live(server), token, keepalive=keepalive) as ws:
                while not stop.is_set():
                    client_id = f"{name}-{number}"
                    await ws.send(
                        {
                            "type": "message.send",
                            "room_id": room,
                            "content": client_id,
                            "client_id": client_id,
                        }
                    )
                    answer = (
                        await ws.recv_until(
                            lambda f, c=client_id: (
                                f.get("client_id") == c and f["type"] in ("ack", "error")
                            ),
                            within=keepalive,
                        )
                    )[-1]
                    if answer["type"] == "error":
                        assert answer["code"] in WS_REFUSALS, answer
                        traffic.ws_refusals[answer["code"]] += 1
                        await asyncio.sleep(RETRY_PAUSE)  # retry_after is seconds; sooner
                        continue
                    traffic.acknowledged.add(client_id)
                    traffic.ws_acks += 1
                    traffic.acked(name)
                    number += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), SEND_INTERVAL)
        except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError) as closed:
            traffic.ws_close_codes[close_code(closed)] += 1
            turn += 1
            await asyncio.sleep(RETRY_PAUSE)  # back off before reconnecting


@dataclass
class Reader:
    """A member's resuming WebSocket client and everything it received."""

    token: str
    room: int
    seqs: list[int] = field(default_factory=list)
    contents: list[str] = field(default_factory=list)
    reconnects: int = 0
    close_codes: Counter[int | None] = field(default_factory=Counter)
    resynced: int = 0
    arrived: list[float] = field(default_factory=list)
    """When each seq in ``seqs`` arrived (``time.monotonic``)."""
    keepalive: float = 20
    """Seconds between pings, and the longest wait for a pong before the link is dead."""
    connected: list[tuple[float, str]] = field(default_factory=list)
    """When each connection was ready, and to which server (``time.monotonic``, URL)."""

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    async def run(self, servers: list[Server], start_at: int, until: asyncio.Event) -> None:
        """Read (reconnecting, resuming) until ``until`` is set and nothing more is due."""
        turn = start_at
        while not until.is_set():
            server = servers[turn % len(servers)]
            try:
                async with ws_client(
                    live(server), self.token, resume=self._resume(), keepalive=self.keepalive
                ) as ws:
                    self.connected.append((time.monotonic(), server.base_url))
                    await self._read(ws.connection, until)
            except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError, AssertionError) as e:
                self.close_codes[close_code(e)] += 1
            if until.is_set():
                return
            self.reconnects += 1
            turn += 1
            await asyncio.sleep(RETRY_PAUSE)  # back off before reconnecting

    def _resume(self) -> dict[int, int]:
        return {self.room: self.last_seq}  # 0 at first: from the room's first message

    async def _read(self, connection: Any, until: asyncio.Event) -> None:
        import json

        while not until.is_set():
            with contextlib.suppress(TimeoutError):
                raw = await asyncio.wait_for(connection.recv(), timeout=0.5)
                frame = json.loads(raw)
                if frame.get("room_id") != self.room:
                    continue
                if frame["type"] == "resync_required":
                    self.resynced += 1
                elif "seq" in frame:  # every room event is sequenced, not only messages
                    self.seqs.append(frame["seq"])
                    self.arrived.append(time.monotonic())
                    if frame["type"] == "message.created":
                        self.contents.append(frame["message"]["content"])


async def wait_until_caught_up(readers: list[Reader], last_seq: int, within: float) -> float:
    """Seconds until every reader has seen ``last_seq``."""
    started = time.monotonic()
    while any(reader.last_seq < last_seq for reader in readers):
        if time.monotonic() - started > within:
            behind = {reader.token[:6]: reader.last_seq for reader in readers}
            raise AssertionError(f"readers not caught up to {last_seq} in {within} s: {behind}")
        await asyncio.sleep(0.1)  # the readers' own tasks fill in what arrives
    return time.monotonic() - started


def longest_silence(readers: list[Reader], start: float, end: float) -> float:
    """The longest time any reader went without a new room event between ``start`` and
    ``end``: how long a fault held delivery up, under steady load."""
    longest = 0.0
    for reader in readers:
        times = [start, *(t for t in reader.arrived if start < t < end), end]
        longest = max(longest, *(later - earlier for earlier, later in itertools.pairwise(times)))
    return longest


def check_exactly_once_in_order(reader: Reader, first_seq: int, last_seq: int) -> None:
    """Every seq from ``first_seq`` to ``last_seq`` once, in order."""
    assert reader.resynced == 0
    seen = [seq for seq in reader.seqs if seq >= first_seq]
    duplicates = [seq for seq, n in Counter(seen).items() if n > 1]
    assert not duplicates, f"duplicated: {duplicates[:10]}"
    assert seen == sorted(seen), "out of order"
    missing = sorted(set(range(first_seq, last_seq + 1)) - set(seen))
    assert not missing, f"lost: {missing[:10]} of {last_seq - first_seq + 1}"
