"""Issue 16 point 3: five times the measured capacity for 30 s, then normal load, on a real
``cmschat serve`` with the embedded default (SQLite) and the shipped limits.

Not collected with the suite yet (run it by naming this file): its recovery check failed
once in three quiet runs, goodput collapsing in the overload (docs/performance.md,
"Overload: the system test"). Refusals are now cheap and the load workers have their own
scheduling group (same section); it becomes ``test_overload.py`` once quiet runs confirm.

The server is pinned to one core and the load generator (worker processes,
``load_worker.py``) to the other: at 5 x C the generator writes 5 C frames a second and
reads about 10 C (refusals, acks, deliveries to four members a room), and in one process
sharing the server's cores it fell behind, stopped answering uvicorn's pings and had its
sockets closed (docs/performance.md, "Overload: the system test").
Measured within the test, under those conditions: capacity C (acked sends/s with
``SENDS_IN_FLIGHT`` members keeping one send in flight each), the p99 send -> deliver
latency at normal load (20 % of C), then 5 x C offered for 30 s (a tenth of it as HTTP
posts; each WebSocket member sends on a schedule whatever the answers, so its sends pile
up past the connection's ``frames_in_flight``), then 20 % of C again. What must hold:

* no socket closed by the server, and every protocol-level ping of every member (one each
  second) answered throughout, the overload included;
* every send answered: acknowledged, or refused as ``busy`` (WebSocket frame with
  ``retry_after`` and the send's ``client_id``) / 503 with ``Retry-After`` (HTTP); nothing
  else; and both kinds of refusal really happened;
* every acknowledged send delivered exactly once, in order, to every member of its room;
* ``cmschat_sends_refused_total`` equals the refusals the clients saw, per transport;
* recovery: the p99 over the sends from 10 s after the overload to the end is under the
  floor: the issue's 25 ms, or twice the p99 measured at the same normal load before the
  overload when that is already worse (a machine whose neighbours take the server's core
  cannot give 25 ms even unloaded; back to the service it gave before, within a factor a
  neighbour's burst cannot fake, and never stricter than 25 ms).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.processes import clean_env, cmschat, running_server
from tests.realtime.crowd import PING_EVERY, percentile
from tests.realtime.generator import Progress, Report, generator, pin
from tests.support import PASSWORD

pytestmark = pytest.mark.slow

MEMBERS = 100
ROOM_SIZE = 4
WORKERS = 2
SENDS_IN_FLIGHT = 48
"""Below MEMBERS (the default 256 is above): under overload both the process's limit and
each connection's ``frames_in_flight`` are reached."""
HTTP_SENDERS = 4
CAPACITY_SECONDS = 5.0
BASELINE_SECONDS = 6.0
OVERLOAD_SECONDS = 30.0
OVERLOAD = 5.0
NORMAL = 0.2
HTTP_SHARE = 0.1
RECOVERY_WITHIN = 10.0
JUDGED_SECONDS = 6.0
FLOOR = 0.025
CLOSES = re.compile(r'^cmschat_websocket_closes_total\{reason="(\w+)"\} (\S+)$', re.MULTILINE)
REFUSED = re.compile(
    r'^cmschat_sends_refused_total\{limit="(\w+)",transport="(\w+)"\} (\S+)$', re.MULTILINE
)


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


async def test_five_times_capacity_is_shed_by_refusing_sends_never_by_closing_sockets(
    tmp_path: Path,
) -> None:
    cores = sorted(os.sched_getaffinity(0))
    server_cores, load_cores = {cores[0]}, set(cores[1:] or cores)
    with running_server(tmp_path, served(tmp_path), "overload") as server:
        pin(server.process.pid, server_cores)
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=60) as http,
            generator(WORKERS, load_cores, tmp_path) as load,
        ):
            progress = Progress(server.process.pid, load)
            say = progress.say
            accounts = await sign_up(http)
            say(f"{MEMBERS} members signed in, {MEMBERS // ROOM_SIZE} rooms")
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
            say("workers started, members connected")
            before = await refused_metric(http)

            async def offer(rate: float, seconds: float) -> tuple[float, float, int, float]:
                """``rate`` sends/s in all for ``seconds``: (start, end, sent so far, how
                far behind its schedule the generator fell)."""
                start = time.perf_counter()
                until = start + seconds
                answers = await load.send(
                    "rate",
                    ws_rate=rate * (1 - HTTP_SHARE) / MEMBERS,
                    http_rate=rate * HTTP_SHARE / HTTP_SENDERS,
                    until=until,
                )
                sent = sum(answer["sent"] for answer in answers)
                return start, until, sent, max(answer["lag"] for answer in answers)

            # Capacity: as many members as the process takes sends at once each keep one
            # send in flight (more would only be refused, and spin).
            started = time.perf_counter()
            answers = await load.send(
                "fast", count=SENDS_IN_FLIGHT // WORKERS, until=started + CAPACITY_SECONDS
            )
            capacity = sum(a["acked"] for a in answers) / (time.perf_counter() - started)
            say(f"capacity {capacity:.0f} msg/s")
            baseline = await offer(NORMAL * capacity, BASELINE_SECONDS)
            say("baseline done")
            overload = await offer(OVERLOAD * capacity, OVERLOAD_SECONDS)
            say("overload done")
            normal = await offer(NORMAL * capacity, RECOVERY_WITHIN + JUDGED_SECONDS)
            say("normal load done")
            report = Report()
            for answer in await load.send("answered"):
                report.acked.update({k: (room, seq) for k, (room, seq) in answer["acked"].items()})
            last_seq: dict[int, int] = {}
            for room, seq in report.acked.values():
                last_seq[room] = max(seq, last_seq.get(room, 0))
            for part in await load.send("delivered", last_seq=last_seq):
                report.add(part)
            after = await refused_metric(http)
            say("all answered and delivered")

    offered = (overload[2] - baseline[2]) / OVERLOAD_SECONDS
    refused = report.ws_busy + report.http_statuses[503]
    members = report.members
    in_overload = [[at for at, _ in m["pongs"] if overload[0] <= at < overload[1]] for m in members]
    baseline_p99 = p99_of(report.deliveries, baseline[0] + 1, baseline[1])
    floor = max(FLOOR, 2 * baseline_p99)
    recovered_p99 = p99_of(report.deliveries, overload[1] + RECOVERY_WITHIN, normal[1])
    figures = {
        "capacity msg/s": round(capacity),
        "offered in overload msg/s": round(offered),
        "acked in overload msg/s": round(
            sum(overload[0] <= sent < overload[1] for sent, _ in report.deliveries)
            / ROOM_SIZE
            / OVERLOAD_SECONDS
        ),
        "sent ws/http": (report.ws_sent, report.http_sent),
        "acked": len(report.acked),
        "refused ws busy / http 503": (report.ws_busy, report.http_statuses[503]),
        "metric refused": after,
        "delivered": len(report.deliveries),
        "baseline p99 ms": round(baseline_p99 * 1000, 1),
        "overload p99 ms": round(p99_of(report.deliveries, *overload[:2]) * 1000, 1),
        "recovered p99 ms (from +10 s)": round(recovered_p99 * 1000, 1),
        "floor ms": round(floor * 1000, 1),
        "seconds to recover": seconds_to_recover(report, overload[1], normal[1], floor),
        "load generator max lag in overload ms": round(overload[3] * 1000),
        "max pong delay in overload ms": round(
            max(d for m in members for at, d in m["pongs"] if overload[0] <= at < overload[1])
            * 1000
        ),
        "fewest pongs of a member in overload": min(map(len, in_overload)),
        "unanswered pings": sum(m["unanswered_pings"] for m in members),
        "bad answers": report.http_bad[:5] + report.ws_other_errors[:5] + report.ws_bad_busy[:5],
        "closed by the server": Counter(str(m["closed_by_server"]) for m in members),
        "cpu shares (server, generator)": {
            k: (round(s, 2), round(g, 2)) for k, (s, g) in progress.shares.items()
        },
    }
    print("\n".join(f"{k}: {v}" for k, v in figures.items()), flush=True)

    # No socket closed by the server; keep-alive answered all along.
    assert [m["name"] for m in members if m["closed_by_server"] is not None] == []
    assert sum(m["unanswered_pings"] for m in members) == 0
    assert min(map(len, in_overload)) >= OVERLOAD_SECONDS / PING_EVERY / 2
    # Refused only as busy / 503 + Retry-After, and both really refused.
    assert report.ws_other_errors == [] and report.ws_bad_busy == []
    assert report.http_bad == []
    assert set(report.http_statuses) <= {201, 503}
    assert report.ws_busy > 0 and report.http_statuses[503] > 0
    assert offered >= 0.8 * OVERLOAD * capacity, "the load generator fell short"
    # Every acknowledged send delivered once, in order, to every member of its room.
    by_room: dict[int, list[int]] = {}
    for room, seq in report.acked.values():
        by_room.setdefault(room, []).append(seq)
    for member in members:
        start = first_seq[member["name"]]
        expected = sorted(by_room.get(member["room"], []))
        assert expected == list(range(start + 1, start + 1 + len(expected)))
        assert member["seqs"] == expected, member["name"]
    # The metric counts what the clients saw.
    assert after["websocket"] - before["websocket"] == report.ws_busy
    assert after["http"] - before["http"] == report.http_statuses[503]
    assert refused > 0
    # Recovered within 10 s.
    assert recovered_p99 <= floor
