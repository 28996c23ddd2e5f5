"""Attachment throughput: one large upload and download through the API, and server memory.

One ``cmschat serve`` (SQLite), storage either the embedded default (a local directory) or
``--storage s3``: a moto S3 server (``ThreadedMotoServer``, dummy credentials) that the
bench starts on 127.0.0.1 in a child process of its own, so moto's CPU and memory are not
mixed with the client's. Each run:

1. uploads a ``--size-mib`` file named ``bench.zip`` (content starts with ``PK\\x03\\x04``,
   the rest pseudo-random, made 1 MiB at a time) with ``POST
   /api/v1/rooms/{id}/attachments``: the multipart body is streamed from an async generator
   with a Content-Length, so neither side ever needs the whole file in memory;
2. downloads it with ``GET /api/v1/attachments/{id}``, streamed and discarded, and checks
   that its sha256 equals the one the server answered the upload with (and the one the bench
   computed before sending).

Reported per run and as the median: upload and download MiB/s and seconds, server RSS
before, peak during (``VmRSS`` polled every 20 ms by a background thread, and ``VmHWM``,
reset through ``/proc/PID/clear_refs`` before each run) and after, growth (peak - before),
and server CPU seconds. A 1 MiB upload + download before the first run loads whatever the
server imports lazily, so that one-off cost is not counted as growth.

Goal (issue): >= 200 MiB/s each way, server memory growth <= 16 MiB. ``--profile SECONDS``
records the server with py-spy while it takes uploads (or downloads, ``--profile-phase``)
back to back, after the measured runs, and prints the hot spots. ``--baseline`` (s3) also
uploads the same file straight to moto with boto3, the way the server does (8 MiB parts one
after the other, then complete): the most the moto endpoint allows on this machine.

Run::

    .venv/bin/python bench/attachments.py --size-mib 100 --runs 3
    .venv/bin/python bench/attachments.py --size-mib 100 --runs 3 --storage s3 --baseline
    .venv/bin/python bench/attachments.py --storage s3 --runs 3 --profile 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import resource
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import children
import common
import httpx

MIB = 1 << 20
CHUNK = MIB
FILENAME = "bench.zip"
ZIP_MAGIC = b"PK\x03\x04"
GOAL_MIB_S = 200.0
GOAL_GROWTH_MIB = 16.0
PART_SIZE = 8 * MIB  # as cmschat.attachments.storage.PART_SIZE (for --baseline)
PHASE_TIMEOUT = 170.0  # seconds for one upload or one download
BUCKET = "cmschat-bench"
S3_PREFIX = "attachments"
S3_KEY_ID = "benchkey"
S3_SECRET = "benchsecret"  # noqa: S105 - a dummy credential for a local moto server

# The moto server: a child process so it has its own GIL, CPU time and memory.
MOTO_SCRIPT = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address=sys.argv[1], port=int(sys.argv[2]), verbose=False)
server.start()
print("ready", flush=True)
sys.stdin.read()  # until the bench closes our stdin
server.stop()
"""


# -- the file ---------------------------------------------------------------------------


def file_chunks(size: int, seed: int) -> Iterator[bytes]:
    """The file, 1 MiB at a time: a zip signature, then pseudo-random bytes.

    One random MiB is made once; each chunk is that MiB with its own index in the first
    8 bytes, so no two chunks are equal and at most two MiB exist at any time.
    """
    block = random.Random(seed).randbytes(CHUNK)
    offset = index = 0
    while offset < size:
        n = min(CHUNK, size - offset)
        head = index.to_bytes(8, "big")
        if index == 0:
            head = ZIP_MAGIC + head[4:]
        yield (head + block[8:n])[:n]
        offset += n
        index += 1


def file_sha256(size: int, seed: int) -> str:
    """The sha256 of the file, computed before sending it (not in the timed window)."""
    digest = hashlib.sha256()
    for chunk in file_chunks(size, seed):
        digest.update(chunk)
    return digest.hexdigest()


class MultipartBody:
    """A multipart/form-data body with one ``file`` part, produced as a stream."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.boundary = "bench" + secrets.token_hex(16)
        self.head = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{FILENAME}"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.sent_at = 0.0  # perf_counter when the client had written the last byte

    @property
    def headers(self) -> dict[str, str]:
        """Content-Type with the boundary, and the exact length (no chunked encoding)."""
        return {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(len(self.head) + self.size + len(self.tail)),
        }

    async def stream(self) -> AsyncIterator[bytes]:
        """The body, the file part 1 MiB at a time."""
        yield self.head
        for chunk in file_chunks(self.size, self.seed):
            yield chunk
        yield self.tail
        self.sent_at = time.perf_counter()


# -- server memory ----------------------------------------------------------------------


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def reset_hwm(pid: int) -> bool:
    """Reset the process's VmHWM (peak RSS) to its current RSS; False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


class RssSampler:
    """VmRSS of a process every ``interval`` seconds on a background thread; peak per phase.

    A thread, not an asyncio task, so the cadence holds while the event loop is busy
    with the transfer.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.phase = "idle"
        self.peaks: dict[str, int] = {}
        self.samples = 0
        self.max_gap = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _loop(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            try:
                rss = common.rss_kib(self.pid)
            except (OSError, RuntimeError):
                return
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - last)
            last = now
            self.samples += 1
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# -- moto -------------------------------------------------------------------------------


class MotoServer:
    """moto's ThreadedMotoServer in a child process on a free loopback port."""

    def __init__(self) -> None:
        self.port = common.free_port()
        self.url = f"http://{common.HOST}:{self.port}"
        self.process: subprocess.Popen[str] | None = None

    def launch(self) -> None:
        """Start it, from the thread that outlives it (it dies with that thread)."""
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed script
            [sys.executable, "-c", MOTO_SCRIPT, common.HOST, str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            preexec_fn=children.with_parent(),
        )

    def wait_ready(self) -> None:
        """Wait for the launched server to answer, and create the bucket."""
        assert self.process is not None and self.process.stdout is not None  # noqa: S101
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the moto server did not start")
        client = self.client()
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def client(self) -> Any:
        """A boto3 S3 client for the moto server."""
        import boto3

        return boto3.session.Session(
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        ).client("s3", endpoint_url=self.url)

    def direct_upload(self, size: int, seed: int) -> dict[str, float]:
        """The same file straight to moto with boto3, as the server sends it: parts of
        ``PART_SIZE`` one after the other, SSE-S3, then complete. Seconds and MiB/s."""
        client = self.client()
        where = {"Bucket": BUCKET, "Key": f"baseline/{seed}"}
        cpu0 = common.cpu_seconds(self.pid)
        started = time.perf_counter()
        upload_id = client.create_multipart_upload(**where, ServerSideEncryption="AES256")[
            "UploadId"
        ]
        parts: list[dict[str, Any]] = []
        buffer: list[bytes] = []
        chunks = file_chunks(size, seed)
        while True:
            chunk = next(chunks, None)
            if chunk is not None:
                buffer.append(chunk)
            if buffer and (chunk is None or sum(map(len, buffer)) >= PART_SIZE):
                number = len(parts) + 1
                answer = client.upload_part(
                    **where, UploadId=upload_id, PartNumber=number, Body=b"".join(buffer)
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                buffer = []
            if chunk is None:
                break
        before_complete = time.perf_counter()
        client.complete_multipart_upload(
            **where, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        took = time.perf_counter() - started
        client.delete_object(**where)
        return {
            "direct_upload_s": took,
            "direct_upload_mib_s": size / MIB / took,
            "direct_complete_s": time.perf_counter() - before_complete,
            "direct_moto_cpu_s": common.cpu_seconds(self.pid) - cpu0,
        }

    @property
    def pid(self) -> int:
        """The child's process id."""
        assert self.process is not None  # noqa: S101
        return self.process.pid

    def env(self) -> dict[str, str]:
        """What the server needs to use the bucket."""
        return {
            "CMSCHAT_STORAGE_URL": f"s3://{BUCKET}/{S3_PREFIX}",
            "CMSCHAT_S3_ENDPOINT_URL": self.url,
            "CMSCHAT_S3_REGION": "us-east-1",
            "CMSCHAT_S3_ACCESS_KEY_ID": S3_KEY_ID,
            "CMSCHAT_S3_SECRET_ACCESS_KEY": S3_SECRET,
        }

    def stop(self) -> None:
        """Close its stdin (it stops by itself), else terminate it."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None  # noqa: S101
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(timeout=10)


# -- one transfer -----------------------------------------------------------------------


async def upload(
    client: httpx.AsyncClient, url: str, user: common.BenchUser, size: int, seed: int
) -> dict[str, Any]:
    """POST the file; the answer's JSON (raises on anything but 201).

    ``_after_body_s`` in the answer: seconds from the client's last byte to the response
    (what the server still did then: the last write, fsync or completing the S3 upload).
    """
    body = MultipartBody(size, seed)
    async with asyncio.timeout(PHASE_TIMEOUT):
        response = await client.post(
            url, content=body.stream(), headers={**user.headers, **body.headers}
        )
    answered = time.perf_counter()
    if response.status_code != 201:
        raise RuntimeError(f"upload: {response.status_code} {response.text[:300]}")
    return {**response.json(), "_after_body_s": answered - body.sent_at}


async def download(
    client: httpx.AsyncClient, url: str, user: common.BenchUser
) -> tuple[int, str, float]:
    """GET the file, hashing and discarding it: (bytes, sha256, seconds to first byte)."""
    digest = hashlib.sha256()
    received = 0
    started = time.perf_counter()
    first_byte = 0.0
    async with asyncio.timeout(PHASE_TIMEOUT):
        async with client.stream("GET", url, headers=user.headers) as response:
            if response.status_code != 200:
                await response.aread()
                raise RuntimeError(f"download: {response.status_code} {response.text[:300]}")
            async for chunk in response.aiter_raw():
                if not received:
                    first_byte = time.perf_counter() - started
                digest.update(chunk)
                received += len(chunk)
    return received, digest.hexdigest(), first_byte


async def one_run(
    index: int,
    *,
    client: httpx.AsyncClient,
    api: common.Api,
    server: common.ServerProcess,
    user: common.BenchUser,
    room_id: int,
    size: int,
    moto: MotoServer | None,
) -> dict[str, Any]:
    """Upload, then download, one file; the figures of this run."""
    seed = 1000 + index
    expected = file_sha256(size, seed)
    pid = server.pid
    await asyncio.sleep(0.5)  # let the previous run's clean-up settle
    rss_before = common.rss_kib(pid)
    hwm_reset = reset_hwm(pid)
    bench0, moto0 = common.self_cpu_seconds(), common.cpu_seconds(moto.pid) if moto else 0.0
    machine0 = common.machine_cpu_seconds()
    with RssSampler(pid) as sampler:
        sampler.phase = "upload"
        cpu0 = server.cpu_seconds()
        t0 = time.perf_counter()
        answer = await upload(client, f"{api.base}/rooms/{room_id}/attachments", user, size, seed)
        t1 = time.perf_counter()
        cpu1 = server.cpu_seconds()
        sampler.phase = "download"
        received, downloaded_sha, first_byte = await download(
            client, f"{api.base}/attachments/{answer['id']}", user
        )
        t2 = time.perf_counter()
        cpu2 = server.cpu_seconds()
        sampler.phase = "after"
        await asyncio.sleep(0.5)
        rss_after = common.rss_kib(pid)
    hwm = _status_kib(pid, "VmHWM")
    machine1 = common.machine_cpu_seconds()
    bench1, moto1 = common.self_cpu_seconds(), common.cpu_seconds(moto.pid) if moto else 0.0
    peak_polled = max(sampler.peaks.get("upload", 0), sampler.peaks.get("download", 0))
    # VmHWM is the true peak only if it could be reset before the run.
    peak = max(peak_polled, hwm) if hwm_reset else peak_polled
    server_cpu = cpu2 - cpu0
    row: dict[str, Any] = {
        "run": index + 1,
        "upload_s": t1 - t0,
        "upload_mib_s": size / MIB / (t1 - t0),
        "upload_after_body_s": answer["_after_body_s"],
        "download_s": t2 - t1,
        "download_mib_s": size / MIB / (t2 - t1),
        "download_first_byte_ms": first_byte * 1000,
        "sha256_ok": answer["sha256"] == expected == downloaded_sha and received == size,
        "size_ok": answer["size"] == size == received,
        "content_type": answer["content_type"],
        "rss_before_mib": rss_before / 1024,
        "rss_peak_upload_mib": sampler.peaks.get("upload", 0) / 1024,
        "rss_peak_download_mib": sampler.peaks.get("download", 0) / 1024,
        "rss_hwm_mib": hwm / 1024,
        "hwm_reset": hwm_reset,
        "rss_after_mib": rss_after / 1024,
        "growth_mib": (peak - rss_before) / 1024,
        "growth_after_mib": (rss_after - rss_before) / 1024,
        "rss_samples": sampler.samples,
        "rss_max_gap_ms": sampler.max_gap * 1000,
        "server_cpu_upload_s": cpu1 - cpu0,
        "server_cpu_download_s": cpu2 - cpu1,
        "server_cpu_s": server_cpu,
        "server_cpu_pct": 100 * server_cpu / (t2 - t0),
        "bench_cpu_s": bench1 - bench0,
        "rest_of_machine_cpu_s": (machine1 - machine0) - server_cpu - (bench1 - bench0),
    }
    if moto is not None:
        row["moto_cpu_s"] = moto1 - moto0
        row["rest_of_machine_cpu_s"] -= moto1 - moto0
    if not row["sha256_ok"]:
        row["sha256_server"] = answer["sha256"]
        row["sha256_expected"] = expected
        row["sha256_downloaded"] = downloaded_sha
    common.log(
        f"run {index + 1}: upload {row['upload_mib_s']:.1f} MiB/s ({row['upload_s']:.2f}s), "
        f"download {row['download_mib_s']:.1f} MiB/s, growth {row['growth_mib']:.1f} MiB, "
        f"sha256 {'ok' if row['sha256_ok'] else 'MISMATCH'}"
    )
    return row


async def profile(
    args: argparse.Namespace,
    *,
    client: httpx.AsyncClient,
    api: common.Api,
    server: common.ServerProcess,
    user: common.BenchUser,
    room_id: int,
    size: int,
) -> dict[str, Any]:
    """py-spy the server for ``--profile`` seconds while it takes transfers back to back."""
    url = f"{api.base}/rooms/{room_id}/attachments"
    answer = await upload(client, url, user, size, 7)  # something to download
    out = Path(args.profile_dir) / f"attachments-{args.storage}-{args.profile_phase}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    profiler = common.Profiler(server.pid, args.profile, out)
    transfers = 0
    while profiler.process.poll() is None:
        if args.profile_phase == "upload":
            await upload(client, url, user, size, 8 + transfers)
        else:
            await download(client, f"{api.base}/attachments/{answer['id']}", user)
        transfers += 1
    profiler.wait()
    summary = profiler.summary(top=20)
    summary["phase"] = args.profile_phase
    summary["transfers"] = transfers
    summary["file"] = str(out)
    return summary


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every numeric figure across runs."""
    out: dict[str, Any] = {"run": "median"}
    for key, value in rows[0].items():
        if key == "run":
            continue
        if isinstance(value, bool):
            out[key] = all(row[key] for row in rows)
        elif isinstance(value, int | float):
            out[key] = statistics.median(row[key] for row in rows)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    size = args.size_mib * MIB
    result: dict[str, Any] = {
        "tool": "attachments",
        "storage": args.storage,
        "db": "sqlite",
        "size_mib": args.size_mib,
        "runs": args.runs,
        "machine": common.machine(),
        "source": common.source_state(),
    }
    extra_env = {
        "CMSCHAT_ATTACHMENTS__MAX_FILE_MIB": str(max(512, args.size_mib + 1)),
        # Far above everything the bench uploads (runs, warm-up and profiling).
        "CMSCHAT_ATTACHMENTS__QUOTA_MIB": str(1 << 20),
    }
    moto: MotoServer | None = None
    rows: list[dict[str, Any]] = []
    try:
        if args.storage == "s3":
            moto = MotoServer()
            moto.launch()  # here: started in a worker thread it would die with that thread
            await asyncio.to_thread(moto.wait_ready)
            common.log(f"moto pid {moto.pid} on {moto.url}, bucket {BUCKET}")
            extra_env.update(moto.env())
        async with common.environment("sqlite", keep=args.keep, extra_env=extra_env) as (
            _backend,
            servers,
            api,
        ):
            server = servers[0]
            owner, member = await api.create_users(2, prefix="att")
            room_id = await api.create_room(owner, [owner, member], "attachments bench")
            timeout = httpx.Timeout(PHASE_TIMEOUT)
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
                url = f"{api.base}/rooms/{room_id}/attachments"
                rss0 = common.rss_kib(server.pid)
                warm = await upload(client, url, owner, MIB, 1)
                await download(client, f"{api.base}/attachments/{warm['id']}", owner)
                result["rss_start_mib"] = rss0 / 1024
                result["rss_after_warmup_mib"] = common.rss_kib(server.pid) / 1024
                for index in range(args.runs):
                    rows.append(
                        await one_run(
                            index,
                            client=client,
                            api=api,
                            server=server,
                            user=owner,
                            room_id=room_id,
                            size=size,
                            moto=moto,
                        )
                    )
                if moto is not None and args.baseline:
                    result["baseline"] = [
                        await asyncio.to_thread(moto.direct_upload, size, 500 + index)
                        for index in range(args.runs)
                    ]
                    common.log(
                        "boto3 straight to moto: "
                        + ", ".join(
                            f"{b['direct_upload_mib_s']:.1f} MiB/s" for b in result["baseline"]
                        )
                    )
                if args.profile:
                    result["profile"] = await profile(
                        args,
                        client=client,
                        api=api,
                        server=server,
                        user=owner,
                        room_id=room_id,
                        size=size,
                    )
            result["server_problems"] = server.problems()
    finally:
        if moto is not None:
            moto.stop()
    # The bench's own peak RSS (ru_maxrss, KiB on Linux): shows it never held the file.
    result["bench_max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["per_run"] = rows
    median = median_row(rows)
    result["median"] = median
    result["goal"] = {
        "upload_mib_s": median["upload_mib_s"] >= GOAL_MIB_S,
        "download_mib_s": median["download_mib_s"] >= GOAL_MIB_S,
        "growth_mib": max(row["growth_mib"] for row in rows) <= GOAL_GROWTH_MIB,
    }
    print_report(result, [*rows, median])
    return result


COLUMNS = (
    ("run", "run", "{}"),
    ("upload_mib_s", "up MiB/s", "{:.1f}"),
    ("upload_s", "up s", "{:.2f}"),
    ("upload_after_body_s", "up tail s", "{:.2f}"),
    ("download_mib_s", "down MiB/s", "{:.1f}"),
    ("download_s", "down s", "{:.2f}"),
    ("sha256_ok", "sha ok", "{}"),
    ("rss_before_mib", "RSS before", "{:.1f}"),
    ("rss_peak_upload_mib", "peak up", "{:.1f}"),
    ("rss_peak_download_mib", "peak down", "{:.1f}"),
    ("rss_hwm_mib", "VmHWM", "{:.1f}"),
    ("rss_after_mib", "after", "{:.1f}"),
    ("growth_mib", "growth", "{:.1f}"),
    ("server_cpu_upload_s", "cpu up s", "{:.2f}"),
    ("server_cpu_download_s", "cpu down s", "{:.2f}"),
    ("bench_cpu_s", "bench cpu s", "{:.2f}"),
    ("moto_cpu_s", "moto cpu s", "{:.2f}"),
    ("rest_of_machine_cpu_s", "rest cpu s", "{:.2f}"),
)


def print_report(result: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """A table of the runs and the median, the goal check and the profile."""
    common.print_table(
        (k, v) for k, v in result.items() if k not in ("per_run", "median", "goal", "profile")
    )
    columns = [c for c in COLUMNS if c[0] in rows[0]]
    cells = [[title for _, title, _ in columns]]
    cells += [[fmt.format(row[key]) for key, _, fmt in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    print()
    for line in cells:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))
    print("(MiB; RSS 'peak' polled every 20 ms; VmHWM reset before each run)")
    goal = result["goal"]
    print(
        f"\ngoal >= {GOAL_MIB_S:.0f} MiB/s upload: {'met' if goal['upload_mib_s'] else 'MISSED'};"
        f" download: {'met' if goal['download_mib_s'] else 'MISSED'};"
        f" growth <= {GOAL_GROWTH_MIB:.0f} MiB (every run):"
        f" {'met' if goal['growth_mib'] else 'MISSED'}"
    )
    for index, baseline in enumerate(result.get("baseline", []), 1):
        print(
            f"boto3 straight to moto, run {index}: {baseline['direct_upload_mib_s']:.1f} MiB/s"
            f" ({baseline['direct_upload_s']:.2f}s, of which complete"
            f" {baseline['direct_complete_s']:.2f}s; moto cpu {baseline['direct_moto_cpu_s']:.2f}s)"
        )
    if "profile" in result:
        summary = result["profile"]
        common.print_profile(
            f"{summary['file']} ({summary['phase']}, {summary['transfers']} transfers)", summary
        )
    sys.stdout.flush()


def main() -> None:
    parser = common.bench_parser(__doc__)
    parser.add_argument("--size-mib", type=int, default=100, help="file size, MiB")
    parser.add_argument("--runs", type=int, default=3, help="upload + download runs")
    parser.add_argument("--storage", choices=("local", "s3"), default="local")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="s3: also upload the same file straight to moto with boto3 (--runs times), "
        "as the server does (8 MiB parts in turn): the ceiling moto allows",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="SECONDS",
        help="after the runs, py-spy record the server for SECONDS of back-to-back transfers",
    )
    parser.add_argument("--profile-phase", choices=("upload", "download"), default="upload")
    parser.add_argument("--profile-dir", default=common.PROFILE_DIR)
    common.add_output_options(parser)
    args = parser.parse_args()
    if not 1 <= args.size_mib <= 4096 or not 1 <= args.runs <= 20:
        parser.error("--size-mib in 1..4096, --runs in 1..20")
    if not 0 <= args.profile <= 60:
        parser.error("--profile in 0..60 seconds")
    common.use_uvloop()
    budget = (
        300
        + args.runs * 2 * PHASE_TIMEOUT
        + (args.profile + 2 * PHASE_TIMEOUT) * bool(args.profile)
    )
    result = asyncio.run(asyncio.wait_for(run(args), timeout=budget))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    sys.exit(0)


if __name__ == "__main__":
    main()
