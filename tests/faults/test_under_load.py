"""The fault suite: two instances on the suite's own MariaDB and Redis under steady load
(4 senders, 20 messages/s, retrying with the same ``client_id``; 4 readers resuming from
their last ``seq``), one fault at a time. For each: 0 lost, 0 duplicated, 0 out of order,
only the documented status codes (201/200, 503/507 with ``Retry-After``), and the time
until the first acknowledged send after the fault ends. Figures: ``docs/operations.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import support
from tests.cli.test_workers import busiest_worker, children, wait_for
from tests.faults.cluster import cluster_environment, room_of_everyone
from tests.faults.load import (
    Reader,
    Traffic,
    check_exactly_once_in_order,
    sender,
    wait_until_caught_up,
    ws_sender,
)
from tests.faults.own_mariadb import OwnMariaDB, own_mariadb  # noqa: F401 - fixture
from tests.faults.own_redis import OwnRedis, own_redis  # noqa: F401 - fixture
from tests.processes import Server, free_port, ready_deadline, running_server
from tests.realtime.wsclient import token_of

pytestmark = [pytest.mark.slow]
USERS = ("ann", "ben", "cho", "dan")
BASELINE_SECONDS = 2.0
AFTER_SECONDS = 4.0
CATCH_UP_WITHIN = 20.0


class Cluster:
    """Two ``cmschat serve`` processes, each restartable on its own port."""

    def __init__(self, directory: Path, env: dict[str, str], workers: int = 1) -> None:
        self.directory = directory
        self.env = env
        self.workers = workers
        self.figures: dict[str, Any] = {}
        """What a fault measured (stop time, the killed worker), printed with the rest."""
        self.ports = [free_port(), free_port()]
        self.servers: list[Server] = []
        self._stack = contextlib.ExitStack()
        self._runs = 0

    def __enter__(self) -> Cluster:
        for index in range(2):
            self.servers.append(self._start(index))
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stack.close()

    def _start(self, index: int, *, wait: bool = True) -> Server:
        self._runs += 1
        return self._stack.enter_context(
            running_server(
                self.directory,
                self.env,
                f"i{index}-{self._runs}",
                self.ports[index],
                workers=self.workers,
                wait=wait,
            )
        )

    async def restart(self, index: int) -> None:
        """A new process on the same port (the old one is already gone). Started from the
        loop's thread, which outlives it: started in a worker thread it would die with that
        thread (``bench/children.py``), not at teardown. Only the wait runs in a thread."""
        self.servers[index] = server = self._start(index, wait=False)
        await asyncio.to_thread(server.wait_ready, ready_deadline(self.workers))

    def stderr(self) -> str:
        """Everything every process logged."""
        return "".join(p.read_text() for p in self.directory.glob("i*.stderr"))


@pytest.fixture
def cluster_workers() -> int:
    """Worker processes per instance; the workers variant parametrizes it."""
    return 1


@pytest.fixture
def cluster(
    tmp_path: Path,
    own_mariadb: OwnMariaDB,  # noqa: F811
    own_redis: OwnRedis,  # noqa: F811
    cluster_workers: int,
) -> Iterator[Cluster]:
    """A fresh database on the own MariaDB, the own Redis, four users, two instances."""
    name = f"faults_{secrets.token_hex(4)}"
    own_mariadb.create_database(name)
    env = cluster_environment(
        tmp_path,
        database_url=own_mariadb.url(name),
        redis_url=own_redis.url,
        users=USERS,
        CMSCHAT_LOG_FORMAT="json",
        CMSCHAT_SHUTDOWN_GRACE_SECONDS="5",
    )
    with Cluster(tmp_path, env, cluster_workers) as running:
        yield running


async def test_a_restarted_instance_outlives_the_thread_that_waited_for_it(
    tmp_path: Path,
) -> None:
    # Started in the default executor's thread, the replacement was SIGKILLed as soon as
    # that thread exited (PR_SET_PDEATHSIG follows the starting thread), not at teardown.
    env = cluster_environment(
        tmp_path,
        database_url=support.sqlite_url(tmp_path / "cmschat.db"),
        redis_url=support.REDIS_URL,
        users=(),
    )
    with Cluster(tmp_path, env) as running:
        running.servers[0].process.kill()
        running.servers[0].process.wait(timeout=10)
        await running.restart(0)
        await asyncio.get_running_loop().shutdown_default_executor()  # its threads exit
        running.servers[0].wait_ready()  # fails at once if the replacement died
        assert running.servers[0].process.poll() is None


async def newest_seq(servers: list[Server], headers: dict[str, str], room: int) -> int:
    """The room's newest message seq, from whichever instance answers."""
    for server in servers:
        with contextlib.suppress(httpx.TransportError):
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.get(
                    f"{server.base_url}/api/v1/rooms/{room}/messages",
                    headers=headers,
                    params={"limit": 1},
                )
            if response.status_code == 200:
                return int(response.json()["items"][0]["seq"])
    raise AssertionError("no instance answered")


async def stored_client_ids(server: Server, headers: dict[str, str], room: int) -> list[str]:
    """Every message content (= its client_id) stored in the room, paging back."""
    contents: list[str] = []
    before: int | None = None
    async with httpx.AsyncClient(timeout=30) as http:
        while True:
            params: dict[str, Any] = {"limit": 100}
            if before is not None:
                params["before"] = before
            page = await http.get(
                f"{server.base_url}/api/v1/rooms/{room}/messages", headers=headers, params=params
            )
            items = page.json()["items"]
            if not items:
                return contents
            contents += [item["content"] for item in items]
            before = min(item["seq"] for item in items)


Fault = Callable[[Cluster, OwnRedis, OwnMariaDB], Any]


async def redis_kill(cluster: Cluster, redis: OwnRedis, _db: OwnMariaDB) -> None:
    redis.kill()
    await asyncio.sleep(5)  # the outage's length
    redis.start()


async def redis_freeze(cluster: Cluster, redis: OwnRedis, _db: OwnMariaDB) -> None:
    redis.freeze()
    try:
        await asyncio.sleep(8)  # the stall's length
    finally:
        redis.thaw()


async def mariadb_kill(cluster: Cluster, _redis: OwnRedis, db: OwnMariaDB) -> None:
    db.kill()
    await asyncio.sleep(5)  # the outage's length
    db.launch()  # here: a child started in a worker thread would die with that thread
    await asyncio.to_thread(db.wait_answering)


async def instance_kill(cluster: Cluster, _redis: OwnRedis, _db: OwnMariaDB) -> None:
    cluster.servers[1].process.kill()
    cluster.servers[1].process.wait(timeout=10)
    await asyncio.sleep(3)  # down for a while before its replacement starts
    await cluster.restart(1)


async def instance_sigterm(cluster: Cluster, _redis: OwnRedis, _db: OwnMariaDB) -> None:
    signalled = time.monotonic()
    cluster.servers[1].process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(cluster.servers[1].process.wait, 30) == 0
    cluster.figures["stop_s"] = round(time.monotonic() - signalled, 2)
    await cluster.restart(1)


async def worker_kill(cluster: Cluster, _redis: OwnRedis, _db: OwnMariaDB) -> None:
    supervisor = cluster.servers[1].process.pid
    before = children(supervisor)
    victim, connections = busiest_worker(supervisor, cluster.ports[1])
    cluster.figures["killed_worker_connections"] = connections
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    # The supervisor, still running, starts a replacement; the other worker serves meanwhile.
    await asyncio.to_thread(wait_for, lambda: len(children(supervisor) - {victim}) >= len(before))
    cluster.figures["worker_replaced_s"] = round(time.monotonic() - killed, 2)


FAULTS: dict[str, Fault] = {
    "redis-kill": redis_kill,
    "redis-freeze": redis_freeze,
    "mariadb-kill": mariadb_kill,
    "instance-kill": instance_kill,
    "instance-sigterm": instance_sigterm,
    "worker-kill": worker_kill,
}


@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "worker-kill"])
async def test_no_message_lost_doubled_or_reordered_under_the_fault(
    fault: str,
    cluster: Cluster,
    own_redis: OwnRedis,  # noqa: F811
    own_mariadb: OwnMariaDB,  # noqa: F811
) -> None:
    await under_fault(fault, cluster, own_redis, own_mariadb)


# Each instance a supervisor over two workers: a worker killed (-9) under load, and the
# supervisor stopped (SIGTERM) with HTTP and WebSocket sends in flight, then started again.
@pytest.mark.parametrize("cluster_workers", [2])
@pytest.mark.parametrize("fault", ["worker-kill", "instance-sigterm"])
async def test_with_two_workers_per_instance_nothing_is_lost_doubled_or_reordered(
    fault: str,
    cluster: Cluster,
    own_redis: OwnRedis,  # noqa: F811
    own_mariadb: OwnMariaDB,  # noqa: F811
) -> None:
    figures = await under_fault(fault, cluster, own_redis, own_mariadb, ws_senders=2)
    assert figures["ws_acks"] > 0
    if fault == "instance-sigterm":
        # Every worker drained within the grace (the supervisor kills, and says so, any
        # that does not: stop_s is printed, the machine's load decides the rest); every
        # WebSocket on the stopped instance closed with "going away" or "restart".
        assert "did not stop within the grace" not in cluster.stderr()
        assert set(figures["ws_close_codes"]) <= {"None", "1001", "1012"}, figures


async def under_fault(
    fault: str,
    cluster: Cluster,
    own_redis: OwnRedis,  # noqa: F811
    own_mariadb: OwnMariaDB,  # noqa: F811
    *,
    ws_senders: int = 0,
) -> dict[str, Any]:
    """Steady load, the fault, steady load; then check every message once, in order."""
    heads, room = await room_of_everyone(cluster.servers[0], USERS)
    traffic = Traffic()
    stop_sending, stop_reading = asyncio.Event(), asyncio.Event()
    readers = [Reader(heads[user]["Authorization"].split()[1], room) for user in USERS]
    reading = [
        asyncio.create_task(reader.run(cluster.servers, i, stop_reading))
        for i, reader in enumerate(readers)
    ]
    sending = [
        asyncio.create_task(sender(cluster.servers, heads[user], room, user, traffic, stop_sending))
        for user in USERS
    ]
    sending += [
        asyncio.create_task(
            ws_sender(
                cluster.servers, token_of(heads[user]), room, f"ws{user}", traffic, stop_sending, i
            )
        )
        for i, user in enumerate(USERS[:ws_senders])
    ]
    started = time.monotonic()
    try:
        await asyncio.sleep(BASELINE_SECONDS)  # steady load before the fault
        traffic.mark("fault")
        await FAULTS[fault](cluster, own_redis, own_mariadb)
        traffic.mark("recovered")
        await asyncio.sleep(AFTER_SECONDS)  # steady load after it
    finally:
        stop_sending.set()
        await asyncio.gather(*sending)
    last = await newest_seq(cluster.servers, heads["ann"], room)
    caught_up = await wait_until_caught_up(readers, last, CATCH_UP_WITHIN)
    stop_reading.set()
    await asyncio.gather(*reading)

    for reader in readers:
        check_exactly_once_in_order(reader, 1, last)
    stored = await stored_client_ids(cluster.servers[0], heads["ann"], room)
    assert len(stored) == len(set(stored)), "a retry was stored twice"
    assert set(stored) == traffic.acknowledged, "an acknowledged message is missing"
    assert set(traffic.statuses) <= {200, 201, 503, 507}, traffic.statuses
    logged = cluster.stderr()
    tracebacks = logged.count("Traceback (most recent call last)")
    refused = sum(n for status, n in traffic.statuses.items() if status >= 500)
    assert tracebacks <= 5, f"{tracebacks} stack traces logged for {refused} refusals"

    figures = {
        "fault": fault,
        "messages": last,
        "seconds": round(time.monotonic() - started, 1),
        "statuses": dict(traffic.statuses),
        "transport_errors": traffic.transport_errors,
        "first_ack_after_recovery_s": round(traffic.first_ack_after.get("recovered", -1), 2),
        "readers_caught_up_s": round(caught_up, 2),
        "reconnects": sum(reader.reconnects for reader in readers),
        "tracebacks": tracebacks,
        "log_bytes": len(logged),
        "workers": cluster.workers,
        **cluster.figures,
    }
    if ws_senders:
        codes = Counter(c for r in readers for c in r.close_codes.elements())
        codes.update(traffic.ws_close_codes)
        figures |= {
            "ws_acks": traffic.ws_acks,
            "ws_refusals": dict(traffic.ws_refusals),
            "ws_close_codes": {str(code): n for code, n in codes.items()},
        }
    print(json.dumps(figures))
    return figures
