"""Hosts of the suite's own on one machine: network namespaces joined by veth pairs to a
bridge, each with one address, and faults per host (partitions by nftables inside the
host's namespace; every process of the host killed).

The bridge has no address: the machine itself is on none of these networks, so whatever
crosses between hosts crosses their interfaces, where the partitions drop it. Latency
injection (``tc qdisc ... netem``) is not available here (the kernel has no netem
module: "Specified qdisc kind is unknown"), so faults are partitions and kills.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from bench import children
from tests.support import service_missing

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
SUBNET = ipaddress.ip_network("10.213.0.0/24")
"""The hosts' network. Each test network is its own bridge and namespaces, so two runs at
once (a developer's and CI's) may both use it."""
PARTITION_TABLE = "cmschat_partition"
KILL_DEADLINE = 10.0


def _ip(*args: str) -> None:
    subprocess.run(  # noqa: S603 - iproute2 with our own arguments
        ["ip", *args],  # noqa: S607
        check=True,
        capture_output=True,
        preexec_fn=children.with_parent(),
    )


def _enter(namespace: str) -> None:
    """Move the calling thread (only it: a network namespace is per thread) into
    ``namespace``; sockets it opens afterwards live there."""
    libc = ctypes.CDLL(None, use_errno=True)
    descriptor = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(descriptor, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
    finally:
        os.close(descriptor)


@dataclass
class Host:
    """One machine of the test network: a namespace with one interface and address."""

    name: str
    namespace: str
    address: str
    partitioned_from: list[str] = field(default_factory=list)

    def command(self, *args: str) -> list[str]:
        """``args`` run on this host."""
        return ["ip", "netns", "exec", self.namespace, *args]

    def call(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` on a thread of this host (its sockets are the host's); the
        thread ends with the call."""
        with ThreadPoolExecutor(1, initializer=_enter, initargs=(self.namespace,)) as thread:
            return thread.submit(function, *args).result()

    def reaches(self, other: Host, port: int, within: float = 1.0) -> bool:
        """Whether a TCP connection from this host to ``other``'s ``port`` opens."""

        def connect() -> bool:
            try:
                socket.create_connection((other.address, port), timeout=within).close()
            except OSError:
                return False
            return True

        return self.call(connect)

    def partition(self, *others: Host) -> None:
        """Drop every packet between this host and ``others``, in this host's namespace
        (a silent loss: no reset, no ICMP; both sides find out by their own timeouts)."""
        self.partitioned_from += [other.address for other in others]
        rules = "\n".join(
            f"add rule inet {PARTITION_TABLE} {chain} ip {direction} {address} drop"
            for address in self.partitioned_from
            for chain, direction in (("input", "saddr"), ("output", "daddr"))
        )
        self._nft(
            f"""
            table inet {PARTITION_TABLE}
            delete table inet {PARTITION_TABLE}
            table inet {PARTITION_TABLE} {{
                chain input {{ type filter hook input priority 0; policy accept; }}
                chain output {{ type filter hook output priority 0; policy accept; }}
            }}
            {rules}
            """
        )

    def heal(self) -> None:
        """Every partition of this host lifted."""
        self.partitioned_from.clear()
        self._nft(f"table inet {PARTITION_TABLE}\ndelete table inet {PARTITION_TABLE}\n")

    def _nft(self, script: str) -> None:
        result = subprocess.run(  # noqa: S603 - nft from Debian, our own rules
            self.command(shutil.which("nft") or "/usr/sbin/nft", "-f", "-"),
            input=script,
            text=True,
            capture_output=True,
            check=False,
            preexec_fn=children.with_parent(),
        )
        assert result.returncode == 0, result.stderr

    def pids(self) -> set[int]:
        """Every process running on this host."""
        listed = subprocess.run(  # noqa: S603
            ["ip", "netns", "pids", self.namespace],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
            preexec_fn=children.with_parent(),
        )
        return {int(pid) for pid in listed.stdout.split()}

    def kill_all(self) -> int:
        """SIGKILL every process of this host, as a machine that loses power (its kernel
        stays: their sockets are closed by it, as a crashed process's are); how many."""
        killed: set[int] = set()
        deadline = time.monotonic() + KILL_DEADLINE
        while pids := self.pids():
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes of {self.name} outlived SIGKILL: {pids}")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)  # the kernel reaping them: nothing to wait on
        return len(killed)


class Network:
    """A bridge and the hosts on it; everything removed on ``close``."""

    def __init__(self) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            service_missing("network namespaces (root and iproute2)", PermissionError())
        if shutil.which("nft") is None and not os.path.exists("/usr/sbin/nft"):
            service_missing("nft", FileNotFoundError("nft (scripts/deploy-tools)"))
        self._tag = secrets.token_hex(3)
        self.bridge = f"cmsbr{self._tag}"
        self.hosts: dict[str, Host] = {}
        self._addresses = SUBNET.hosts()
        next(self._addresses)  # .1 stays free, as a gateway's would
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("link", "set", self.bridge, "addrgenmode", "none")  # not even a link-local address
        _ip("link", "set", self.bridge, "up")

    def add(self, name: str) -> Host:
        """A new host called ``name``, up, with the next address."""
        namespace = f"cmschat-{self._tag}-{name}"
        address = str(next(self._addresses))
        outside = f"cms{self._tag}{len(self.hosts)}"
        _ip("netns", "add", namespace)
        self.hosts[name] = host = Host(name, namespace, address)
        _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("link", "set", outside, "addrgenmode", "none")
        _ip("link", "set", outside, "master", self.bridge, "up")
        _ip("-n", namespace, "addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        return host

    def close(self) -> None:
        """Every host's processes killed, its namespace (and veth) and the bridge removed."""
        for host in self.hosts.values():
            host.kill_all()
            _ip("netns", "del", host.namespace)
        _ip("link", "del", self.bridge)


@contextmanager
def network(*names: str) -> Iterator[Network]:
    """A test network with hosts called ``names``, removed afterwards."""
    built = Network()
    try:
        for name in names:
            built.add(name)
        yield built
    finally:
        built.close()
