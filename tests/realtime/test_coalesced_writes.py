"""What is queued for one socket leaves in as few writes as order allows, in order.

A connection's sender gathers the frames it can write straight to the transport (events
and acks) and writes them in one piece: one system call for a batch's worth of frames.
Order is kept whatever comes between (a gap repaired from the stored events, a socket
that stops taking writes and sends the ASGI way), the frames are counted, and a client
that takes nothing is still closed as slow (1013).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from cmschat.events import Published
from cmschat.observability import instruments
from cmschat.realtime import protocol, wire
from cmschat.realtime.broker import Envelope
from cmschat.realtime.connections import CLOSE_SLOW, Connection
from cmschat.realtime.delivery import Delivery
from tests.observability.metrics_support import value

ROOM = 5


def _frames_in(data: bytes) -> list[str]:
    """The texts of the unmasked text frames in ``data``, in order."""
    texts, at = [], 0
    while at < len(data):
        assert data[at] == 0x81
        length, at = data[at + 1], at + 2
        if length == 126:
            length, at = int.from_bytes(data[at : at + 2], "big"), at + 2
        elif length == 127:
            length, at = int.from_bytes(data[at : at + 8], "big"), at + 8
        texts.append(data[at : at + length].decode())
        at += length
    return texts


class FakeSocket:
    """A socket whose transport takes ``takes`` direct writes, then none; the ASGI path
    completes at once, or never (``stalled``)."""

    def __init__(self, takes: int = 1_000, *, stalled: bool = False) -> None:
        self.takes = takes
        self.stalled = stalled
        self.writes: list[list[str]] = []
        """Each direct write, as the frames it carried."""
        self.asgi: list[str] = []
        self.order: list[str] = []
        self.scope: dict[str, Any] = {wire.SCOPE_KEY: self.write_frame}

    def write_frame(self, data: bytes) -> bool:
        if self.takes <= 0:
            return False
        self.takes -= 1
        texts = _frames_in(data)
        self.writes.append(texts)
        self.order += texts
        return True

    async def send_text(self, text: str) -> None:
        if self.stalled:
            await asyncio.Event().wait()
        self.asgi.append(text)
        self.order.append(text)


class Stored:
    """The room's stored events 1..100."""

    def __init__(self) -> None:
        self.reads = 0

    async def after(
        self, room_id: int, *, after: int, until: int | None, limit: int
    ) -> tuple[list[Published], int | None]:
        self.reads += 1
        last = until if until is not None else 100
        return [_event(seq) for seq in range(after + 1, min(last, after + limit) + 1)], None


def _event(seq: int) -> Published:
    return Published(room_id=ROOM, seq=seq, type="message.created", payload={"n": seq})


def _envelope(seq: int) -> Envelope:
    return protocol.envelope_of(_event(seq))


def _ack(n: int) -> Envelope:
    return protocol.direct(json.dumps({"type": "ack", "client_id": f"c{n}"}))


def _names(texts: list[str]) -> list[str]:
    names = []
    for text in texts:
        frame = json.loads(text)
        names.append(frame["client_id"] if frame["type"] == "ack" else f"e{frame['seq']}")
    return names


async def _send_all(delivery: Delivery) -> None:
    """As the endpoint does: at once when nothing waits, else in the sender's task."""
    if not delivery.drain_now():
        await delivery.drain()


def _delivery(socket: FakeSocket, *, timeout: float = 5.0) -> tuple[Delivery, Connection]:
    conn = Connection(user_id=1, queue_size=100)
    conn.delivered[ROOM] = 0
    return Delivery(socket, conn, Stored(), write_timeout=timeout), conn  # type: ignore[arg-type]


async def test_frames_queued_together_leave_in_one_write_counted_each() -> None:
    socket = FakeSocket()
    delivery, conn = _delivery(socket)
    envelopes = [_ack(1), _envelope(1), _envelope(2), _ack(2), _envelope(3)]
    instruments.committed([("message.created", e.frame) for e in envelopes if e.seq])
    frames_before = value("cmschat_websocket_frames_sent_total")
    timed_before = value("cmschat_delivery_latency_seconds_count")
    for envelope in envelopes:
        conn.offer(envelope)
    assert delivery.drain_now(), "nothing in it waits: written without a task"
    assert conn.queue is None
    assert socket.writes == [[e.frame for e in envelopes]]
    assert value("cmschat_websocket_frames_sent_total") == frames_before + 5
    assert value("cmschat_delivery_latency_seconds_count") == timed_before + 3


async def test_a_gap_repaired_from_the_stored_events_keeps_the_order() -> None:
    socket = FakeSocket()
    delivery, conn = _delivery(socket)
    for envelope in [_ack(1), _envelope(1), _envelope(2), _ack(2), _envelope(5), _envelope(6)]:
        conn.offer(envelope)
    assert not delivery.drain_now(), "a gap is filled from the stored events, which waits"
    assert socket.writes == []
    await delivery.drain()
    assert _names(socket.order) == ["c1", "e1", "e2", "c2", "e3", "e4", "e5", "e6"]
    # What was gathered went out before the stored events were read, the rest after.
    assert [_names(w) for w in socket.writes] == [
        ["c1", "e1", "e2", "c2"],
        ["e3", "e4", "e5", "e6"],
    ]
    assert conn.delivered[ROOM] == 6


async def test_a_socket_that_stops_taking_writes_gets_the_rest_in_order_the_asgi_way() -> None:
    socket = FakeSocket(takes=1)
    delivery, conn = _delivery(socket)
    for envelope in [_ack(1), _envelope(1), _envelope(4), _ack(2), _envelope(5)]:
        conn.offer(envelope)
    await _send_all(delivery)
    assert _names(socket.order) == ["c1", "e1", "e2", "e3", "e4", "c2", "e5"]
    assert _names(socket.asgi) == ["e2", "e3", "e4", "c2", "e5"]


async def test_a_catch_up_larger_than_a_write_leaves_in_pieces_in_order() -> None:
    socket = FakeSocket()
    delivery, conn = _delivery(socket)
    big = "x" * 20_000
    for n in range(1, 9):
        conn.offer(protocol.direct(json.dumps({"type": "ack", "client_id": f"c{n}", "pad": big})))
    await _send_all(delivery)
    assert _names(socket.order) == [f"c{n}" for n in range(1, 9)]
    assert 1 < len(socket.writes) < 8


async def test_events_already_sent_or_of_other_rooms_are_skipped_without_waiting() -> None:
    socket = FakeSocket()
    delivery, conn = _delivery(socket)
    conn.delivered[ROOM] = 2
    other = protocol.envelope_of(
        Published(room_id=ROOM + 1, seq=1, type="message.created", payload={})
    )
    for envelope in [_envelope(1), other, _envelope(2), _envelope(3), _ack(1)]:
        conn.offer(envelope)
    assert delivery.drain_now()
    assert [_names(w) for w in socket.writes] == [["e3", "c1"]]


async def test_a_client_that_takes_nothing_is_closed_as_slow() -> None:
    socket = FakeSocket(takes=0, stalled=True)
    delivery, conn = _delivery(socket, timeout=0.05)
    conn.offer(_envelope(1))
    conn.offer(_ack(1))
    await asyncio.wait_for(_send_all(delivery), timeout=5)
    assert conn.close_requested
    assert conn.close_code == CLOSE_SLOW
    assert socket.order == []


class BrokenSocket(FakeSocket):
    """A transport that fails under the direct write (torn down under the sender)."""

    def write_frame(self, data: bytes) -> bool:
        raise RuntimeError("the transport is gone")


async def test_a_write_that_fails_outside_any_task_closes_the_connection() -> None:
    """The write of what is queued runs as a loop callback when nothing waits: an error
    there must end the connection (1001), as it did in the sender's task, not leave the
    connection marked as sending, with nothing written again and the client never told."""
    from cmschat.websocket.outgoing import CLOSE_GOING_AWAY, Outgoing

    delivery, conn = _delivery(BrokenSocket())
    closed = asyncio.Event()
    conn.on_close = closed.set
    outgoing = Outgoing(delivery, conn)
    outgoing.live = True
    conn.offer(_envelope(1))
    await asyncio.wait_for(closed.wait(), timeout=5)
    assert conn.close_code == CLOSE_GOING_AWAY
    assert not outgoing.sending
