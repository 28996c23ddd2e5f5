"""What a ``busy`` refusal costs the server, against an accepted send (issue 16 point 3).

Two servers on one SQLite database: one as shipped, one whose admission is always full
(``full_admission.py``), so every ``message.send`` it gets is refused. Rounds alternate
(paired, so both see the same machine): ``--senders`` connections in rooms of
``--room-size`` send one message at a time each to the first server (every reply an
``ack``, every send fanned out to its room), then as many frames to the second, eight in
flight per connection (every reply a ``busy``). The figure is the server's CPU (utime +
stime from /proc, all its threads) per reply; the ratio is accepted / refused.

    .venv/bin/python bench/refusal_cost.py --rounds 5 --frames 3000
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import common

HERE = Path(__file__).resolve().parent
WINDOW = 8
"""Refused frames in flight per connection: under ``frames_in_flight`` (32)."""


async def _connect(url: str, token: str) -> Any:
    from websockets.asyncio.client import connect

    ws = await connect(url, compression=None, ping_interval=None, open_timeout=60)
    await ws.send(json.dumps({"type": "auth", "token": token, "resume": {}}))
    while json.loads(await ws.recv())["type"] != "ready":
        pass
    return ws


def _frame(room_id: int, client_id: str) -> str:
    body = {"type": "message.send", "room_id": room_id, "content": "load " + client_id}
    return json.dumps({**body, "client_id": client_id})


async def _accepted(conns: list[tuple[Any, int]], per_conn: int, tag: str) -> None:
    """One send in flight per connection until each has ``per_conn`` acks."""

    async def one(index: int, ws: Any, room_id: int) -> None:
        for n in range(per_conn):
            client_id = f"{tag}-{index}-{n}"
            await ws.send(_frame(room_id, client_id))
            while True:
                reply = json.loads(await ws.recv())
                if reply.get("client_id") == client_id:
                    if reply["type"] != "ack":
                        raise RuntimeError(f"not an ack: {reply}")
                    break

    await asyncio.gather(*(one(i, ws, room) for i, (ws, room) in enumerate(conns)))


async def _refused(conns: list[tuple[Any, int]], per_conn: int, tag: str) -> None:
    """``--window`` frames in flight per connection (under its ``frames_in_flight``, so
    the process's limit refuses them), each answer letting the next go."""

    async def one(index: int, ws: Any, room_id: int) -> None:
        frames = [_frame(room_id, f"{tag}-{index}-{n}") for n in range(per_conn)]
        sent = 0
        for frame in frames[:WINDOW]:
            await ws.send(frame)
            sent += 1
        answered = 0
        while answered < len(frames):
            reply = json.loads(await ws.recv())
            if reply["type"] != "error":
                continue  # presence of the other connections
            if reply.get("code") != "busy" or "retry_after" not in reply:
                raise RuntimeError(f"not busy: {reply}")
            answered += 1
            if sent < len(frames):
                await ws.send(frames[sent])
                sent += 1

    await asyncio.gather(*(one(i, ws, room) for i, (ws, room) in enumerate(conns)))


async def run(args: Any) -> dict[str, Any]:
    rounds: list[dict[str, float]] = []
    async with common.environment("sqlite") as (backend, servers, api):
        normal = servers[0]
        full = common.ServerProcess(
            backend, name="full", wrapper=[sys.executable, str(HERE / "full_admission.py")]
        )
        await full.start()
        try:
            users = await api.create_users(args.senders)
            size = args.room_size
            rooms = [
                await api.create_room(users[r], users[r : r + size], f"room {r}")
                for r in range(0, args.senders, size)
            ]
            room_of = [rooms[i // size] for i in range(args.senders)]
            to_normal = [
                (await _connect(normal.ws, u.token), room_of[i]) for i, u in enumerate(users)
            ]
            to_full = [(await _connect(full.ws, u.token), room_of[i]) for i, u in enumerate(users)]
            per_conn = max(1, args.frames // args.senders)
            replies = per_conn * args.senders
            await _accepted(to_normal, 5, "warm")
            await _refused(to_full, 50, "warm")
            for r in range(args.rounds):
                before = normal.cpu_seconds()
                await _accepted(to_normal, per_conn, f"a{r}")
                accepted = (normal.cpu_seconds() - before) / replies * 1e6
                before = full.cpu_seconds()
                await _refused(to_full, per_conn, f"r{r}")
                refused = (full.cpu_seconds() - before) / replies * 1e6
                rounds.append({"accepted_us": accepted, "refused_us": refused})
                common.log(
                    f"round {r}: accepted {accepted:.0f} µs, refused {refused:.1f} µs, "
                    f"ratio {accepted / refused:.1f}"
                )
            for ws, _ in to_normal + to_full:
                await ws.close()
        finally:
            full.stop()
    accepted = statistics.median(x["accepted_us"] for x in rounds)
    refused = statistics.median(x["refused_us"] for x in rounds)
    return {
        "tool": "refusal_cost",
        "source": common.source_state(),
        "senders": args.senders,
        "room_size": args.room_size,
        "replies_per_round": per_conn * args.senders,
        "rounds": rounds,
        "accepted_us_median": round(accepted, 1),
        "refused_us_median": round(refused, 1),
        "ratio": round(accepted / refused, 1),
    }


def main() -> None:
    parser = common.bench_parser(__doc__ or "")
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--room-size", type=int, default=4)
    parser.add_argument("--frames", type=int, default=3000, help="replies per phase")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
