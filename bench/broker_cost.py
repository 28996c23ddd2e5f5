"""CPU per event of the Redis broker between instances: publish, Redis, receive, decode.

Two ``RedisBroker``s (the app's, from whatever ``src/`` is imported: ``PYTHONPATH`` picks a
"before" copy) in this one process on a fresh channel of the local Redis: one publishes
``--events`` room events in groups of ``--commit`` (as a group commit hands them over), the
other delivers them; counted from the first publish until the last event is delivered
there, checked complete and in order. ``--parser python`` makes redis-py parse replies in
Python, as it does when hiredis is not installed.

Run::

    .venv/bin/python bench/broker_cost.py [--events 50000] [--commit 100] [--parser python]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import common
import orjson
from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser
from redis.asyncio import Redis
from redis.utils import HIREDIS_AVAILABLE

from cmschat.realtime.broker import Envelope, RedisBroker

CONTENT = "a message of about eighty characters, as the other benchmarks send them ok."


def events(count: int) -> list[Envelope]:
    """``count`` message events over ten rooms, each frame ~300 bytes like a real one."""
    made = []
    for n in range(count):
        room, seq = n % 10 + 1, n // 10 + 1
        frame = {
            "type": "message.created",
            "room_id": room,
            "seq": seq,
            "message": {"id": n + 1, "author_id": 3, "content": CONTENT, "html": CONTENT},
        }
        made.append(
            Envelope(room, seq, "message.created", orjson.dumps(frame).decode(), user_id=None)
        )
    return made


async def publish_calls(redis: Redis) -> int:
    commands = await redis.info("commandstats")
    return int(commands.get("cmdstat_publish", {}).get("calls", 0))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    parser: Any = {"python": _AsyncRESP2Parser, "hiredis": _AsyncHiredisParser}.get(args.parser)
    options = {"parser_class": parser} if parser is not None else {}
    sender, receiver = (Redis.from_url(args.redis_url, **options) for _ in range(2))
    channel = f"bench-{secrets.token_hex(4)}:events"
    sent = events(args.events)
    heard: list[Envelope] = []
    done = asyncio.Event()

    def deliver(envelope: Envelope) -> None:
        heard.append(envelope)
        if len(heard) == len(sent):
            done.set()

    one = RedisBroker(sender, channel=channel, subscriber=sender)
    two = RedisBroker(receiver, channel=channel, subscriber=receiver)  # the parser measured
    await one.start(lambda _envelope: None, on_reconnect=lambda: None)
    await two.start(deliver, on_reconnect=lambda: None)
    try:
        calls = await publish_calls(sender)
        cpu, wall = time.process_time(), time.perf_counter()
        for at in range(0, len(sent), args.commit):
            await one.publish(sent[at : at + args.commit])
            await asyncio.sleep(0)  # the next commit comes after a turn of the loop
        await asyncio.wait_for(done.wait(), timeout=120)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        calls = await publish_calls(sender) - calls
    finally:
        for broker in (one, two):
            await broker.close()
        for client in (sender, receiver):
            await client.aclose()
    in_order = [(e.room_id, e.seq) for e in heard] == [(e.room_id, e.seq) for e in sent]
    return {
        "source": str(Path(sys.modules[RedisBroker.__module__].__file__ or "?").parents[2]),
        "parser": args.parser
        if parser is not None
        else ("hiredis" if HIREDIS_AVAILABLE else "python"),
        "events": len(sent),
        "events_per_commit": args.commit,
        "delivered_in_order": in_order and len(heard) == len(sent),
        "publish_calls": calls,
        "cpu_us_per_event": cpu / len(sent) * 1e6,
        "wall_s": wall,
    }


def main() -> None:
    parser = common.bench_parser(__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--commit", type=int, default=100, help="events a publish hands over")
    parser.add_argument("--parser", choices=("default", "python", "hiredis"), default="default")
    parser.add_argument("--redis-url", default=common.REDIS_URL)
    common.add_output_options(parser, keep=False)
    args = parser.parse_args()
    if args.events < 1 or args.commit < 1:
        parser.error("--events and --commit must be positive")
    common.use_uvloop()
    result = asyncio.run(run(args))
    common.report(result, None)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if not result["delivered_in_order"]:
        sys.exit(1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
