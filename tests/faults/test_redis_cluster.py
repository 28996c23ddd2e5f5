"""Two instances on a Redis Cluster (three masters, three replicas, started by the test)
and MariaDB, under the fault suite's steady load (4 senders retrying with the same
``client_id``, 4 readers resuming on either instance): the master serving the room's shard
channel is killed and its replica takes over. 0 lost, 0 duplicated, 0 out of order; the
time delivery stalled and the time until the readers were caught up are printed (figures:
docs/operations.md, "Redis Cluster")."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.cluster import cluster_environment, room_of_everyone
from tests.faults.load import (
    Reader,
    Traffic,
    check_exactly_once_in_order,
    longest_silence,
    sender,
    wait_until_caught_up,
)
from tests.faults.own_mariadb import OwnMariaDB, own_mariadb  # noqa: F401 - fixture
from tests.faults.own_redis_cluster import OwnRedisCluster, own_redis_cluster  # noqa: F401
from tests.faults.test_under_load import Cluster, newest_seq, stored_client_ids

pytestmark = [pytest.mark.slow]
USERS = ("ann", "ben", "cho", "dan")
BASELINE_SECONDS = 3.0
AFTER_SECONDS = 6.0
CATCH_UP_WITHIN = 30.0
SHARDS = 1024


@pytest.fixture
def instances(
    tmp_path: Path,
    own_mariadb: OwnMariaDB,  # noqa: F811
    own_redis_cluster: OwnRedisCluster,  # noqa: F811
) -> Iterator[Cluster]:
    """Two instances on the own MariaDB and the own Redis Cluster, four users."""
    name = f"rcluster_{secrets.token_hex(4)}"
    own_mariadb.create_database(name)
    env = cluster_environment(
        tmp_path,
        database_url=own_mariadb.url(name),
        redis_url=own_redis_cluster.url,
        users=USERS,
        CMSCHAT_REDIS_CLUSTER="true",
        CMSCHAT_REDIS_SHARDS=str(SHARDS),
        CMSCHAT_LOG_FORMAT="json",
    )
    with Cluster(tmp_path, env) as running:
        yield running


async def test_a_master_killed_under_load_loses_doubles_and_reorders_nothing(
    instances: Cluster,
    own_redis_cluster: OwnRedisCluster,  # noqa: F811
) -> None:
    heads, room = await room_of_everyone(instances.servers[0], USERS)
    shard_channel = f"cmschat:events:shard:{{{room % SHARDS}}}"
    traffic = Traffic()
    stop_sending, stop_reading = asyncio.Event(), asyncio.Event()
    readers = [Reader(heads[user]["Authorization"].split()[1], room) for user in USERS]
    reading = [
        asyncio.create_task(reader.run(instances.servers, i, stop_reading))
        for i, reader in enumerate(readers)
    ]
    sending = [
        asyncio.create_task(sender(instances.servers, heads[u], room, u, traffic, stop_sending))
        for u in USERS
    ]
    try:
        await asyncio.sleep(BASELINE_SECONDS)  # steady load before the fault
        # Both instances have readers in the room: both subscribe to its shard.
        assert own_redis_cluster.shard_subscribers(shard_channel) == 2
        slot = own_redis_cluster.keyslot(shard_channel)
        victim = own_redis_cluster.master_of(slot)
        own_redis_cluster.kill(victim)
        killed = time.monotonic()
        traffic.mark("fault")
        await asyncio.to_thread(own_redis_cluster.wait_promoted, slot, victim)
        promoted_s = time.monotonic() - killed
        await asyncio.sleep(AFTER_SECONDS)  # steady load after it
    finally:
        stop_sending.set()
        await asyncio.gather(*sending)
    last = await newest_seq(instances.servers, heads["ann"], room)
    caught_up = await wait_until_caught_up(readers, last, CATCH_UP_WITHIN)
    stop_reading.set()
    await asyncio.gather(*reading)

    for reader in readers:
        check_exactly_once_in_order(reader, 1, last)
    stored = await stored_client_ids(instances.servers[0], heads["ann"], room)
    assert len(stored) == len(set(stored)), "a retry was stored twice"
    assert set(stored) == traffic.acknowledged, "an acknowledged message is missing"
    assert set(traffic.statuses) <= {200, 201}, traffic.statuses  # Redis is not on the write path
    assert own_redis_cluster.master_of(own_redis_cluster.keyslot(shard_channel)) is not victim
    assert own_redis_cluster.shard_subscribers(shard_channel) == 2  # both back on the new master
    stalled = longest_silence(readers, killed, killed + promoted_s + AFTER_SECONDS)
    print(
        json.dumps(
            {
                "fault": "redis-cluster-master-kill",
                "messages": last,
                "statuses": dict(traffic.statuses),
                "replica_promoted_s": round(promoted_s, 2),
                "longest_delivery_stall_s": round(stalled, 2),
                "first_ack_after_kill_s": round(traffic.first_ack_after.get("fault", -1), 2),
                "readers_caught_up_s": round(caught_up, 2),
                "reconnects": sum(reader.reconnects for reader in readers),
            }
        )
    )
