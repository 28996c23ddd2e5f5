"""Instructions of the WebSocket fan-out alone, in one process: steady on a loaded machine.

``bench/ws_instructions.py`` counts the whole server, whose figure moves by 5-20 % with the
machine's load (how many sends share a commit, how long valgrind runs). This counts only
what the realtime layer does for one committed send: its event published to the hub and
routed to a room's connections, queued, written (to a transport that takes everything
and does nothing: no system call), counted (frames, delivery latency), and the sender's
ack queued and written. The real ``Hub``, ``Connection``, ``Delivery`` and ``Outgoing`` do
it, on uvloop as the server, one send at a time (as under ``ws_load.py``'s one message a
second per client: every send a write pass of its own; ``--batch N``: N sends a commit,
their events then their acks, as under ``ws_sends.py``). Run twice under callgrind, with 0
and with ``--sends`` sends; the difference over the sends is the figure::

    .venv/bin/python bench/fanout_instructions.py [--room-size 10] [--batch 1] [--src DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from typing import Any

import callgrind_objects

ROOM = 7


def _work(sends: int, room_size: int, batch: int = 1) -> None:
    """The measured loop (run inside callgrind)."""
    import inspect

    from cmschat.events import Published
    from cmschat.observability import instruments
    from cmschat.realtime import protocol, wire
    from cmschat.realtime.connections import Connection, Hub
    from cmschat.realtime.delivery import Delivery
    from cmschat.websocket.outgoing import Outgoing

    class Socket:
        def __init__(self) -> None:
            self.scope: dict[str, Any] = {wire.SCOPE_KEY: self.write_frame}
            self.written = 0

        def write_frame(self, data: bytes) -> bool:
            self.written += 1
            return True

    class Nothing:
        async def after(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("no gap here")

    async def run() -> None:
        hub = Hub()
        outs = []
        takes_pass = "writes" in inspect.signature(Outgoing).parameters
        for user_id in range(1, room_size + 1):
            conn = Connection(user_id=user_id, queue_size=1000)
            conn.delivered[ROOM] = 0
            delivery = Delivery(Socket(), conn, Nothing(), write_timeout=5)  # type: ignore[arg-type]
            out = Outgoing(delivery, conn, hub.writes) if takes_pass else Outgoing(delivery, conn)
            out.live = True
            outs.append(out)
            hub.add(conn, {ROOM})
        text = "x" * 80
        for first in range(1, sends + 1, batch):
            seqs = range(first, min(first + batch, sends + 1))
            for seq in seqs:
                event = Published(
                    room_id=ROOM,
                    seq=seq,
                    type="message.created",
                    payload={"message": {"id": seq, "content": text, "user_id": 1}},
                )
                envelope = protocol.envelope_of(event)
                instruments.committed([(envelope.type, envelope.frame)])
                hub.deliver(envelope)
            await asyncio.sleep(0)  # the senders' tasks wake one turn later: their acks
            for seq in seqs:
                ack = f'{{"type":"ack","client_id":"c{seq}","message":{{"id":{seq}}}}}'
                outs[seq % room_size].reply(ack)
            for _ in range(4):
                await asyncio.sleep(0)
        if any(o.conn.queue is not None for o in outs):
            raise RuntimeError("frames left unwritten")

    import uvloop  # as ``cmschat serve`` runs

    uvloop.run(run())


def _count(sends: int, args: argparse.Namespace, out_dir: str) -> int:
    arguments = ["--inside", str(sends), "--room-size", str(args.room_size)]
    return callgrind_objects.total_of_script(
        __file__,
        [*arguments, "--batch", str(args.batch)],
        out=f"{out_dir}/cg.{sends}.out",
        src=args.src,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument(
        "--batch", type=int, default=1, help="sends a commit holds (their events, then acks)"
    )
    parser.add_argument("--src", help="this src/ directory instead of the checkout's")
    parser.add_argument("--inside", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside is not None:
        _work(args.inside, args.room_size, args.batch)
        return
    with tempfile.TemporaryDirectory() as out_dir:
        base = _count(0, args, out_dir)
        total = _count(args.sends, args, out_dir)
    per_send = (total - base) / args.sends
    source = args.src or "checkout"
    print(f"room size {args.room_size}, batches of {args.batch}, {args.sends} sends, src {source}")
    print(f"instructions per send (its {args.room_size} deliveries and its ack): {per_send:,.0f}")
    print(f"instructions per frame written: {per_send / (args.room_size + 1):,.0f}")


if __name__ == "__main__":
    main()
