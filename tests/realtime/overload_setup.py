"""The overload test's server, members and phases (``test_overload.py``, ``normal_load_probe.py``).

A real ``cmschat serve`` on the embedded default (SQLite) with the shipped limits but
``SENDS_IN_FLIGHT``, pinned to one core; the load generator (worker processes,
``load_worker.py``) pinned to the other. ``scenario`` signs the members in, starts the
workers and hands back a ``Scenario`` whose phases the test runs in the order it wants.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.processes import clean_env, cmschat, running_server
from tests.realtime.crowd import percentile
from tests.realtime.generator import Generator, Progress, Report, generator, pin
from tests.support import PASSWORD

MEMBERS = 100
ROOM_SIZE = 4
WORKERS = 2
SENDS_IN_FLIGHT = 48
"""Below MEMBERS (the default 256 is above): under overload both the process's limit and
each connection's ``frames_in_flight`` are reached."""
HTTP_SENDERS = 4
HTTP_SHARE = 0.1
"""The share of the offered sends posted over HTTP (the rest are WebSocket frames)."""
CAPACITY_SECONDS = 5.0
CLOSES = re.compile(r'^cmschat_websocket_closes_total\{reason="(\w+)"\} (\S+)$', re.MULTILINE)
REFUSED = re.compile(
    r'^cmschat_sends_refused_total\{limit="(\w+)",transport="(\w+)"\} (\S+)$', re.MULTILINE
)


@dataclass(frozen=True)
class Phase:
    """One open-loop phase: when it began and was due to end, the sends offered by its end
    (counted from the start of the run), and how far behind its schedule the generator fell."""

    start: float
    end: float
    sent_so_far: int
    lag: float


@dataclass
class Scenario:
    """The running server, its members (in the load workers) and the test's own client."""

    http: httpx.AsyncClient
    load: Generator
    progress: Progress
    first_seq: dict[str, int]

    async def capacity(self) -> float:
        """Acked sends a second with ``SENDS_IN_FLIGHT`` members keeping one send in flight
        each (more would only be refused, and spin)."""
        started = time.perf_counter()
        answers = await self.load.send(
            "fast", count=SENDS_IN_FLIGHT // WORKERS, until=started + CAPACITY_SECONDS
        )
        acked: int = sum(a["acked"] for a in answers)
        return acked / (time.perf_counter() - started)

    async def offer(self, rate: float, seconds: float) -> Phase:
        """``rate`` sends a second in all, for ``seconds``, whatever the answers."""
        start = time.perf_counter()
        until = start + seconds
        answers = await self.load.send(
            "rate",
            ws_rate=rate * (1 - HTTP_SHARE) / MEMBERS,
            http_rate=rate * HTTP_SHARE / HTTP_SENDERS,
            until=until,
        )
        sent = sum(answer["sent"] for answer in answers)
        return Phase(start, until, sent, max(answer["lag"] for answer in answers))

    async def report(self) -> Report:
        """Every send's answer and every delivery, once all are in (the workers then leave)."""
        report = Report()
        for answer in await self.load.send("answered"):
            report.acked.update({k: (room, seq) for k, (room, seq) in answer["acked"].items()})
        last_seq: dict[int, int] = {}
        for room, seq in report.acked.values():
            last_seq[room] = max(seq, last_seq.get(room, 0))
        for part in await self.load.send("delivered", last_seq=last_seq):
            report.add(part)
        return report


@contextlib.asynccontextmanager
async def scenario(tmp_path: Path) -> AsyncIterator[Scenario]:
    """The server on one core and the members, connected, in workers on the other."""
    cores = sorted(os.sched_getaffinity(0))
    server_cores, load_cores = {cores[0]}, set(cores[1:] or cores)
    with running_server(tmp_path, served(tmp_path), "overload") as server:
        pin(server.process.pid, server_cores)
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=60) as http,
            generator(WORKERS, load_cores, tmp_path) as load,
        ):
            progress = Progress(server.process.pid, load)
            accounts = await sign_up(http)
            progress.say(f"{MEMBERS} members signed in, {MEMBERS // ROOM_SIZE} rooms")
            senders = accounts[:: MEMBERS // HTTP_SENDERS]
            answers = await load.each(
                [
                    {
                        "http": server.base_url,
                        "members": accounts[index::WORKERS],
                        "senders": senders[index::WORKERS],
                    }
                    for index in range(WORKERS)
                ]
            )
            first_seq = {name: seq for a in answers for name, seq in a["first_seqs"].items()}
            progress.say("workers started, members connected")
            yield Scenario(http, load, progress, first_seq)


def served(tmp_path: Path) -> dict[str, str]:
    """A migrated embedded database with an admin, and the server's environment."""
    env = clean_env(
        CMSCHAT_ENVIRONMENT="test",
        CMSCHAT_AUTH__BCRYPT_ROUNDS="4",
        CMSCHAT_CHAT__SEND_RATE="0",
        CMSCHAT_LOG_LEVEL="WARNING",
        CMSCHAT_CHAT__SENDS_IN_FLIGHT=str(SENDS_IN_FLIGHT),
    )
    # The run without the protection (docs/performance.md) raises the limits here; they
    # must come last, over the settings above.
    env.update(
        {k.removeprefix("OVERLOAD_"): v for k, v in env.items() if k.startswith("OVERLOAD_")}
    )
    assert cmschat(tmp_path, "migrate", env=env).returncode == 0
    made = cmschat(
        tmp_path, "user", "create", "boss", "--role", "admin", "--password-stdin",
        env=env, stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return env


async def sign_up(http: httpx.AsyncClient) -> list[tuple[str, str, int]]:
    """MEMBERS users, each signed in, in rooms of ROOM_SIZE: (name, token, room)."""
    admin = await login(http, "boss")
    gate = asyncio.Semaphore(8)

    async def create(name: str) -> tuple[int, str]:
        async with gate:
            made = await http.post(
                "/api/v1/admin/users",
                headers=admin,
                json={"username": name, "password": PASSWORD, "must_change_password": False},
            )
            assert made.status_code == 201, made.text
            return made.json()["id"], (await login(http, name))["Authorization"].split()[1]

    names = [f"m{index:03d}" for index in range(MEMBERS)]
    made = await asyncio.gather(*(create(name) for name in names))
    rooms = []
    for first in range(0, MEMBERS, ROOM_SIZE):
        room = await http.post(
            "/api/v1/rooms",
            headers=admin,
            json={
                "kind": "group",
                "name": f"r{first}",
                "member_ids": [user_id for user_id, _ in made[first : first + ROOM_SIZE]],
            },
        )
        assert room.status_code == 201, room.text
        rooms.append(room.json()["id"])
    return [(name, made[i][1], rooms[i // ROOM_SIZE]) for i, name in enumerate(names)]


async def login(http: httpx.AsyncClient, name: str) -> dict[str, str]:
    """The bearer header of ``name`` signed in."""
    response = await http.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def refused_metric(http: httpx.AsyncClient) -> dict[str, float]:
    """``cmschat_sends_refused_total`` by transport (both limits added up), and the
    server's closes by reason (``close:<reason>``)."""
    text = (await http.get("/metrics")).text
    totals = {"http": 0.0, "websocket": 0.0}
    for _limit, transport, value in REFUSED.findall(text):
        totals[transport] += float(value)
    for reason, value in CLOSES.findall(text):
        if float(value):
            totals[f"close:{reason}"] = float(value)
    return totals


def p99_of(deliveries: list[tuple[float, float]], start: float, end: float) -> float:
    """The p99 send -> deliver latency of the sends made between ``start`` and ``end``."""
    return percentile([lat for sent, lat in deliveries if start <= sent < end], 99)


def seconds_to_recover(report: Report, overload_end: float, end: float, floor: float) -> float:
    """From the overload's end, the first whole second after which every second's sends
    have their p99 under ``floor``."""
    buckets: dict[int, list[float]] = {}
    for sent, latency in report.deliveries:
        if overload_end <= sent < end:
            buckets.setdefault(int(sent - overload_end), []).append(latency)
    slow = [second for second, lats in buckets.items() if percentile(lats, 99) > floor]
    return float(max(slow) + 1) if slow else 0.0
