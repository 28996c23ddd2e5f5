"""Instructions to read a client's text frames, in one process: steady on a loaded machine.

``ws_instructions.py`` counts the whole server, whose figure moves with the machine's load.
This counts only the server's reading of client frames: the protocol ``cmschat serve``
runs (``AbortingWSProtocol``) past its handshake, given ``--frames`` masked text frames
(a ``message.send`` of ``--size`` bytes of content each), ``--per-read`` of them a
``data_received``, each read's messages then taken by the app as uvicorn's ASGI receive
does (which pauses and resumes reading), on uvloop, to a transport that does nothing. Run
twice under callgrind, the frames built both times and read the second time only; the
difference over the frames is the figure::

    .venv/bin/python bench/client_frames_instructions.py [--per-read 1] [--size 80] [--src DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from typing import Any

import callgrind_objects


def _frame(payload: bytes, mask: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        length = bytes([0x80 | size])
    elif size <= 0xFFFF:
        length = bytes([0x80 | 126]) + size.to_bytes(2)
    else:
        length = bytes([0x80 | 127]) + size.to_bytes(8)
    head = bytes([0x81]) + length
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _work(frames: int, per_read: int, size: int, read: bool) -> None:
    """The measured loop (run inside callgrind)."""
    import uvicorn
    from uvicorn.server import ServerState
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import Request

    from cmschat.realtime.transport import AbortingWSProtocol

    class Transport(asyncio.Transport):
        def write(self, data: Any) -> None:
            pass

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

        def is_closing(self) -> bool:
            return False

        def close(self) -> None:
            pass

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name)

    reads = []
    for first in range(0, frames, per_read):
        chunk = b""
        for i in range(first, min(first + per_read, frames)):
            text = json.dumps(
                {"type": "message.send", "room_id": 7, "content": "x" * size, "client_id": f"c{i}"}
            )
            chunk += _frame(text.encode(), os.urandom(4))
        reads.append(chunk)

    async def run() -> None:
        accepted = asyncio.Event()
        release = asyncio.Event()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            accepted.set()
            await release.wait()

        config = uvicorn.Config(
            app, log_config=None, lifespan="off", ws_per_message_deflate=False, ws_max_size=1 << 20
        )
        config.load()
        protocol = AbortingWSProtocol(config=config, server_state=ServerState(), app_state={})
        protocol.connection_made(Transport())
        client = WSConnection(ConnectionType.CLIENT)
        protocol.data_received(client.send(Request(host="bench", target="/api/v1/ws")))
        await accepted.wait()
        taken = 0
        for data in reads if read else ():
            protocol.data_received(data)
            while not protocol.queue.empty():
                await protocol.receive()
                taken += 1
        if read and taken != frames:
            raise RuntimeError(f"{taken} messages of {frames}")
        release.set()
        await asyncio.gather(*protocol.tasks)

    import uvloop  # as ``cmschat serve`` runs

    uvloop.run(run())


def _count(read: bool, args: argparse.Namespace, out_dir: str) -> int:
    arguments = ["--inside", str(args.frames), *(["--read"] if read else [])]
    return callgrind_objects.total_of_script(
        __file__,
        [*arguments, "--per-read", str(args.per_read), "--size", str(args.size)],
        out=f"{out_dir}/cg.{read}.out",
        src=args.src,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--per-read", type=int, default=1, help="frames a data_received")
    parser.add_argument("--size", type=int, default=80, help="characters of content a message")
    parser.add_argument("--src", help="this src/ directory instead of the checkout's")
    parser.add_argument("--inside", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--read", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside is not None:
        _work(args.inside, args.per_read, args.size, args.read)
        return
    with tempfile.TemporaryDirectory() as out_dir:
        base = _count(False, args, out_dir)
        total = _count(True, args, out_dir)
    print(
        f"{args.frames} frames, {args.per_read} a read, content {args.size}, "
        f"src {args.src or 'checkout'}"
    )
    print(f"instructions per frame read: {(total - base) / args.frames:,.0f}")


if __name__ == "__main__":
    main()
