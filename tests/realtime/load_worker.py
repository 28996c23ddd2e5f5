"""One process of the overload test's load generator: ``python -m tests.realtime.load_worker``.

A Python event loop that must read every ack, ``busy`` and delivery of a hundred members
at five times a server's capacity cannot do it beside the server on two cores (the
generator fell behind, stopped answering uvicorn's pings, and uvicorn closed its sockets).
So the test (``test_overload.py``) splits its members over a few of these processes, pinned
to the cores the server does not use. Each worker owns a share of the members and one HTTP
sender; the test drives them phase by phase with one JSON line each on stdin, and each
answers one JSON line on stdout. ``time.perf_counter`` is the system's monotonic clock, so
a send stamped in one worker is timed when another worker's member receives it.

Commands (``cmd``): ``connect`` (members, senders, URLs) -> the members' first seqs;
``fast`` (first ``count`` members keep one send in flight each until ``until``); ``rate``
(open loop: ``ws_rate`` per member, ``http_rate`` per sender, until ``until``);
``answered`` -> every acknowledged send; ``delivered`` (each room's last acked seq) ->
everything the members saw, then the worker leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from typing import Any

import orjson

from tests.realtime.crowd import Member, Tally, all_answered, all_delivered
from tests.realtime.generator import pin
from tests.realtime.http_sender import HttpSender
from tests.realtime.wsclient import LiveServer, ws_client

DELIVERED_WITHIN = 30.0


def reply(**answer: Any) -> None:
    """One JSON line to the test, with this process's CPU seconds so far."""
    sys.stdout.buffer.write(orjson.dumps({**answer, "cpu": time.process_time()}) + b"\n")
    sys.stdout.buffer.flush()


async def command() -> dict[str, Any]:
    """The test's next command (stdin is read in a thread: the loop keeps serving)."""
    line = await asyncio.to_thread(sys.stdin.buffer.readline)
    if not line:
        raise SystemExit("the test went away")
    parsed: dict[str, Any] = orjson.loads(line)
    return parsed


async def work() -> None:
    """Connect the members given, then follow the test's commands until ``delivered``."""
    setup = await command()
    tally = Tally()
    async with contextlib.AsyncExitStack() as stack:
        live = LiveServer(app=None, host=setup["http"].removeprefix("http://"))  # type: ignore[arg-type]
        members = []
        for name, token, room in setup["members"]:
            # max_queue=None: however far behind the reader is, the socket keeps answering
            # the server's pings.
            client = await stack.enter_async_context(ws_client(live, token, max_queue=None))
            members.append(Member(name, room, client.ready["rooms"][str(room)], client.connection))
        for member in members:
            member.start(tally)
        senders = [HttpSender(name, room, token, tally) for name, token, room in setup["senders"]]
        host, port = live.host.split(":")
        for sender in senders:
            sender.open(host, int(port))
        reply(first_seqs={m.name: m.first_seq for m in members})
        while True:
            order = await command()
            if order["cmd"] == "fast":
                await asyncio.gather(
                    *(m.as_fast_as_acks(order["until"]) for m in members[: order["count"]])
                )
                reply(acked=len(tally.acked))
            elif order["cmd"] == "rate":
                tally.max_send_lag = 0.0
                await asyncio.gather(
                    *(m.at_rate(order["ws_rate"], order["until"]) for m in members),
                    *(s.at_rate(order["http_rate"], order["until"]) for s in senders),
                )
                reply(done=True, lag=tally.max_send_lag, sent=tally.ws_sent + tally.http_sent)
            elif order["cmd"] == "answered":
                await all_answered(members)
                for sender in senders:
                    await sender.answered()
                reply(acked=tally.acked)
            elif order["cmd"] == "delivered":
                last_seq = {int(room): seq for room, seq in order["last_seq"].items()}
                await all_delivered(members, last_seq, within=DELIVERED_WITHIN)
                for member in members:
                    await member.stop()
                for sender in senders:
                    await sender.close()
                reply(**report(tally, members))
                return


def report(tally: Tally, members: list[Member]) -> dict[str, Any]:
    """Everything the test asserts on: the tally, and each member's own record."""
    return {
        "ws_sent": tally.ws_sent,
        "ws_busy": tally.ws_busy,
        "ws_bad_busy": tally.ws_bad_busy,
        "ws_other_errors": tally.ws_other_errors,
        "http_sent": tally.http_sent,
        "http_statuses": {str(k): v for k, v in tally.http_statuses.items()},
        "http_bad": tally.http_bad,
        "deliveries": tally.deliveries,
        "members": [
            {
                "name": m.name,
                "room": m.room,
                "first_seq": m.first_seq,
                "seqs": m.seqs,
                "pongs": m.pongs,
                "unanswered_pings": m.unanswered_pings,
                "closed_by_server": m.closed_by_server,
            }
            for m in members
        ],
    }


if __name__ == "__main__":
    pin(os.getpid(), {int(core) for core in os.environ["LOAD_WORKER_CORES"].split(",")})
    asyncio.run(work())
