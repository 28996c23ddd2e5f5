"""Faults across hosts: MariaDB, Redis, two app nodes and the clients each on a host of its
own (network namespaces on a bridge, ``tests/faults/hosts.py``), under the fault suite's
steady load (4 HTTP senders and 2 WebSocket senders retrying with the same ``client_id``,
4 readers resuming from their last ``seq``; every client knows both nodes and moves to
the other when one fails it). One fault per test on the first node: partitioned from
Redis, from the database, from its clients (nftables drops inside its namespace: silent,
as a cut cable is), and every process on it killed. Each: 0 lost, 0 duplicated, 0 out of
order; the status codes the clients got and the recovery times are printed (figures:
docs/operations.md, "Faults across hosts"). No latency injection: this kernel has no netem.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cmschat.observability.health import CHECK_SECONDS
from tests.faults.cluster import cluster_environment, room_of_everyone
from tests.faults.hosts import Host, Network, network
from tests.faults.load import (
    Reader,
    Traffic,
    check_exactly_once_in_order,
    longest_silence,
    sender,
    wait_until_caught_up,
    ws_sender,
)
from tests.faults.own_mariadb import OwnMariaDB
from tests.faults.own_redis import OwnRedis
from tests.faults.test_under_load import newest_seq, stored_client_ids
from tests.processes import Server, running_server
from tests.realtime.wsclient import token_of

pytestmark = [pytest.mark.slow]
USERS = ("ann", "ben", "cho", "dan")
PORT = 8000
BASELINE_SECONDS = 3.0
FAULT_SECONDS = 10.0
AFTER_SECONDS = 5.0
CATCH_UP_WITHIN = 30.0
KEEPALIVE = 2.0
"""The clients' dead-link detection: a ping every 2 s, the pong within 2 s."""
DATABASE_TIMEOUT = 3.0
"""The nodes' ``CMSCHAT_DATABASE__CONNECT_TIMEOUT`` and ``__DEAD_LINK_TIMEOUT``: a connection
not open, or a statement unanswered, this long fails."""
POST_TIMEOUT = 8.0
"""How long an HTTP sender waits for an answer before it tries the other node: longer
than a node's own bound on a silent database (a pooled connection's check, then a new
connection: twice ``DATABASE_TIMEOUT``), so that its answer is seen; shorter than a
partition, so that a sender cut off from its node moves."""
DETECTED_WITHIN = 15.0


@pytest.fixture(scope="module")
def hosts() -> Iterator[Network]:
    """The test network: one host each for the database, Redis, two nodes and the clients."""
    with network("database", "redis", "app1", "app2", "clients") as built:
        yield built


@pytest.fixture(scope="module")
def database(hosts: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnMariaDB]:
    """MariaDB on the database host, for the whole module (each test has its own schema)."""
    server = OwnMariaDB(tmp_path_factory.mktemp("host-mariadb"), host=hosts.hosts["database"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis(hosts: Network, tmp_path: Path) -> Iterator[OwnRedis]:
    """Redis on the Redis host, fresh for each test."""
    server = OwnRedis(tmp_path, host=hosts.hosts["redis"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Deployment:
    """Two nodes on their hosts, and the hosts of everything else."""

    hosts: Network
    servers: list[Server]
    redis_port: int
    figures: dict[str, Any] = field(default_factory=dict)
    room: int = 0
    """The room the load runs in (set once it is made)."""

    @property
    def node(self) -> Host:
        """The host every fault strikes: the first node's."""
        return self.hosts.hosts["app1"]

    def host(self, name: str) -> Host:
        return self.hosts.hosts[name]


@pytest.fixture
def deployment(
    hosts: Network, database: OwnMariaDB, redis: OwnRedis, tmp_path: Path
) -> Iterator[Deployment]:
    """A fresh schema, four users, and ``cmschat serve`` on each node's host."""
    with deployed(hosts, database, redis.url, redis.port, tmp_path) as built:
        yield built


@contextlib.contextmanager
def deployed(
    hosts: Network,
    database: OwnMariaDB,
    redis_url: str,
    redis_port: int,
    tmp_path: Path,
    **settings: str,
) -> Iterator[Deployment]:
    """A fresh schema, four users, and ``cmschat serve`` on each node's host (with
    ``settings`` too), killed afterwards."""
    schema = f"hosts_{secrets.token_hex(4)}"
    database.create_database(schema)
    env = cluster_environment(
        tmp_path,
        database_url=database.url(schema),
        redis_url=redis_url,
        users=USERS,
        prefix=tuple(hosts.hosts["app1"].command()),
        CMSCHAT_LOG_FORMAT="json",
        CMSCHAT_DATABASE__CONNECT_TIMEOUT=str(DATABASE_TIMEOUT),
        CMSCHAT_DATABASE__DEAD_LINK_TIMEOUT=str(DATABASE_TIMEOUT),
        **settings,
    )
    with contextlib.ExitStack() as stack:
        servers = []
        for name in ("app1", "app2"):
            host = hosts.hosts[name]
            (tmp_path / name).mkdir()
            started = running_server(
                tmp_path / name,
                env,
                name,
                PORT,
                wait=False,
                address=host.address,
                prefix=tuple(host.command()),
            )
            servers.append(stack.enter_context(started))
        for server in servers:
            hosts.hosts["clients"].call(server.wait_ready)
        yield Deployment(hosts, servers, redis_port)


async def not_ready_within(
    server: Server, failing: set[str], within: float
) -> tuple[float, dict[str, str]]:
    """Seconds until the node's ``/readyz`` says 503 naming (at least) the ``failing``
    checks, and what it says of each check that is not ``ok``."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=CHECK_SECONDS + 2) as http:
        while time.monotonic() - started < within:
            with contextlib.suppress(httpx.TransportError):
                answer = await http.get(server.base_url + "/readyz")
                named = {k: v for k, v in answer.json()["checks"].items() if v != "ok"}
                if answer.status_code == 503 and failing <= set(named):
                    return time.monotonic() - started, named
            await asyncio.sleep(0.2)  # the probe's own pace, as a load balancer's
    raise AssertionError(f"{server.base_url} stayed ready for {within} s")


async def partition_from(
    deployment: Deployment, peer: str, port: int, failing: set[str] = frozenset()
) -> None:
    """The node cut off from ``peer`` for ``FAULT_SECONDS``, then healed; ``failing``: the
    readiness checks that must say so."""
    node, other = deployment.node, deployment.host(peer)
    node.partition(other)
    try:
        assert not await asyncio.to_thread(node.reaches, other, port), "not partitioned"
        if failing:  # (the clients cannot ask a node cut off from them)
            server = deployment.servers[0]
            detected, named = await not_ready_within(server, failing, DETECTED_WITHIN)
            deployment.figures |= {"not_ready_after_s": round(detected, 2), "readyz": named}
        await asyncio.sleep(FAULT_SECONDS)  # the partition's length, counted from here
    finally:
        node.heal()


async def from_redis(deployment: Deployment) -> None:
    await partition_from(deployment, "redis", deployment.redis_port, {"redis", "broker"})


async def from_database(deployment: Deployment) -> None:
    await partition_from(deployment, "database", 3306, {"database"})


async def from_clients(deployment: Deployment) -> None:
    await partition_from(deployment, "clients", PORT)


async def host_killed(deployment: Deployment) -> None:
    deployment.figures["processes_killed"] = deployment.node.kill_all()
    await asyncio.sleep(FAULT_SECONDS)  # the node stays down; the clients are elsewhere


Fault = Callable[[Deployment], Awaitable[None]]
FAULTS: dict[str, Fault] = {
    "partitioned-from-redis": from_redis,
    "partitioned-from-database": from_database,
    "partitioned-from-clients": from_clients,
    "host-killed": host_killed,
}


@pytest.mark.parametrize("fault", FAULTS)
def test_clients_lose_nothing_when_a_node_fails_on_its_own_host(
    fault: str, deployment: Deployment
) -> None:
    figures = deployment.host("clients").call(
        asyncio.run, under_host_fault(fault, FAULTS[fault], deployment)
    )
    print(json.dumps(figures))
    if fault in ("partitioned-from-clients", "host-killed"):
        # Every client that was on the node went on on the other one.
        assert figures["readers_moved"] == 2, figures
        assert figures["ws_senders_moved"] == 1, figures
    if fault == "partitioned-from-redis":
        # The subscription's silence is noticed, not only the commands' time-outs.
        assert figures["readyz"] == {"redis": "unreachable", "broker": "reconnecting"}, figures
    if fault == "partitioned-from-database":
        assert set(figures["readyz"]) == {"database"}, figures
        # The node answered for itself within its bound: no post waited out the client.
        assert figures["statuses"].get(503, 0) > 0, figures
        assert "ReadTimeout" not in figures["transport_errors"], figures


async def under_host_fault(name: str, fault: Fault, deployment: Deployment) -> dict[str, Any]:
    """Steady load from the clients' host, the fault, steady load; every message checked."""
    servers = deployment.servers
    heads, room = await room_of_everyone(servers[0], USERS)
    deployment.room = room
    traffic = Traffic()
    stop_sending, stop_reading = asyncio.Event(), asyncio.Event()
    readers = [Reader(token_of(heads[user]), room, keepalive=KEEPALIVE) for user in USERS]
    reading = [  # readers 0 and 2 on the first node, 1 and 3 on the second
        asyncio.create_task(reader.run(servers, i, stop_reading))
        for i, reader in enumerate(readers)
    ]
    sending = [  # every HTTP sender starts on the first node
        asyncio.create_task(
            sender(
                *(servers, heads[u], room, u, traffic, stop_sending),
                move_on_refusal=True,
                answer_within=POST_TIMEOUT,
            )
        )
        for u in USERS
    ]
    sending += [  # one WebSocket sender on each node
        asyncio.create_task(
            ws_sender(
                servers, token_of(heads[u]), room, f"ws{u}", traffic, stop_sending, i, KEEPALIVE
            )
        )
        for i, u in enumerate(USERS[:2])
    ]
    try:
        await asyncio.sleep(BASELINE_SECONDS)  # steady load before the fault
        assert all(reader.connected for reader in readers), "a reader never connected"
        assert sum(reader.reconnects for reader in readers) == 0
        closed_before = sum(traffic.ws_close_codes.values())
        fault_at = time.monotonic()
        traffic.mark("fault")
        await fault(deployment)
        healed_at = time.monotonic()
        traffic.mark("healed")
        sent_before_heal = await newest_seq(servers[::-1], heads["ann"], room)
        await wait_until_caught_up(readers, sent_before_heal, CATCH_UP_WITHIN)
        caught_up_after_heal = time.monotonic() - healed_at
        await asyncio.sleep(max(0.0, AFTER_SECONDS - (time.monotonic() - healed_at)))
    finally:
        stop_sending.set()
        await asyncio.gather(*sending)
    last = await newest_seq(servers[::-1], heads["ann"], room)
    caught_up = await wait_until_caught_up(readers, last, CATCH_UP_WITHIN)
    stop_reading.set()
    await asyncio.gather(*reading)

    for reader in readers:
        check_exactly_once_in_order(reader, 1, last)
    stored = await stored_client_ids(servers[1], heads["ann"], room)
    assert len(stored) == len(set(stored)), "a retry was stored twice"
    assert set(stored) == traffic.acknowledged, "an acknowledged message is missing"
    assert set(traffic.statuses) <= {200, 201, 503}, traffic.statuses

    first_node = servers[0].base_url
    on_first_node = [*USERS, f"ws{USERS[0]}"]
    moved = [  # seconds from the fault to each first-node reader's next connection elsewhere
        min(at - fault_at for at, url in reader.connected if at > fault_at and url != first_node)
        for reader in readers[0::2]
        if any(at > fault_at and url != first_node for at, url in reader.connected)
    ]
    codes = Counter(code for reader in readers for code in reader.close_codes.elements())
    return {
        "fault": name,
        "messages": last,
        "statuses": dict(traffic.statuses),
        "transport_errors": dict(traffic.errors),
        "ws_refusals": dict(traffic.ws_refusals),
        "reader_close_codes": {str(code): n for code, n in codes.items()},
        "ws_sender_close_codes": {str(c): n for c, n in traffic.ws_close_codes.items()},
        "readers_moved": len(moved),
        "readers_moved_after_s": [round(s, 2) for s in sorted(moved)],
        "ws_senders_moved": sum(traffic.ws_close_codes.values()) - closed_before,
        # Until every sender that was on the first node had a send acknowledged again.
        "senders_resumed_after_s": round(traffic.resumed_after("fault", on_first_node), 2),
        "readers_caught_up_after_heal_s": round(caught_up_after_heal, 2),
        "longest_delivery_stall_s": round(longest_silence(readers, fault_at, healed_at), 2),
        "readers_caught_up_s": round(caught_up, 2),
        **deployment.figures,
    }
