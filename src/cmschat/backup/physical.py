"""Physical MariaDB backups: ``mariadb-backup --stream=mbstream`` through zstd and age.

The copy's consistent point is chosen by ``mariadb-backup`` (position P1, from its log),
so the manifest's facts cannot be read beside it. Right after the copy the facts are read
in one consistent snapshot at binary-log position P2 (as incrementals do) and the binary
log P1→P2 is stored beside the copy: a drill prepares the copy, starts a scratch
``mariadbd`` on it, replays that short log, and only then counts.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyrage
from sqlalchemy.engine import make_url

from cmschat.backup.crypto import Sealed, open_sealed, seal_output
from cmschat.backup.mariadb import MariadbEngine, last_line
from cmschat.errors import CmschatError, Invalid

ARTIFACT = "database.mbstream.zst.age"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_POSITION = re.compile(r"binlog position: filename '([^']+)', position '(\d+)'")


def tool(name: str) -> str:
    """The path of a mariadb-backup tool; a one-line CmschatError when it is missing."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise CmschatError(
            f"backup: {name} is not installed (Debian package mariadb-backup); "
            "install it or set CMSCHAT_BACKUP__MARIADB_METHOD=dump"
        )
    return found


class PhysicalEngine(MariadbEngine):
    """A MariaDB database on this host, backed up as a physical copy of its files."""

    artifact = ARTIFACT

    def logical(self) -> MariadbEngine:
        """The same database as a dump engine: restores of ``mariadb-dump`` backups."""
        return MariadbEngine(self.url)

    def check_host(self) -> None:
        """Invalid when the database's host is not this one (asks the server nothing)."""
        host = make_url(self.url).host or "127.0.0.1"
        if host not in LOCAL_HOSTS:
            raise Invalid(
                f"backup: mariadb-backup copies the data directory, so the database must run "
                f"on this host, not {host}; use CMSCHAT_BACKUP__MARIADB_METHOD=dump"
            )

    def datadir(self) -> Path:
        """The server's data directory; Invalid when the server is not on this host."""
        self.check_host()
        datadir = Path(self.sql("SELECT @@datadir")[0][0])
        if not datadir.is_dir() or not os.access(datadir, os.R_OK | os.X_OK):
            raise Invalid(
                f"backup: mariadb-backup needs to read the data directory {datadir}; run it "
                "as a user that can (e.g. mysql) or use CMSCHAT_BACKUP__MARIADB_METHOD=dump"
            )
        return datadir

    def copy(self, staging: Path, recipients: list[str]) -> tuple[Sealed, dict[str, Any]]:
        """Stream the copy, sealed, into ``staging``; the binary-log position P1 it holds."""
        program = tool("mariadb-backup")
        datadir = self.datadir()
        if self.sql("SELECT @@log_bin")[0][0] != "1":
            raise Invalid(
                "backup: mariadb-backup needs binary logging on (log_bin=ON, "
                "binlog_format=ROW) so the manifest's counts can be made exact"
            )
        work = staging / "mariadb-backup"
        work.mkdir()
        errors = staging / "mariadb-backup.err"
        with self.defaults() as defaults, errors.open("w") as error_log:
            process = subprocess.Popen(  # noqa: S603 - fixed tool and options
                [
                    program,
                    defaults,  # must come first: an option file
                    "--backup",
                    "--stream=mbstream",
                    f"--datadir={datadir}",
                    f"--target-dir={work}",
                    f"--tmpdir={work}",
                    # cmschat's database, and the server's own (users, grants) so that
                    # a copy-back gives a server that starts; other databases stay out.
                    f"--databases=mysql {self.database}",
                ],
                stdout=subprocess.PIPE,
                stderr=error_log,
            )
            sealed, code = seal_output(process, staging / ARTIFACT, recipients)
        log = errors.read_text(errors="replace")
        if code != 0:
            raise CmschatError(f"backup: mariadb-backup failed: {last_line(log)}")
        found = _POSITION.search(log)
        if found is None:
            raise CmschatError("backup: mariadb-backup did not report its binary-log position")
        return sealed, {"file": found.group(1), "position": int(found.group(2))}


def unpack(source: Path, identity: pyrage.x25519.Identity, expected: Sealed, into: Path) -> None:
    """Decrypt the copy through ``mbstream -x`` into ``into`` and ``--prepare`` it."""
    into.mkdir(parents=True, exist_ok=True)
    errors = into.parent / "mbstream.err"
    with errors.open("w") as error_log:
        process = subprocess.Popen(  # noqa: S603 - fixed tool
            [tool("mbstream"), "-x", "-C", str(into)], stdin=subprocess.PIPE, stderr=error_log
        )
        assert process.stdin is not None  # noqa: S101 - asked for a pipe
        try:
            with source.open("rb") as reader:
                open_sealed(reader, process.stdin, identity, name=ARTIFACT, expected=expected)
        except BaseException:
            process.kill()
            process.wait()
            raise
        process.stdin.close()
        if process.wait() != 0:
            raise CmschatError(f"restore: mbstream failed: {last_line(errors.read_text())}")
    prepared = subprocess.run(  # noqa: S603 - fixed tool
        [tool("mariadb-backup"), "--prepare", f"--target-dir={into}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if prepared.returncode != 0:
        raise CmschatError(f"restore: mariadb-backup --prepare: {last_line(prepared.stderr)}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(port: int) -> bool:
    result = subprocess.run(  # noqa: S603 - fixed client
        ["mariadb-admin", "--protocol=tcp", "-h127.0.0.1", f"-P{port}", "-uroot", "ping"],  # noqa: S607
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


@contextlib.contextmanager
def scratch_server(datadir: Path, url: str) -> Iterator[str]:
    """A ``mariadbd`` on a prepared copy, on a spare port; yields ``url`` pointed at it.

    Grant tables are skipped (the copy's users need not include ours) and binary logging
    is off; the server is stopped whatever happens, its files are the caller's.
    """
    runtime = Path(tempfile.mkdtemp(prefix="cmschat-mariadbd-"))
    port = _free_port()
    options = ["--user=root"] if os.geteuid() == 0 else []
    config = datadir / "backup-my.cnf"  # the copy's InnoDB settings
    server = subprocess.Popen(  # noqa: S603 - the server binary, fixed options
        [
            shutil.which("mariadbd") or "/usr/sbin/mariadbd",
            f"--defaults-file={config}" if config.is_file() else "--no-defaults",
            *options,
            f"--datadir={datadir}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--socket={runtime / 'sock'}",
            f"--pid-file={runtime / 'pid'}",
            f"--log-error={runtime / 'error.log'}",
            "--skip-grant-tables",
            "--skip-log-bin",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not _answers(port):
            if server.poll() is not None or time.monotonic() > deadline:
                log = (runtime / "error.log").read_text(errors="replace")
                raise CmschatError(f"restore: the scratch mariadbd did not start: {last_line(log)}")
            time.sleep(0.2)  # a starting server has no event to wait on
        parsed = make_url(url).set(host="127.0.0.1", port=port, username="root", password=None)
        yield parsed.render_as_string(hide_password=False)
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(runtime, ignore_errors=True)
