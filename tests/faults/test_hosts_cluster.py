"""Faults across hosts on a Redis Cluster: each of its six nodes (three masters, three
replicas) on a host of its own, beside MariaDB, two app nodes and the clients
(``tests/faults/hosts.py``), under the steady load of ``test_hosts.py``. The host of the
master serving the room's shard channel is cut off from every other host (nftables, both
ways: nobody is told); its replica is promoted by the others, the app nodes notice their
silent subscription, resubscribe on the new master and catch their sockets up. 0 lost,
0 duplicated, 0 out of order; the times are printed (docs/operations.md, "Faults across
hosts").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cmschat.observability.health import CHECK_SECONDS
from tests.faults.hosts import Network, network
from tests.faults.own_mariadb import OwnMariaDB
from tests.faults.own_redis_cluster import OwnRedisCluster, started_cluster
from tests.faults.test_hosts import (  # noqa: F401 - the database fixture
    FAULT_SECONDS,
    Deployment,
    database,
    deployed,
    under_host_fault,
)
from tests.processes import Server

pytestmark = [pytest.mark.slow]
REDIS_HOSTS = tuple(f"redis{n}" for n in range(1, 7))
SHARDS = 1024


@pytest.fixture(scope="module")
def hosts() -> Iterator[Network]:
    """One host each for the database, the six Redis nodes, two app nodes and the clients."""
    with network("database", *REDIS_HOSTS, "app1", "app2", "clients") as built:
        yield built


@pytest.fixture
def cluster(hosts: Network, tmp_path: Path) -> Iterator[OwnRedisCluster]:
    """A Redis Cluster with each node on its own host."""
    on = [hosts.hosts[name] for name in REDIS_HOSTS]
    cluster = started_cluster(
        tmp_path / "redis-cluster", [(h.address, tuple(h.command())) for h in on]
    )
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def deployment(
    hosts: Network,
    database: OwnMariaDB,  # noqa: F811
    cluster: OwnRedisCluster,
    tmp_path: Path,
) -> Iterator[Deployment]:
    """Two app nodes on the cluster."""
    settings = {"CMSCHAT_REDIS_CLUSTER": "true", "CMSCHAT_REDIS_SHARDS": str(SHARDS)}
    with deployed(hosts, database, cluster.url, 6379, tmp_path, **settings) as built:
        yield built


async def shard_master_cut_off(cluster: OwnRedisCluster, deployment: Deployment) -> None:
    """The host of the master serving the room's shard cut off from every other host, until
    its replica has taken over and ``FAULT_SECONDS`` more have passed; then healed."""
    channel = f"cmschat:events:shard:{{{deployment.room % SHARDS}}}"
    slot = cluster.keyslot(channel)
    victim = cluster.master_of(slot)
    host = next(h for h in deployment.hosts.hosts.values() if h.address == victim.host)
    others = [h for h in deployment.hosts.hosts.values() if h is not host]
    assert await asyncio.to_thread(cluster.shard_subscribers, channel) == 2  # both app nodes
    host.partition(*others)
    cluster.cut_off(victim)
    cut = time.monotonic()
    seen: Counter[str] = Counter()
    probing = asyncio.create_task(readiness_seen(deployment.servers, seen))
    try:
        await asyncio.to_thread(cluster.wait_promoted, slot, victim)
        deployment.figures["replica_promoted_s"] = round(time.monotonic() - cut, 2)
        # Both app nodes on the new master.
        await asyncio.to_thread(cluster.wait_shard_subscribers, channel, 2)
        deployment.figures["resubscribed_s"] = round(time.monotonic() - cut, 2)
        await asyncio.sleep(FAULT_SECONDS)  # the partition goes on after the failover
    finally:
        probing.cancel()
        host.heal()
        cluster.cut_off(victim, cut=False)
    deployment.figures["readyz_failing_seen"] = dict(seen)
    await asyncio.to_thread(cluster.wait_ok)  # the old master has rejoined, as a replica
    deployment.figures["master_of_the_shard_now"] = cluster.master_of(slot).address


async def readiness_seen(servers: list[Server], seen: Counter[str]) -> None:
    """Probe every node's ``/readyz`` (as a load balancer does, every 0.5 s) until
    cancelled, counting each failing check ("node check: state") seen."""
    async with httpx.AsyncClient(timeout=CHECK_SECONDS + 2) as http:
        while True:
            for number, server in enumerate(servers, 1):
                with contextlib.suppress(httpx.TransportError):
                    checks = (await http.get(server.base_url + "/readyz")).json()["checks"]
                    seen.update(f"node{number} {k}: {v}" for k, v in checks.items() if v != "ok")
            await asyncio.sleep(0.5)  # the probe's own pace


def test_a_masters_host_cut_off_loses_doubles_and_reorders_nothing(
    cluster: OwnRedisCluster, deployment: Deployment
) -> None:
    fault = functools.partial(shard_master_cut_off, cluster)
    figures = deployment.host("clients").call(
        asyncio.run, under_host_fault("redis-master-host-cut-off", fault, deployment)
    )
    print(json.dumps(figures))
    assert set(figures["statuses"]) <= {200, 201}, figures  # Redis is not on the write path
    assert figures["readers_moved"] == 0, figures  # nobody had to leave their node
