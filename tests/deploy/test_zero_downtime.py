"""Issue 17 point 5: releases under load drop no request and lose no message.

The shipped nginx site (deploy/nginx, TLS on spare ports) in front of two cmschat slots on
the suite's MariaDB and Redis, started, switched and stopped by the release tool
(deploy/release) as an operator runs it. For a minute, clients use only nginx's HTTPS
port: HTTP senders and WebSocket senders (each message retried with its ``client_id``
until acknowledged) and WebSocket readers that reconnect and resume from their last
``seq``. Meanwhile: blue -> green, green -> blue, both slots up, then a rolling release.

It passes only if no HTTP request failed (no transport error, no status but 200/201; a post
whose kept-alive connection nginx closed as it went out, at a reload, is sent again at once
on a new connection, as browsers do, and counted apart), the
servers closed WebSockets only with 1012 (restart) and every reader resumed, every reader
got every message exactly once and in order, and the room holds each acknowledged message
exactly once. The figures it prints are in docs/deploy.md.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import support
from tests.deploy import colours
from tests.deploy.nginx_site import NGINX, Ports, install_site, running_nginx
from tests.faults.cluster import cluster_environment, room_of_everyone
from tests.faults.load import (
    Reader,
    Traffic,
    check_exactly_once_in_order,
    sender,
    wait_until_caught_up,
    ws_sender,
)
from tests.faults.test_under_load import newest_seq, stored_client_ids
from tests.processes import free_port
from tests.realtime.wsclient import token_of

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.redis]

USERS = ("ann", "ben", "cho", "dan")
WS_SENDERS = 2
LOAD_SECONDS = 60.0
RELEASES = (("blue-green", "v2"), ("blue-green", "v3"), ("up", "v3"), ("rolling", "v4"))
CATCH_UP_WITHIN = 30.0


@dataclass(frozen=True)
class Front:
    """nginx's public side, where the clients go (as the fault suite's go to a server)."""

    base_url: str


async def test_releases_under_load_drop_no_request_and_lose_no_message(
    tmp_path: Path, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not NGINX.exists():
        support.required_file_missing(NGINX, "nginx is the front of the releases")
    support.mariadb_available()
    database = await support.create_mariadb_database()
    try:
        figures = await _releases_under_load(tmp_path, database, redis_prefix, monkeypatch)
    finally:
        await support.drop_mariadb_database(database)
    print(json.dumps(figures))


async def _releases_under_load(
    directory: Path, database: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, object]:
    env = cluster_environment(
        directory,
        database_url=database,
        redis_url=support.REDIS_URL,
        users=USERS,
        CMSCHAT_REDIS_PREFIX=redis_prefix,
        CMSCHAT_TRUSTED_PROXIES="127.0.0.1",
        CMSCHAT_SHUTDOWN_GRACE_SECONDS="10",
    )
    prefix = directory / "nginx"
    prefix.mkdir()
    # The shipped upstream names a port nothing listens on: no slot is live yet.
    ports = Ports(http=free_port(), https=free_port(), app=free_port())
    conf = install_site(prefix, ports)
    certificate = prefix / "cmschat" / "tls" / "fullchain.pem"
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))  # the clients trust nginx's cert
    nginx = f"{NGINX} -p {prefix}/ -c {conf}"
    env |= colours.runner_settings(directory) | {
        "RELEASE_SLOTS": f"blue=127.0.0.1:{free_port()} green=127.0.0.1:{free_port()}",
        "RELEASE_UPSTREAM_FILE": str(prefix / "cmschat" / "upstream.conf"),
        "RELEASE_NGINX_TEST": f"{nginx} -t -q",
        "RELEASE_NGINX_RELOAD": f"{nginx} -s reload",
        "RELEASE_NGINX_PID_FILE": str(prefix / "nginx.pid"),
        "RELEASE_CHECK_URL": f"https://127.0.0.1:{ports.https}/readyz",
        "RELEASE_CHECKS": "2",
        "SSL_CERT_FILE": str(certificate),
    }
    try:
        with running_nginx(conf, ports):
            first = await asyncio.to_thread(colours.release, env, "blue-green", "v1")
            assert first.returncode == 0, first.stdout + first.stderr
            return await _load(Front(f"https://127.0.0.1:{ports.https}"), env)
    finally:
        colours.kill_left(directory)


async def _load(front: Front, env: dict[str, str]) -> dict[str, object]:
    servers = [front]
    heads, room = await room_of_everyone(front, USERS)
    traffic = Traffic()
    stop_sending, stop_reading = asyncio.Event(), asyncio.Event()
    readers = [Reader(token_of(heads[user]), room) for user in USERS]
    reading = [asyncio.create_task(reader.run(servers, 0, stop_reading)) for reader in readers]
    sending = [
        asyncio.create_task(sender(servers, heads[u], room, u, traffic, stop_sending))
        for u in USERS
    ]
    sending += [
        asyncio.create_task(
            ws_sender(servers, token_of(heads[u]), room, f"ws{u}", traffic, stop_sending)
        )
        for u in USERS[:WS_SENDERS]
    ]
    started = time.monotonic()
    took: list[str] = []
    try:
        for command, image in RELEASES:
            began = time.monotonic()
            done = await asyncio.to_thread(colours.release, env, command, image)
            assert done.returncode == 0, done.stdout + done.stderr
            took.append(f"{command} {image}: {time.monotonic() - began:.1f} s")
        # The rest of the minute at steady load, after the last release.
        await asyncio.sleep(max(0.0, LOAD_SECONDS - (time.monotonic() - started)))
    finally:
        stop_sending.set()
        await asyncio.gather(*sending)
    last = await newest_seq(servers, heads["ann"], room)
    caught_up = await wait_until_caught_up(readers, last, CATCH_UP_WITHIN)
    stop_reading.set()
    await asyncio.gather(*reading)

    stored = await stored_client_ids(front, heads["ann"], room)
    closes = Counter(code for reader in readers for code in reader.close_codes.elements())
    closes.update(traffic.ws_close_codes)
    figures: dict[str, object] = {
        "seconds": round(time.monotonic() - started, 1),
        "releases": took,
        "messages": last,
        "http": dict(traffic.statuses),
        "http_transport_errors": traffic.transport_errors,
        "http_resent_after_close": traffic.resent,
        "http_errors_by_kind": dict(traffic.errors),
        "ws_acks": traffic.ws_acks,
        "ws_refusals": dict(traffic.ws_refusals),
        "ws_closes": {str(code): n for code, n in closes.items()},
        "reader_reconnects": [reader.reconnects for reader in readers],
        "readers_caught_up_s": round(caught_up, 2),
        "lost": len(traffic.acknowledged - set(stored)),
        "duplicated": len(stored) - len(set(stored)),
    }
    print(json.dumps(figures))

    assert traffic.transport_errors == 0, figures
    assert set(traffic.statuses) <= {200, 201}, figures
    assert set(closes) <= {1012}, figures  # the old slot's drain, nothing else
    for reader in readers:
        assert reader.reconnects >= 2, figures  # blue -> green -> blue at least
        check_exactly_once_in_order(reader, 1, last)
    assert len(stored) == len(set(stored)), figures
    assert set(stored) == traffic.acknowledged, figures
    assert traffic.ws_acks > 0 and traffic.statuses[201] > 0, figures
    return figures
