"""The suite's own Redis Clusters (``bench/redis_cluster.py``): three masters and three
replicas, stopped afterwards whatever state the test left them in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.redis_cluster import ClusterNode, OwnRedisCluster

from tests.support import service_missing

__all__ = [
    "ClusterNode",
    "OwnRedisCluster",
    "own_redis_cluster",
    "shared_redis_cluster",
    "started_cluster",
]


def started_cluster(
    directory: Path, hosts: list[tuple[str, tuple[str, ...]]] | None = None
) -> OwnRedisCluster:
    """A cluster started (on ``hosts``, see ``OwnRedisCluster``), or the test skipped (CI:
    failed) when redis-server is not installed."""
    try:
        cluster = OwnRedisCluster(directory, hosts=hosts)
    except FileNotFoundError as missing:
        service_missing("redis-server", missing)
        raise
    cluster.start()
    return cluster


@pytest.fixture
def own_redis_cluster(tmp_path: Path) -> Iterator[OwnRedisCluster]:
    """A private three-master, three-replica Redis Cluster, stopped afterwards."""
    cluster = started_cluster(tmp_path / "redis-cluster")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def shared_redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedisCluster]:
    """One cluster for a module's tests that do not break it."""
    cluster = started_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()
