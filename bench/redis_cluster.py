"""A Redis Cluster on spare ports, for the suite's fault tests and the benchmarks.

Started from Debian's ``redis-server`` (7.0) and joined with ``redis-cli --cluster create``
(masters with replicas), as an operator would, or by hand for fewer than three masters
without replicas; a master can be killed to watch its replica take over. The node time-out
is one second so that a failover takes a few seconds, not the default fifteen. Standard
library only: the suite imports it as ``bench.redis_cluster``, the bench tools as
``redis_cluster``.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

if __package__:
    from bench import children
else:
    import children


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


START_DEADLINE = 60.0
NODE_TIMEOUT_MS = 1000
"""How long a master may be silent before its replica is promoted (``cluster-node-timeout``)."""


@dataclass(eq=False)
class ClusterNode:
    """One redis-server of the cluster."""

    port: int
    bus_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    silent: bool = False
    """Frozen, or cut off from the network: alive, answering nobody (not asked)."""
    host: str = "127.0.0.1"
    """The address it listens on (a test host's, ``tests/faults/hosts.py``, or loopback)."""
    prefix: tuple[str, ...] = ()
    """What its commands run under: ``ip netns exec HOST`` for a node on a test host."""

    @property
    def address(self) -> str:
        """``host:port`` as ``redis-cli --cluster`` takes it."""
        return f"{self.host}:{self.port}"


class OwnRedisCluster:
    """Six redis-server processes joined into one cluster (three masters, one replica each)."""

    def __init__(
        self,
        directory: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        hosts: list[tuple[str, tuple[str, ...]]] | None = None,
    ) -> None:
        """``hosts``: one (address, command prefix) per node, each node alone on its host
        on Redis's own ports; none: every node on loopback, on spare ports."""
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise FileNotFoundError("redis-server and redis-cli (Debian's redis-server)")
        self._server, self._cli = server, cli
        self._masters, self._replicas = masters, replicas
        count = masters * (1 + replicas)
        self.nodes = [
            ClusterNode(free_port(), free_port(), directory / f"node-{index}")
            if hosts is None
            else ClusterNode(
                6379,
                16379,
                directory / f"node-{index}",
                host=hosts[index][0],
                prefix=hosts[index][1],
            )
            for index in range(count)
        ]

    @property
    def url(self) -> str:
        """``redis://`` URL of one node: a client learns the rest from it."""
        return f"redis://{self.nodes[0].address}/0"

    def start(self) -> None:
        """Start every node, join them, and wait until every node says the cluster is ok."""
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            self._start(node)
        for node in self.nodes:
            for _attempt in range(3):
                if self._answers(node):
                    break
                # Its port or bus port taken since it was chosen (free ports race with
                # whatever else starts on the machine): new ones.
                if not node.prefix:
                    node.port, node.bus_port = free_port(), free_port()
                self._start(node)
            else:
                raise RuntimeError(f"redis-server did not start: {node.directory}/redis.log")
        if self._replicas or self._masters >= 3:
            self._cli_run(
                "--cluster",
                "create",
                *(node.address for node in self.nodes),
                "--cluster-replicas",
                str(self._replicas),
                "--cluster-yes",
                node=self.nodes[0],
            )
        else:
            self._join_masters()  # redis-cli creates three masters at least
        self.wait_ok()
        self.wait_replicas_synced()

    def _start(self, node: ClusterNode) -> None:
        node.process = subprocess.Popen(  # noqa: S603 - the Debian binary, fixed options
            [
                *node.prefix,
                self._server,
                *("--port", str(node.port)),
                *("--cluster-port", str(node.bus_port)),
                *("--bind", node.host),
                *("--protected-mode", "no"),
                *("--cluster-enabled", "yes"),
                *("--cluster-config-file", "nodes.conf"),
                *("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
                *("--save", ""),
                *("--appendonly", "no"),
                *("--dir", str(node.directory)),
                *("--logfile", "redis.log"),
                # A replica syncs as soon as it asks (default: 5 s later), so the cluster
                # is ready for a failover moments after it starts.
                *("--repl-diskless-sync-delay", "0"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=children.with_parent(),
        )

    def _join_masters(self) -> None:
        """Masters only, each with an equal range of the 16,384 slots."""
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self._cli_run("cluster", "meet", node.host, str(node.port), node=first)
        share = 16384 // len(self.nodes)
        for index, node in enumerate(self.nodes):
            low = index * share
            high = 16383 if node is self.nodes[-1] else low + share - 1
            self._cli_run("cluster", "addslotsrange", str(low), str(high), node=node)

    def _cli_run(self, *args: str, node: ClusterNode) -> str:
        """``redis-cli ARGS`` on ``node``'s host, talking to ``node``."""
        command = [*node.prefix, self._cli, "-h", node.host, "-p", str(node.port)]
        result = subprocess.run(  # noqa: S603 - the Debian binary, fixed options
            [*command, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            preexec_fn=children.with_parent(),
        )
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def _answers(self, node: ClusterNode) -> bool:
        """Wait until ``node`` answers PING (True), or its process exited (False)."""
        deadline = time.monotonic() + START_DEADLINE
        while True:
            probe = subprocess.run(  # noqa: S603 - the Debian binary, fixed options
                [*node.prefix, self._cli, "-h", node.host, "-p", str(node.port), "ping"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
                preexec_fn=children.with_parent(),
            )
            if probe.stdout.strip() == "PONG":
                return True
            if node.process is None or node.process.poll() is not None:
                return False
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer on {node.port}")
            time.sleep(0.05)  # a starting server: there is no event to wait on

    def info(self, node: ClusterNode, section: str = "info") -> dict[str, str]:
        """``CLUSTER INFO`` (or ``INFO <section>``) of one node as a dict."""
        args = ("cluster", "info") if section == "info" else ("info", section)
        text = self._cli_run(*args, node=node)
        fields = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {key.strip(): value.strip() for key, value in fields}

    def living(self) -> list[ClusterNode]:
        """The nodes whose process runs (and that answer: not frozen or cut off)."""
        return [
            n
            for n in self.nodes
            if n.process is not None and n.process.poll() is None and not n.silent
        ]

    def wait_ok(self, deadline_seconds: float = START_DEADLINE) -> None:
        """Until every living node reports ``cluster_state:ok`` with all slots served."""
        deadline = time.monotonic() + deadline_seconds
        while True:
            states = [self.info(node) for node in self.living()]
            if all(
                s.get("cluster_state") == "ok" and s.get("cluster_slots_ok") == "16384"
                for s in states
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis Cluster is not ok: {states}")
            time.sleep(0.1)  # a cluster agreeing on its state: polled, as redis-cli does

    def wait_replicas_synced(self) -> None:
        """Until every replica's link to its master is up: a replica that has not synced
        yet cannot take over when its master dies."""
        deadline = time.monotonic() + START_DEADLINE
        while True:
            links = [self.info(n, "replication") for n in self.living()]
            if all(
                link.get("master_link_status") == "up" for link in links if link["role"] == "slave"
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster replicas did not sync: {links}")
            time.sleep(0.1)  # replication starting: polled, as redis-cli does

    def masters(self) -> list[ClusterNode]:
        """The living nodes that are masters now."""
        return [n for n in self.living() if self.info(n, "replication")["role"] == "master"]

    def master_of(self, slot: int) -> ClusterNode:
        """The living master serving ``slot``."""
        master = self.serving(slot)
        if master is None:
            raise AssertionError(f"no master serves slot {slot}")
        return master

    def serving(self, slot: int) -> ClusterNode | None:
        """The master serving ``slot`` as the cluster sees it now (None: none)."""
        for node, slots in self._slot_map().items():
            if slot in slots:
                return node
        return None

    def slots_of(self, node: ClusterNode) -> set[int]:
        """The slots ``node`` serves as a master now."""
        return self._slot_map().get(node, set())

    def _slot_map(self) -> dict[ClusterNode, set[int]]:
        """Each healthy master's slots, from ``CLUSTER NODES`` of a living node."""
        by_address = {n.address: n for n in self.nodes}
        served: dict[ClusterNode, set[int]] = {}
        for line in self._cli_run("cluster", "nodes", node=self.living()[0]).splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2] or "disconnected" in fields:
                continue
            node = by_address[fields[1].split("@")[0]]
            for ranges in fields[8:]:
                low, _, high = ranges.partition("-")
                if low.isdigit():
                    served.setdefault(node, set()).update(range(int(low), int(high or low) + 1))
        return served

    def wait_promoted(self, slot: int, victim: ClusterNode) -> None:
        """Until a master other than ``victim`` serves ``slot`` and the cluster is ok."""
        deadline = time.monotonic() + START_DEADLINE
        while self.serving(slot) in (None, victim):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no replica took over slot {slot} from {victim.address}")
            time.sleep(0.05)  # an election under way: polled, as redis-cli does
        self.wait_ok()

    def keyslot(self, key: str) -> int:
        """``CLUSTER KEYSLOT`` of a key (or shard channel)."""
        return int(self._cli_run("cluster", "keyslot", key, node=self.living()[0]))

    def shard_subscribers(self, channel: str) -> int:
        """``PUBSUB SHARDNUMSUB``: connections subscribed to ``channel`` on its master."""
        master = self.master_of(self.keyslot(channel))
        answer = self._cli_run("pubsub", "shardnumsub", channel, node=master).split()
        return int(answer[-1])

    def wait_shard_subscribers(self, channel: str, count: int) -> None:
        """Until ``count`` connections are subscribed to ``channel`` on its master."""
        deadline = time.monotonic() + START_DEADLINE
        while self.shard_subscribers(channel) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {count} subscribers to {channel}")
            time.sleep(0.1)  # subscriptions coming back: polled, as redis-cli does

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL one node: its connections drop at once."""
        if node.process is None:
            raise RuntimeError(f"{node.address} was never started")
        node.process.kill()
        node.process.wait(timeout=10)

    def freeze(self, node: ClusterNode) -> None:
        """SIGSTOP one node: its connections stay open and nothing answers."""
        if node.process is None:
            raise RuntimeError(f"{node.address} was never started")
        node.process.send_signal(signal.SIGSTOP)
        node.silent = True

    def thaw(self, node: ClusterNode) -> None:
        """SIGCONT after a freeze: it finds its slots served by another and follows it."""
        if node.process is not None:
            node.process.send_signal(signal.SIGCONT)
        node.silent = False

    def cut_off(self, node: ClusterNode, cut: bool = True) -> None:
        """Take ``node`` for cut off from the network (the caller partitions its host) and
        ask it nothing until it is back (``cut`` false): it would answer from its own
        stale view, still a master."""
        node.silent = cut

    def stop(self) -> None:
        """Every node gone."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.kill()
                node.process.wait(timeout=10)
