"""Redis for this deployment: one server or a Redis Cluster, and the event broker on it.

``CMSCHAT_REDIS_URL`` names one server, or with ``CMSCHAT_REDIS_CLUSTER=true`` any node
of a cluster (the client learns the others from it). Everything that keeps shared state in
Redis takes either client (``RedisClient``); its keys are built so that a script's keys
share one hash slot. The broker differs: on one server every instance hears every event
(``RedisBroker``); on a cluster room events go to shard channels that each instance
subscribes to only for the rooms its connections follow (``ShardedBroker``).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cmschat.realtime.broker import Broker, RedisBroker
from cmschat.realtime.connections import Hub
from cmschat.realtime.shard_subscriber import Connect
from cmschat.realtime.sharded_broker import ShardedBroker
from cmschat.settings import Settings

RedisClient = Redis | RedisCluster
"""What shared state is kept with: the commands cmschat uses behave alike on both."""

REDIS_CONNECTIONS = 100
REDIS_RETRIES = 3
REDIS_HEALTH_CHECK_SECONDS = 5
REDIS_SOCKET_TIMEOUT_SECONDS = 5.0
"""A command Redis has not answered in this long fails (and is retried): a stall, not a hang."""
CLUSTER_CONNECTIONS_PER_NODE = 1000
"""redis-py's cluster pools raise past their size (``MaxConnectionsError``) instead of
waiting: 200 sends at once on one master failed half their rate-limit calls at 100."""
CLUSTER_SOCKET_TIMEOUT_SECONDS = 2.0
"""The same on a cluster, shorter: reloading the slot map after a failover asks the nodes
one after another, and a frozen master would hold each reload up this long."""
SUBSCRIPTION_TIMEOUT_SECONDS = 2.0
"""Connecting a subscription, or a command on it, past this fails: Redis on a LAN that
has not answered in 2 s is down or cut off, and the broker tries again in a second."""


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), REDIS_RETRIES)


def redis_client(settings: Settings) -> RedisClient:
    """A client whose pooled connections survive a Redis restart, stall or failover.

    One server: a blocking pool, since past its size a request waits for a connection
    where redis-py's default pool raises (a burst of 200 parallel logins answered 500).
    Without retries a connection from before a restart fails its next command ("Connection
    closed by server") and nothing repairs it; with them the command runs again on a new
    connection. Socket time-outs turn a frozen Redis into errors the callers handle.

    A cluster: redis-py's ``RedisCluster``, which follows ``MOVED`` answers and reloads the
    slot map when a master fails, with the same time-outs and retries per node.
    """
    assert settings.redis_url is not None  # noqa: S101 - asked only with a URL
    if settings.redis_cluster:
        return RedisCluster.from_url(
            settings.redis_url,
            max_connections=CLUSTER_CONNECTIONS_PER_NODE,
            retry=_retry(),
            socket_connect_timeout=CLUSTER_SOCKET_TIMEOUT_SECONDS,
            socket_timeout=CLUSTER_SOCKET_TIMEOUT_SECONDS,
            socket_keepalive=True,
        )
    return Redis.from_pool(
        BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=REDIS_CONNECTIONS,
            timeout=10,
            retry=_retry(),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            health_check_interval=REDIS_HEALTH_CHECK_SECONDS,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
            socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
            socket_keepalive=True,
        )
    )


def node_clients(url: str) -> Connect:
    """Clients for single nodes of the cluster ``url`` names, with its credentials and TLS,
    for the broker's subscriptions. No retries: a command that fails must raise, not
    reconnect and resubscribe quietly (messages would be missed unnoticed)."""
    parts = urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")

    def connect(host: str, port: int) -> Redis:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        netloc = f"{userinfo}@{where}" if userinfo else where
        return subscriber_client(urlunsplit(parts._replace(netloc=netloc)))

    return connect


def subscriber_client(url: str) -> Redis:
    """A client for subscribing on ``url``: no retries (a lost subscription must raise, so
    the broker catches its connections up), short time-outs."""
    return Redis.from_url(
        url,
        retry=Retry(NoBackoff(), 0, supported_errors=()),
        socket_connect_timeout=SUBSCRIPTION_TIMEOUT_SECONDS,
        socket_timeout=SUBSCRIPTION_TIMEOUT_SECONDS,
        socket_keepalive=True,
    )


def redis_broker(settings: Settings, redis: RedisClient, hub: Hub | None = None) -> Broker:
    """The broker between instances on ``redis``: shard channels on a cluster, else one
    channel. ``hub``: this instance's connections (none: a command that only publishes)."""
    channel = f"{settings.redis_prefix}:events"
    if isinstance(redis, RedisCluster):
        connect = node_clients(settings.redis_url or "")
        return ShardedBroker(redis, connect, hub, channel=channel, shards=settings.redis_shards)
    return RedisBroker(
        redis, channel=channel, subscriber=subscriber_client(settings.redis_url or "")
    )
