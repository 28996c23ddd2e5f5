"""The shipped nginx site (deploy/nginx) installed into a scratch prefix, for ``nginx -t``
and for a real nginx on spare ports.

The shipped files name their production paths and ports. ``install_site`` copies them with
only these substitutions, each of which must find its text (so the copy cannot silently
drift from what operators install):

- ``/etc/nginx/cmschat/`` (upstream, snippets, certificates) -> ``PREFIX/cmschat/``;
- ``/srv/cmschat/web`` -> this checkout's ``web/``;
- ``listen 80``/``443`` (and ``[::]``) -> loopback on spare ports;
- the blue/green upstream's ``127.0.0.1:800N`` -> the test's cmschat port.

Around it goes a minimal nginx.conf (pid, logs and temp files in the prefix) that includes
the site at http level, as Debian's nginx.conf includes conf.d/*.conf.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import children
from tests.commands import run, stop
from tests.support import required_file_missing

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "deploy" / "nginx"
WEB = REPO / "web"
NGINX = Path("/usr/sbin/nginx")
MIME_TYPES = Path("/etc/nginx/mime.types")
SNIPPETS = ("hsts.conf", "security-headers.conf", "proxy.conf")
UPSTREAM_PORTS = {"blue": 8001, "green": 8002}
START_DEADLINE = 15.0
STOP_DEADLINE = 10.0


@dataclass(frozen=True)
class Ports:
    """Where the test's nginx listens and where its cmschat is."""

    http: int
    https: int
    app: int


def substituted(text: str, replacements: dict[str, str]) -> str:
    """``text`` with each replacement made; fails if one finds nothing to replace."""
    for old, new in replacements.items():
        assert old in text, f"the shipped nginx file no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def make_certificate(directory: Path) -> None:
    """A self-signed RSA certificate for 127.0.0.1 and localhost, as fullchain.pem and
    privkey.pem (RSA, so a cipher list that allowed RSA key exchange would show)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        required_file_missing(Path("openssl"), "openssl makes the test's certificate")
    subprocess.run(  # noqa: S603 - fixed arguments
        [
            str(openssl),
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(directory / "privkey.pem"),
            "-out",
            str(directory / "fullchain.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
        preexec_fn=children.with_parent(),
    )


def install_site(prefix: Path, ports: Ports, colour: str = "blue") -> Path:
    """The shipped site with its includes and a certificate under ``prefix``, and an
    nginx.conf around it; returns the nginx.conf."""
    etc = prefix / "cmschat"
    (etc / "tls").mkdir(parents=True)
    make_certificate(etc / "tls")
    moved = {"/etc/nginx/cmschat/": f"{etc}/"}
    for name in SNIPPETS:
        text = (SHIPPED / name).read_text()
        if "/etc/nginx/cmschat/" in text:
            text = substituted(text, moved)
        (etc / name).write_text(text)
    upstream = (SHIPPED / f"upstream.{colour}.conf").read_text()
    listen = f"127.0.0.1:{UPSTREAM_PORTS[colour]}"
    (etc / "upstream.conf").write_text(substituted(upstream, {listen: f"127.0.0.1:{ports.app}"}))
    site = substituted(
        (SHIPPED / "cmschat.conf").read_text(),
        {
            **moved,
            "/srv/cmschat/web": str(WEB),
            "listen 80;": f"listen 127.0.0.1:{ports.http};",
            "listen [::]:80;": f"listen [::1]:{ports.http};",
            "listen 443 ssl http2;": f"listen 127.0.0.1:{ports.https} ssl http2;",
            "listen [::]:443 ssl http2;": f"listen [::1]:{ports.https} ssl http2;",
        },
    )
    (prefix / "cmschat.conf").write_text(site)
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / 'temp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, workers would run as "nobody" and could not read the scratch prefix.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} info;\nevents {{}}\nhttp {{\n"
        f"    include {MIME_TYPES};\n    default_type application/octet-stream;\n"
        f"    access_log {prefix / 'access.log'};\n{temp}\n"
        f"    include {prefix / 'cmschat.conf'};\n}}\n"
    )
    (prefix / "temp").mkdir()
    return conf


def check(conf: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on ``conf``, its prefix being the directory it is in."""
    return run([str(NGINX), "-t", "-p", f"{conf.parent}/", "-c", str(conf)], timeout=60)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def running_nginx(conf: Path, ports: Ports) -> Iterator[subprocess.Popen[bytes]]:
    """nginx on ``conf`` in the foreground until the block ends, then stopped (SIGQUIT,
    which lets open connections finish, and a kill if it hangs)."""
    with (conf.parent / "nginx.stderr").open("wb") as err:
        process = subprocess.Popen(  # noqa: S603 - the system nginx on our own file
            [str(NGINX), "-p", f"{conf.parent}/", "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            preexec_fn=children.with_parent(),
        )
    try:
        deadline = time.monotonic() + START_DEADLINE
        while not (listening(ports.https) and listening(ports.http)):
            if process.poll() is not None or time.monotonic() > deadline:
                log = (conf.parent / "error.log").read_text(errors="replace")
                pytest.fail(f"nginx did not start (exit {process.poll()}):\n{log}")
            time.sleep(0.05)
        yield process
    finally:
        stop(process, signal.SIGQUIT, STOP_DEADLINE)
