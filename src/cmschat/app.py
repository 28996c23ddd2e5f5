"""The ASGI application: ``create_app(settings)`` wires settings, database, routes.

The composition root, past 300 lines on purpose: every part is built and connected here
(database, broker, storage, jobs, middleware, routers), so the whole wiring reads in one
place and no other module has to know how the others are made.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import cast

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from cmschat import __version__
from cmschat.accounts.ratelimit import FailureCounter, MemoryFailureCounter, RedisFailureCounter
from cmschat.api.busy import BusyRefusal
from cmschat.api.cors import cors_options
from cmschat.api.errors import install_error_handlers
from cmschat.api.hsts import HstsMiddleware
from cmschat.api.limits import BodyLimitMiddleware, document_body_limit
from cmschat.api.router import API_PREFIX, build_api_router
from cmschat.attachments import inspection
from cmschat.attachments.erasure import Eraser, clean_up
from cmschat.attachments.storage import storage_for
from cmschat.attachments.uploads import Limits
from cmschat.audit import head as audit_head
from cmschat.audit.service import audited
from cmschat.chat.caches import HotCaches
from cmschat.chat.hot_routes import HotRoute
from cmschat.chat.ratelimit import MemorySendLimiter, RedisSendLimiter, SendLimiter
from cmschat.clock import Clock, SystemClock
from cmschat.context import AppContext
from cmschat.db import write_lock
from cmschat.db.readers import Readers
from cmschat.db.replicas import Replicas
from cmschat.db.session import Database, create_engine
from cmschat.jobs.scheduler import every
from cmschat.monitoring.sampler import Sampler
from cmschat.observability import health, instruments, tracing
from cmschat.observability.asgi_metrics import MetricsMiddleware
from cmschat.observability.db_metrics import instrument_engine
from cmschat.observability.health import readiness
from cmschat.observability.logging import install_log_context, quiet_parameter_loggers
from cmschat.observability.metrics import metrics_endpoint
from cmschat.observability.middleware import RequestMiddleware
from cmschat.observability.minutes import WINDOW, Window
from cmschat.realtime.broker import Broker, MemoryBroker
from cmschat.realtime.connections import CLOSE_RESTART, Hub
from cmschat.realtime.presence import LocalPresence, Presence, RedisPresence
from cmschat.realtime.publish import counting_deliveries, publisher_for
from cmschat.redis_clients import RedisClient, redis_broker, redis_client
from cmschat.retention.job import RetentionJob
from cmschat.settings import AttachmentSettings, Settings
from cmschat.web import mount_web
from cmschat.websocket import gateway
from cmschat.websocket.invalidation import flushing, invalidating, invalidating_deliveries
from cmschat.websocket.presence_watch import PresenceWatch
from cmschat.websocket.watch import SessionWatch

log = logging.getLogger(__name__)

HEAD_EXPORT_SECONDS = 60
SCHEDULE_CHECK_SECONDS = 60
"""How often each instance checks whether a backup is due (the purge: its own setting)."""
BACKUP_METRICS_SECONDS = 300
SAMPLE_SECONDS = 60
"""Each instance writes its sample for the console's charts once a minute."""
"""How often each instance reads the newest backups and drill from the target for /metrics."""


def attachment_limits(settings: Settings) -> Limits:
    """Upload limits from the settings."""
    chosen = settings.attachments.allowed_extensions
    return Limits(
        max_file_bytes=settings.attachments.max_file_mib << 20,
        quota_bytes=settings.attachments.quota_mib << 20,
        allowed_extensions=frozenset(chosen) if chosen else inspection.ALLOWED_EXTENSIONS,
    )


def send_limiter_for(
    settings: Settings, redis: RedisClient | None, clock: Clock
) -> SendLimiter | None:
    """The per-user send rate limiter the settings ask for (None: no limit)."""
    rate, burst = settings.chat.send_rate, settings.chat.send_burst
    if rate == 0:
        return None
    if redis is None:
        return MemorySendLimiter(clock, rate=rate, burst=burst)
    prefix = f"{settings.redis_prefix}:sendrate:"
    return RedisSendLimiter(redis, clock, rate=rate, burst=burst, prefix=prefix)


async def clean_up_attachments(eraser: Eraser, clock: Clock, settings: AttachmentSettings) -> None:
    """One round: erase unlinked uploads and finish interrupted deletions."""
    erased = await clean_up(
        eraser=eraser, clock=clock, unlinked_after=timedelta(minutes=settings.unlinked_minutes)
    )
    if erased:
        log.info(
            "attachment clean-up erased %d files",
            erased,
            extra={"event.action": "attachments.cleaned"},
        )


async def export_audit_head(db: Database) -> None:
    """One round: read the head (other instances append too), log it if it moved."""
    await audit_head.refresh(db)
    audit_head.log_head()


def start_jobs(context: AppContext, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """The background loops of one instance; they end once ``stop`` is set."""
    settings, db, clock = context.settings, context.db, context.clock
    loops = [
        every(
            settings.attachments.cleanup_interval_seconds,
            lambda: clean_up_attachments(context.eraser, clock, settings.attachments),
            stop,
            name="attachment clean-up",
        ),
        every(HEAD_EXPORT_SECONDS, lambda: export_audit_head(db), stop, name="audit head"),
    ]
    watch = SessionWatch(
        context.hub, db, clock, settings.auth, settings.realtime.session_check_seconds
    )
    loops.append(every(watch.tick_seconds, watch.tick, stop, name="session check"))
    if isinstance(context.presence, RedisPresence):
        ttl = settings.realtime.presence_ttl_seconds
        presence = PresenceWatch(context.presence, db, context.broker, ttl)
        loops.append(every(presence.tick_seconds, presence.tick, stop, name="presence"))
    if settings.retention.run_daily:
        job = RetentionJob(db, clock=clock, settings=settings.retention, eraser=context.eraser)
        loops.append(
            every(
                settings.retention.check_seconds, job.tick, stop, name="retention", run_first=True
            )
        )
    from cmschat.backup.exporter import export_backup_metrics
    from cmschat.backup.service import Toolkit, engine_for, target_for

    kit = Toolkit(settings, target_for(settings), engine_for(settings), context.storage, clock)
    loops.append(
        every(
            BACKUP_METRICS_SECONDS,
            lambda: export_backup_metrics(kit=kit),
            stop,
            name="backup metrics",
            run_first=True,
        )
    )
    loops.append(sampling(monitoring_sampler(context), stop))
    if settings.backup.schedule:
        from cmschat.backup.schedule import BackupSchedule

        loops.append(
            every(SCHEDULE_CHECK_SECONDS, BackupSchedule(kit, db).tick, stop, name="backups")
        )
    return [asyncio.create_task(loop, name="cmschat-job") for loop in loops]


def engine_for(url: str, settings: Settings) -> AsyncEngine:
    """An engine on ``url`` with the pool each process keeps (``CMSCHAT_DATABASE__POOL_*``)."""
    pool = settings.database
    return create_engine(
        url,
        pool_size=pool.pool_size,
        pool_overflow=pool.pool_overflow,
        pool_timeout=pool.pool_timeout,
        connect_timeout=pool.connect_timeout,
        dead_link_timeout=pool.dead_link_timeout,
    )


def replicas_for(settings: Settings, primary: Readers) -> Replicas | None:
    """The read replicas (``CMSCHAT_DATABASE_REPLICA_URLS``), if any: reads only."""
    if not settings.database_replica_urls:
        return None
    read_only = {write_lock.READ_ONLY_OPTION: True}
    engines = [
        engine_for(url, settings).execution_options(**read_only)
        for url in settings.database_replica_urls
    ]
    return Replicas(
        primary,
        engines,
        wait_seconds=settings.database.replica_wait_ms / 1000,
        counted=lambda outcome: instruments.REPLICA_READS.labels(outcome).inc(),
    )


def presence_for(settings: Settings, redis: RedisClient | None, hub: Hub) -> Presence:
    """Shared in Redis when there is one, else this process's connections alone."""
    if redis is None:
        return LocalPresence(hub)
    ttl = settings.realtime.presence_ttl_seconds
    return RedisPresence(redis, hub, prefix=settings.redis_prefix, ttl_seconds=ttl)


async def sampling(sampler: Sampler, stop: asyncio.Event) -> None:
    """A sample every minute, and a last one when the instance stops gracefully. Under
    ``cmschat serve`` the first is taken at start: a restarted instance then shows ready
    at once, not as its predecessor's "stopped" for a minute."""
    await every(
        SAMPLE_SECONDS, sampler.tick, stop, name="monitoring sample", run_first=sampler.served
    )
    try:
        await sampler.stopped()
    except Exception:  # the database may be gone by now: the instance shows as silent
        log.warning("could not record the stop in the monitoring samples", exc_info=True)


def monitoring_sampler(context: AppContext, *, window: Window = WINDOW) -> Sampler:
    """This instance's once-a-minute sample for the console's charts, with /readyz's checks."""
    return Sampler(
        context.db,
        clock=context.clock,
        checks=lambda: readiness(context),
        keep=timedelta(hours=context.settings.monitoring.sample_keep_hours),
        window=window,
    )


class CmschatApp(FastAPI):
    """FastAPI for HTTP; ``GET /api/v1/ws`` goes past FastAPI's middleware and routing
    straight to ``websocket_stack`` (metrics, proxy headers and tracing around the gateway).

    A WebSocket lives for hours: every middleware and routing layer it passes through keeps
    a coroutine frame, and FastAPI's an ``AsyncExitStack``, alive for as long. For the HTTP
    middleware (request ids, security headers, body limits, CORS, HSTS, error pages) a
    WebSocket is only passed on, so it skips them (docs/performance.md, section 1).
    """

    websocket_stack: ASGIApp | None = None
    busy: BusyRefusal | None = None
    """Set once started: a send posted while the process is full is refused here, first."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection."""
        busy = self.busy
        if scope["type"] == "http" and busy is not None and busy.takes(scope):
            await busy.answer(scope, receive, send)
            return
        if (
            scope["type"] == "websocket"
            and scope["path"] == gateway.PATH
            and self.websocket_stack is not None
        ):
            scope["app"] = self  # as Starlette would: the gateway finds the context there
            await self.websocket_stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def websocket_stack(settings: Settings, traces: tracing.Tracing | None) -> ASGIApp:
    """The gateway with the middleware that concerns WebSockets, in the HTTP stack's order."""
    layers = [Middleware(MetricsMiddleware)]
    if settings.trusted_proxies:
        layers.insert(0, Middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies))
    stack: ASGIApp = gateway.Gateway()
    for cls, args, kwargs in reversed(layers):
        stack = cls(stack, *args, **kwargs)
    return stack if traces is None else traces.traced_asgi(stack)


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    """A cmschat application; resources open on startup and close on shutdown."""
    clock = clock or SystemClock()
    quiet_parameter_loggers()
    install_log_context()
    token_key = settings.resolved_secret_key()
    traces = tracing.from_environment()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Trusted while the broker connects this instance to the others' invalidations:
        # bypassed until the context holds the broker (``trusted`` is set below).
        caches = HotCaches(
            size=settings.chat.cache_entries,
            ttl=settings.chat.cache_seconds,
            trusted=lambda: False,
        )
        # Committed events go to whichever broker the context holds when they are published.
        db = audited(
            Database(
                engine_for(settings.database_url, settings),
                clock,
                publisher=invalidating(caches, publisher_for(lambda: app.state.context.broker)),
            )
        )
        db.replicas = replicas_for(settings, db.readers)
        for engine in [db.engine, *(db.replicas.engines if db.replicas is not None else ())]:
            instrument_engine(
                engine,
                slow_ms=settings.metrics.slow_query_ms,
                span_ms=settings.metrics.trace_sql_ms,
            )
        if traces is not None:
            traces.start(redis=bool(settings.redis_url))
        redis = redis_client(settings) if settings.redis_url else None
        failures: FailureCounter = (
            RedisFailureCounter(
                redis, MemoryFailureCounter(clock), prefix=f"{settings.redis_prefix}:{{loginfail}}:"
            )
            if redis is not None
            else MemoryFailureCounter(clock)
        )
        hub = Hub()
        broker: Broker = redis_broker(settings, redis, hub) if redis is not None else MemoryBroker()
        await broker.start(
            counting_deliveries(invalidating_deliveries(caches, hub.deliver)),
            flushing(caches, hub.catch_up_all),
        )
        storage = storage_for(settings)
        eraser = Eraser(db, storage)
        app.state.context = AppContext(
            settings=settings,
            clock=clock,
            db=db,
            failures=failures,
            token_key=token_key,
            broker=broker,
            hub=hub,
            storage=storage,
            eraser=eraser,
            attachment_limits=attachment_limits(settings),
            presence=presence_for(settings, redis, hub),
            caches=caches,
            redis=redis,
            send_limiter=send_limiter_for(settings, redis, clock),
        )
        context = app.state.context
        # Asked at each cache read (two a send): the context itself, not Starlette's
        # ``State`` lookup of it each time.
        caches.trusted = lambda: context.broker.connected
        door = BusyRefusal(app.state.context.admission, settings)
        cast(CmschatApp, app).busy = door
        # Before the first request, in a thread: see DummyHash.prepare.
        await app.state.context.dummy_hash.prepare(settings.auth.bcrypt_rounds)
        try:
            await audit_head.refresh(db)
        except Exception:  # the database may come up later; /readyz says so meanwhile
            log.warning("could not read the audit head at start-up", exc_info=True)
        stop_jobs = asyncio.Event()
        jobs = start_jobs(app.state.context, stop_jobs)
        log.info(
            "cmschat %s ready",
            __version__,
            extra={"event.action": "app.start", "database": db.engine.dialect.name},
        )
        try:
            yield
        finally:
            cast(CmschatApp, app).busy = None
            door.log.flush()  # the last second's refusals
            app.state.context.draining = True
            stop_jobs.set()
            await asyncio.gather(*jobs)
            await app.state.context.sends.close()  # accepted sends are stored, not dropped
            audit_head.log_head(force=True)
            hub.close_all(CLOSE_RESTART)
            await broker.close()
            if redis is not None:
                await redis.aclose()
            await db.dispose()
            if traces is not None:
                traces.stop()

    app = CmschatApp(
        # cmschat traces itself (observability/tracing.py); FastAPI's own OpenTelemetry
        # would otherwise ask on every request whether global providers are set.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        title="cmschat",
        version=__version__,
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        # FastAPI's own docs pages load scripts from a CDN, which our CSP rightly forbids;
        # the web client serves a vendored Swagger UI at /docs/ instead (web/docs/).
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.add_route("/metrics", metrics_endpoint(settings.metrics.token), include_in_schema=False)
    app.include_router(build_api_router())
    # First: history pages and sends without FastAPI's routing and dependency solving.
    app.router.routes.insert(0, HotRoute(app.router))
    mount_web(app, settings.web_dir)
    # Innermost: a refused body still gets CORS, security headers and a request id.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    document_body_limit(app)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, **cors_options(settings.cors_origins))
    if settings.hsts_max_age:
        app.add_middleware(
            HstsMiddleware,
            max_age=settings.hsts_max_age,
            include_subdomains=settings.hsts_include_subdomains,
        )
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestMiddleware)
    if settings.trusted_proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    if traces is not None:
        traces.instrument_app(app)  # outermost: the request id can be the trace id
    app.websocket_stack = websocket_stack(settings, traces)
    return app
