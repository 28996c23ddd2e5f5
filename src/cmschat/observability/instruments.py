"""Every service metric cmschat exports, and the one-line calls services make into them.

Names follow Prometheus' conventions: ``cmschat_`` prefix, base units (``_seconds``,
``_bytes``), ``_total`` for counters. Labels take values from small fixed sets (method,
route template, status, error code, operation): never user ids, room ids or raw paths.
Gauges say how to combine worker processes in multiprocess mode.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

from cmschat.observability.minutes import WINDOW
from cmschat.observability.series import CountSeries, HistogramSeries

# Chat latencies are mostly milliseconds; the tail matters up to seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

HTTP_REQUESTS = Counter(
    "cmschat_http_requests_total",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "cmschat_http_request_duration_seconds",
    "Time from request start to the last response byte, by method and route template",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "cmschat_http_requests_in_flight",
    "HTTP requests being served right now",
    multiprocess_mode="livesum",
)
HTTP_UNHANDLED = Counter(
    "cmschat_http_unhandled_errors_total",
    "Requests that ended in an exception no handler caught (answered 500; the log has the route)",
)
OUTAGE_ERRORS = Counter(
    "cmschat_dependency_errors_total",
    "Requests refused because a dependency failed (503/507), by error code",
    ["code"],
)
DATABASE_CONFLICTS = Counter(
    "cmschat_database_conflicts_total",
    "Requests refused (503) because their transaction collided with another: a MariaDB "
    "deadlock or lock-wait timeout; by error code. Not an outage",
    ["code"],
)

REPLICA_READS = Counter(
    "cmschat_database_replica_reads_total",
    "Reads that may go to a read replica: went to a replica or the primary; and each "
    "replica passed over, as behind (had not applied the commits needed) or unreachable",
    ["outcome"],
)

WS_OPEN = Gauge(
    "cmschat_websocket_connections_open",
    "WebSocket connections open right now",
    multiprocess_mode="livesum",
)
WS_CONNECTIONS = Counter("cmschat_websocket_connections_total", "WebSocket connections accepted")
WS_FRAMES_SENT = Counter(
    "cmschat_websocket_frames_sent_total", "Frames written to WebSocket clients"
)
WS_CLOSES = Counter(
    "cmschat_websocket_closes_total",
    "WebSocket connections closed by the server, by reason",
    ["reason"],
)
DELIVERY = Histogram(
    "cmschat_delivery_latency_seconds",
    "From the commit of an event to its frame written to a client (same instance)",
    buckets=LATENCY_BUCKETS,
)

MESSAGES_STORED = Counter("cmschat_messages_stored_total", "Chat messages committed")
SEND_BATCHES = Counter(
    "cmschat_send_batches_total",
    "Transactions the group commit wrote sends in (sends per batch: messages stored / this)",
)
BROKER_PUBLISHED = Counter("cmschat_broker_published_total", "Events handed to the broker")
BROKER_RECEIVED = Counter("cmschat_broker_received_total", "Events the broker delivered here")
BROKER_LAG = Histogram(
    "cmschat_broker_lag_seconds",
    "From the commit of an event to the broker delivering it back (publishing instance)",
    buckets=LATENCY_BUCKETS,
)
BROKER_SHARD_CHANNELS = Gauge(
    "cmschat_broker_shard_channels",
    "Redis Cluster shard channels subscribed right now (summed over worker processes)",
    multiprocess_mode="livesum",
)
BROKER_RESUBSCRIBED = Counter(
    "cmschat_broker_resubscriptions_total",
    "Shard channels subscribed again after their master failed or their slot moved",
)

DB_QUERY = Histogram(
    "cmschat_db_query_duration_seconds",
    "SQL statement time, by operation",
    ["operation"],
    buckets=QUERY_BUCKETS,
)
DB_SLOW = Counter(
    "cmschat_db_slow_queries_total",
    "Statements slower than CMSCHAT_METRICS__SLOW_QUERY_MS",
    ["operation"],
)
DB_POOL_IN_USE = Gauge(
    "cmschat_db_pool_connections_in_use",
    "Database connections checked out of the pool",
    multiprocess_mode="livesum",
)
DB_POOL_WAITING = Gauge(
    "cmschat_db_pool_checkouts_waiting",
    "Requests getting a connection from the pool right now (above zero: the pool is dry)",
    multiprocess_mode="livesum",
)
DB_POOL_WAIT = Histogram(
    "cmschat_db_pool_wait_seconds",
    "Time to get a connection from the pool",
    buckets=QUERY_BUCKETS,
)
SENDS_REFUSED = Counter(
    "cmschat_sends_refused_total",
    "Sends refused as busy (HTTP 503 + Retry-After, WebSocket busy), by transport and the "
    "limit that was full: the process's sends in flight or one connection's frames in flight",
    ["transport", "limit"],
)
LOGIN_FAILURES = Counter("cmschat_login_failures_total", "Logins refused for wrong credentials")
LOGIN_THROTTLED = Counter("cmschat_login_throttled_total", "Logins refused by throttling (429)")
UPLOADS = Counter(
    "cmschat_uploads_total",
    "Attachment uploads, by result and the refusal's error code",
    ["result", "reason"],
)

RETENTION_RUNS = Counter(
    "cmschat_retention_runs_total", "Retention purge runs, by result", ["result"]
)
RETENTION_PURGED = Counter(
    "cmschat_retention_purged_total", "Rows and files the retention purge removed", ["kind"]
)
RETENTION_LAST_SUCCESS = Gauge(
    "cmschat_retention_last_success_timestamp_seconds",
    "When the last retention purge completed (Unix time)",
    multiprocess_mode="max",
)
AUDIT_VERIFY = Counter(
    "cmschat_audit_verifications_total", "Audit chain verifications, by result", ["result"]
)


# Commit times of recent frames, so the frame's write can be timed. Bounded: a frame
# nobody receives (no one in the room on this instance) must not be kept forever.
_COMMITTED: OrderedDict[str, float] = OrderedDict()
_COMMITTED_MAX = 10_000


_broker: tuple[CountSeries, CountSeries, CountSeries, HistogramSeries] | None = None


def _broker_series() -> tuple[CountSeries, CountSeries, CountSeries, HistogramSeries]:
    """Published, stored, received and the lag, written without the library's per-call
    checks (series.py): three or four of them a send, some 3,000 instructions each the
    library's way. Made at first use, as ``_delivery``."""
    global _broker
    if _broker is None:
        _broker = (
            CountSeries(BROKER_PUBLISHED),
            CountSeries(MESSAGES_STORED),
            CountSeries(BROKER_RECEIVED),
            HistogramSeries(BROKER_LAG),
        )
    return _broker


def committed(frames: list[tuple[str, str]]) -> None:
    """Events (type, frame) just committed and handed to the broker."""
    now = time.perf_counter()
    published, stored, _received, _lag = _broker_series()
    for event_type, frame in frames:
        published.inc()
        if event_type == "message.created":
            stored.inc()
            WINDOW.message_stored()
        _COMMITTED[frame] = now
        if len(_COMMITTED) > _COMMITTED_MAX:
            _COMMITTED.popitem(last=False)


def broker_received(frame: str) -> None:
    """The broker delivered an event to this instance's hub."""
    _published, _stored, received, lag = _broker_series()
    received.inc()
    started = _COMMITTED.get(frame)
    if started is not None:
        lag.observe(time.perf_counter() - started)


def frame_written(frame: str) -> None:
    """A frame went out on a WebSocket."""
    WS_FRAMES_SENT.inc()
    started = _COMMITTED.get(frame)
    if started is not None:
        DELIVERY.observe(time.perf_counter() - started)


_delivery: HistogramSeries | None = None
_FEW_FRAMES = 32
"""Up to this many frames a write pass counts them one by one; more (a pass under sends in
flight carries ~220), with ``Counter``'s C loop."""


def frames_written(frames: Sequence[str]) -> None:
    """Frames that went out on WebSockets together (in one write, or in one pass over the
    sockets that had frames queued): counted at once, and each event's frame timed from
    its commit once for all the sockets it went to (an observation per frame, the same
    value: they were written within the same callback)."""
    global _delivery  # made at first use, as db_metrics makes its series
    WS_FRAMES_SENT.inc(len(frames))
    now = time.perf_counter()
    if len(frames) > _FEW_FRAMES:  # a pass under load: ~200 frames, counted in C
        counts: dict[str, int] = Tally(frames)
    else:  # a lone send's few frames: a ``Counter``'s set-up costs more than this loop
        counts = {}
        for frame in frames:
            counts[frame] = counts.get(frame, 0) + 1
    for frame, count in counts.items():
        started = _COMMITTED.get(frame)
        if started is not None:
            if _delivery is None:
                _delivery = HistogramSeries(DELIVERY)
            _delivery.observe_many(now - started, count)


def process_full(transport: str) -> None:
    """A send was refused because this process had its ``sends_in_flight`` already."""
    SENDS_REFUSED.labels(transport=transport, limit="process").inc()


def connection_full() -> None:
    """A WebSocket frame was refused because its connection had ``frames_in_flight``."""
    SENDS_REFUSED.labels(transport="websocket", limit="connection").inc()


def retention_ran(*, messages: int, files: int, audit_events: int, completed: bool) -> None:
    """A retention purge finished (``completed`` False: it stopped early)."""
    RETENTION_RUNS.labels(result="success" if completed else "incomplete").inc()
    RETENTION_PURGED.labels(kind="messages").inc(messages)
    RETENTION_PURGED.labels(kind="files").inc(files)
    RETENTION_PURGED.labels(kind="audit_events").inc(audit_events)
    if completed:
        RETENTION_LAST_SUCCESS.set(time.time())


def retention_failed() -> None:
    """A retention purge raised."""
    RETENTION_RUNS.labels(result="failure").inc()


def audit_verified(*, ok: bool) -> None:
    """An audit chain verification ended."""
    AUDIT_VERIFY.labels(result="intact" if ok else "broken").inc()


# Series that alerts and dashboards use exist (at zero) from the start, not from the first
# event: "no failure yet" and "no such metric" must look different.
for _result in ("success", "incomplete", "failure"):
    RETENTION_RUNS.labels(result=_result)
for _kind in ("messages", "files", "audit_events"):
    RETENTION_PURGED.labels(kind=_kind)
for _result in ("intact", "broken"):
    AUDIT_VERIFY.labels(result=_result)
UPLOADS.labels(result="stored", reason="")
for _transport, _limit in (
    ("http", "process"),
    ("websocket", "process"),
    ("websocket", "connection"),
):
    SENDS_REFUSED.labels(transport=_transport, limit=_limit)
for _operation in ("SELECT", "INSERT", "UPDATE", "DELETE", "OTHER"):
    DB_SLOW.labels(operation=_operation)
DATABASE_CONFLICTS.labels(code="database_conflict")
for _reason in ("normal", "idle", "auth_failed", "restart", "slow_client", "other"):
    WS_CLOSES.labels(reason=_reason)
