"""The firewall in deploy/firewall: nft accepts the ruleset, ufw.sh parses and opens the
same ports, and the ruleset, loaded into a scratch network namespace exactly as shipped,
lets through what its README promises and silently drops the rest."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import children
from tests import commands
from tests.support import required_file_missing, service_missing

FIREWALL = Path(__file__).resolve().parents[2] / "deploy" / "firewall"
RULESET = FIREWALL / "cmschat.nft"
UFW = FIREWALL / "ufw.sh"
NFT = Path("/usr/sbin/nft")
IP = Path("/usr/sbin/ip")
TIMEOUT = 30.0
DROP_WAIT = 2.0
"""How long a probe waits for an answer before calling the port dropped (no answer at all,
unlike a closed port's reset): on one veth link an accepted connect takes milliseconds."""

# Both ends of one veth link; the addresses are the shipped ruleset's placeholder ranges.
SERVER = ["192.0.2.1/24", "10.0.0.1/24", "198.51.100.1/24", "2001:db8:a::1/64", "2001:db8:ff::1/64"]
CLIENTS = {  # name: (the client's address, the server's address on the same subnet)
    "admin": ("192.0.2.10", "192.0.2.1"),
    "private": ("10.0.0.20", "10.0.0.1"),
    "stranger": ("198.51.100.30", "198.51.100.1"),
    "admin6": ("2001:db8:a::10", "2001:db8:a::1"),
    "stranger6": ("2001:db8:ff::30", "2001:db8:ff::1"),
}
PORTS = [22, 80, 443, 3306, 6379, 8000]
OPEN = {
    "admin": {22, 80, 443},
    "private": {80, 443, 3306, 6379},
    "stranger": {80, 443},
    "admin6": {22, 80, 443},
    "stranger6": {80, 443},
}
RETURN_PORT = 5000  # a listener on the client side, for the server's own connections

LISTEN = """
import socket, sys
sockets = []
for port in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(64)
    sockets.append(s)
print("ready", flush=True)
sys.stdin.read()
"""

PROBE = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
wait = float(sys.argv[1])
def probe(item):
    source, host, port = item
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.settimeout(wait)
        if source:
            s.bind((source, 0))
        try:
            s.connect((host, port))
        except TimeoutError:
            return "dropped"
        except ConnectionRefusedError:
            return "refused"
        return "open"
items = json.loads(sys.argv[2])
with ThreadPoolExecutor(len(items)) as pool:
    print(json.dumps(list(pool.map(probe, items))))
"""


@pytest.fixture(autouse=True)
def tools_installed() -> None:
    """Skip locally (fail in CI) without Debian's nftables (scripts/deploy-tools)."""
    if not NFT.exists():
        required_file_missing(NFT, "nftables is not installed (scripts/deploy-tools)")


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, its output captured."""
    return commands.run(command, timeout=TIMEOUT)


def test_nft_accepts_the_ruleset() -> None:
    checked = run(NFT, "-c", "-f", RULESET)
    assert checked.returncode == 0, checked.stderr


def test_ufw_sh_parses() -> None:
    parsed = run("/bin/bash", "-n", UFW)
    assert parsed.returncode == 0, parsed.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck:  # optional: not among the test tools
        linted = run(shellcheck, UFW)
        assert linted.returncode == 0, linted.stdout


def without_comments(path: Path) -> str:
    """The lines of a script or ruleset that are not comments."""
    return "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
    )


def test_ufw_sh_opens_the_ports_the_ruleset_does() -> None:
    opened = {int(port) for port in re.findall(r"\bport (\d+)\b", without_comments(UFW))}
    rules = without_comments(RULESET).split("chain input", 1)[1]
    listed = re.findall(r"tcp dport (\d+|\{[^}]*\}) ", rules)
    in_nft = {int(port) for group in listed for port in re.findall(r"\d+", group)}
    assert opened == in_nft == {22, 80, 443, 3306, 6379}


# The ruleset loaded for real, between two network namespaces.


@dataclass
class Link:
    """A "server" namespace with the ruleset and listeners, a "client" namespace on the
    other end of a veth pair."""

    server: str
    client: str

    def probe(self, namespace: str, items: Sequence[tuple[str | None, str, int]]) -> list[str]:
        """From ``namespace``, connect (from source, to host, port) for each item, all at
        once: "open", "refused" or "dropped" (no answer within DROP_WAIT)."""
        answer = run(
            IP, "netns", "exec", namespace, sys.executable, "-c", PROBE, str(DROP_WAIT),
            json.dumps(items),
        )  # fmt: skip
        assert answer.returncode == 0, answer.stderr
        results: list[str] = json.loads(answer.stdout)
        return results


def netns(*args: str) -> None:
    """``ip ARGS``, failing with its message."""
    done = run(IP, *args)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr}"


@contextmanager
def listening(namespace: str, ports: list[int]) -> Iterator[None]:
    """TCP listeners on every address of ``namespace`` until the block ends."""
    process = subprocess.Popen(  # noqa: S603 - our interpreter in our namespace
        [str(IP), "netns", "exec", namespace, sys.executable, "-c", LISTEN, *map(str, ports)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=children.with_parent(),
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()  # printed once every port is bound
        assert ready == "ready\n", process.stderr.read() if process.stderr else ""
        yield
    finally:
        process.kill()
        process.communicate(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def link() -> Iterator[Link]:
    """The two namespaces (unique names), the ruleset loaded in the server's, listeners on
    both sides; the namespaces are deleted afterwards whatever happened."""
    if not NFT.exists():
        required_file_missing(NFT, "nftables is not installed (scripts/deploy-tools)")
    if not IP.exists():
        required_file_missing(IP, "iproute2 is not installed")
    tag = secrets.token_hex(3)
    server, client = f"cmschat-fw-{tag}-server", f"cmschat-fw-{tag}-client"
    made = run(IP, "netns", "add", server)
    if made.returncode != 0:  # not root, or a container that forbids it
        service_missing("network namespaces", OSError(made.stderr.strip()))
    try:
        netns("netns", "add", client)
        netns("-n", server, "link", "add", "eth0", "type", "veth", "peer", "eth0", "netns", client)
        for namespace, addresses in ((server, SERVER), (client, [a for a, _ in CLIENTS.values()])):
            for address in addresses:
                prefix = "/64" if ":" in address else "/24"
                full = address if "/" in address else address + prefix
                netns("-n", namespace, "addr", "add", full, "dev", "eth0", "nodad")
            netns("-n", namespace, "link", "set", "lo", "up")
            netns("-n", namespace, "link", "set", "eth0", "up")
        loaded = run(IP, "netns", "exec", server, NFT, "-f", RULESET)
        assert loaded.returncode == 0, loaded.stderr
        with listening(server, PORTS), listening(client, [RETURN_PORT]):
            yield Link(server, client)
    finally:
        for namespace in (server, client):
            run(IP, "netns", "delete", namespace)


def test_each_source_reaches_exactly_its_ports(link: Link) -> None:
    items = [(source, target, port) for source, target in CLIENTS.values() for port in PORTS]
    results = iter(link.probe(link.client, items))
    seen = {name: {port: next(results) for port in PORTS} for name in CLIENTS}
    expected = {
        name: {port: "open" if port in OPEN[name] else "dropped" for port in PORTS}
        for name in CLIENTS
    }
    assert seen == expected


def test_the_server_reaches_itself_and_gets_answers_to_its_own_connections(
    link: Link,
) -> None:
    """Loopback (nginx to cmschat on 8000) and replies to connections the host opened
    (to its database, say) pass; neither is open to the world."""
    results = link.probe(
        link.server,
        [
            (None, "127.0.0.1", 8000),
            (None, "::1", 3306),
            ("198.51.100.1", CLIENTS["stranger"][0], RETURN_PORT),
            ("2001:db8:ff::1", CLIENTS["stranger6"][0], RETURN_PORT),
        ],
    )
    assert results == ["open"] * 4
