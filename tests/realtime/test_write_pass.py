"""A room's fan-out is written in one pass over its sockets, and counted once for all.

Every connection with frames queued is written in the same loop callback (the hub's
``WritePass``), in order per socket; the frames are counted and the event's delivery
latency observed for each socket, with one clock read for the pass rather than one per
write (realtime/fanout.py).
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from cmschat.events import Published
from cmschat.observability import instruments
from cmschat.realtime import protocol
from cmschat.realtime.broker import Envelope
from cmschat.realtime.connections import Connection, Hub
from cmschat.realtime.delivery import Delivery
from cmschat.websocket.outgoing import Outgoing
from tests.observability.metrics_support import value
from tests.realtime.test_coalesced_writes import ROOM, FakeSocket, Stored


def _room(hub: Hub, size: int) -> list[tuple[FakeSocket, Outgoing]]:
    members = []
    for user_id in range(1, size + 1):
        socket = FakeSocket()
        conn = Connection(user_id=user_id, queue_size=100)
        conn.delivered[ROOM] = 0
        delivery = Delivery(socket, conn, Stored(), write_timeout=5)  # type: ignore[arg-type]
        out = Outgoing(delivery, conn, hub.writes)
        out.live = True
        hub.add(conn, {ROOM})
        members.append((socket, out))
    return members


def _event(seq: int) -> Published:
    return Published(room_id=ROOM, seq=seq, type="message.created", payload={"n": seq})


async def _turns(n: int = 4) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_rooms_fan_out_is_one_pass_counted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = Hub()
    members = _room(hub, 6)
    envelopes = [protocol.envelope_of(_event(1)), protocol.envelope_of(_event(2))]
    instruments.committed([(e.type, e.frame) for e in envelopes])
    frames_before = value("cmschat_websocket_frames_sent_total")
    timed_before = value("cmschat_delivery_latency_seconds_count")
    reads = []
    monkeypatch.setattr(
        instruments,
        "time",
        SimpleNamespace(perf_counter=lambda: reads.append(1) or time.perf_counter()),
    )
    for envelope in envelopes:
        hub.deliver(envelope)
    members[0][1].reply('{"type":"ack","client_id":"c1"}')  # the sender's, a turn later
    await _turns()
    for n, (socket, out) in enumerate(members):
        expected = [e.frame for e in envelopes] + (
            ['{"type":"ack","client_id":"c1"}'] if n == 0 else []
        )
        assert socket.writes == [expected], "each socket's frames in one write, in order"
        assert not out.sending
    assert value("cmschat_websocket_frames_sent_total") == frames_before + 13
    assert value("cmschat_delivery_latency_seconds_count") == timed_before + 12
    assert len(reads) == 1, "one clock read for the whole pass"


async def test_frames_queued_during_a_pass_go_in_the_next_one() -> None:
    hub = Hub()
    (socket, out), (other, _) = _room(hub, 2)
    hub.deliver(protocol.envelope_of(_event(1)))
    await _turns()
    hub.deliver(protocol.envelope_of(_event(2)))
    await _turns()
    assert [len(w) for w in socket.writes] == [1, 1]
    assert [len(w) for w in other.writes] == [1, 1]
    assert not out.sending


async def test_a_lone_frame_is_written_alone_only_when_it_is_next() -> None:
    """The one-frame queue of a lone send's fan-out is written at once when it is the
    room's next event (or a direct frame); anything else goes the general way."""
    from tests.realtime.test_coalesced_writes import _delivery, _envelope

    socket = FakeSocket()
    delivery, conn = _delivery(socket)
    conn.offer(_envelope(1))
    written: list[str] = []
    assert delivery.drain_now(written)
    assert written == [_envelope(1).frame] == [t for w in socket.writes for t in w]
    assert conn.delivered[ROOM] == 1 and conn.queue is None
    conn.offer(_envelope(1))  # already sent: dropped, not written
    assert delivery.drain_now(written)
    assert len(socket.writes) == 1 and conn.queue is None
    conn.offer(_envelope(4))  # a gap: filled from the stored events first
    assert not delivery.drain_now(written)
    await delivery.drain()
    assert [t for w in socket.writes for t in w][1:] == [_envelope(n).frame for n in (2, 3, 4)]
    assert conn.delivered[ROOM] == 4


async def test_a_lone_frame_to_a_full_socket_goes_the_asgi_way() -> None:
    from tests.realtime.test_coalesced_writes import _delivery, _envelope

    socket = FakeSocket(takes=0)
    delivery, conn = _delivery(socket)
    conn.offer(_envelope(1))
    assert not delivery.drain_now([])
    await delivery.drain()
    assert socket.asgi == [_envelope(1).frame]
    assert conn.delivered[ROOM] == 1


async def test_a_batchs_next_events_and_acks_skip_the_general_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A queue of a commit's events and acks (each event the room's next) is written in
    one piece without the general case's per-frame steps; a frame the client already has,
    a member leaving and a gap still take them."""
    from tests.realtime.test_coalesced_writes import _delivery, _envelope

    placed: list[int | None] = []
    general = Delivery._place
    monkeypatch.setattr(
        Delivery, "_place", lambda self, e: placed.append(e.seq) or general(self, e)
    )
    socket = FakeSocket()
    delivery, conn = _delivery(socket)
    ack = protocol.direct('{"type":"ack","client_id":"c1"}')
    for envelope in (_envelope(1), _envelope(2), ack, _envelope(3)):
        conn.offer(envelope)
    written: list[str] = []
    assert delivery.drain_now(written)
    frames = [_envelope(1).frame, _envelope(2).frame, ack.frame, _envelope(3).frame]
    assert socket.writes == [frames] and written == frames
    assert placed == [], "the usual frames went the short way"
    assert conn.delivered[ROOM] == 3 and conn.queue is None
    left = Envelope(room_id=ROOM, seq=4, type="member.left", frame="{}", user_id=conn.user_id)
    for envelope in (_envelope(2), _envelope(3), left):  # already sent, then this user leaves
        conn.offer(envelope)
    assert delivery.drain_now(written)
    assert placed == [2, 3, 4] and socket.writes[1:] == [["{}"]]
    assert ROOM not in conn.delivered, "the member who left follows the room no more"


def test_a_rooms_event_is_offered_to_its_followers_without_a_call_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hub queues a room's event for each follower in one loop (``offer_each``), not
    through ``Connection.offer`` per follower, and treats each as ``offer`` does: a closing
    or ended connection gets nothing, a full queue closes its connection (1013)."""
    hub = Hub()
    conns = {n: Connection(user_id=n, queue_size=2) for n in range(1, 6)}
    queued: list[int] = []
    for user_id, conn in conns.items():
        conn.on_queued = lambda user_id=user_id: queued.append(user_id)  # type: ignore[misc]
        hub.add(conn, {ROOM})
    earlier = protocol.envelope_of(_event(1))
    conns[2].end(4001, "signed out")
    conns[3].close(1000)
    conns[4].offer(earlier)
    conns[4].offer(earlier)  # full
    conns[5].offer(earlier)
    queued.clear()

    def one_call_each(self: Connection, envelope: Envelope) -> None:
        raise AssertionError("a call of Connection.offer per follower")

    monkeypatch.setattr(Connection, "offer", one_call_each)
    envelope = protocol.envelope_of(_event(2))
    hub.deliver(envelope)

    assert sorted(queued) == [1, 5]
    assert list(conns[1].queue or ()) == [envelope]
    assert list(conns[5].queue or ()) == [earlier, envelope]
    assert conns[2].queue is None and conns[3].queue is None
    assert (conns[4].overflowed, conns[4].close_requested, conns[4].close_code) == (
        True,
        True,
        1013,
    )
    assert list(conns[4].queue or ()) == [earlier, earlier]
