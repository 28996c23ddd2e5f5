"""The ASGI application: ``create_app(settings)`` wires settings, database, routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.asyncio import Redis
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from cmschat import __version__
from cmschat.accounts.ratelimit import FailureCounter, MemoryFailureCounter, RedisFailureCounter
from cmschat.api.errors import install_error_handlers
from cmschat.api.router import API_PREFIX, build_api_router
from cmschat.clock import Clock, SystemClock
from cmschat.context import AppContext
from cmschat.db.session import Database, create_engine
from cmschat.observability import health
from cmschat.observability.logging import install_log_context, quiet_parameter_loggers
from cmschat.observability.middleware import RequestMiddleware
from cmschat.realtime import gateway
from cmschat.realtime.broker import Broker, MemoryBroker, RedisBroker
from cmschat.realtime.connections import CLOSE_RESTART, Hub
from cmschat.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    """A cmschat application; resources open on startup and close on shutdown."""
    clock = clock or SystemClock()
    quiet_parameter_loggers()
    install_log_context()
    token_key = settings.resolved_secret_key()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(create_engine(settings.database_url), clock)
        redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        failures: FailureCounter = (
            RedisFailureCounter(redis) if redis is not None else MemoryFailureCounter(clock)
        )
        hub = Hub()
        broker: Broker = RedisBroker(redis) if redis is not None else MemoryBroker()
        await broker.start(hub.deliver, hub.catch_up_all)
        app.state.context = AppContext(
            settings=settings,
            clock=clock,
            db=db,
            failures=failures,
            token_key=token_key,
            broker=broker,
            hub=hub,
            redis=redis,
        )
        log.info(
            "cmschat %s ready",
            __version__,
            extra={"event.action": "app.start", "database": db.engine.dialect.name},
        )
        try:
            yield
        finally:
            app.state.context.draining = True
            hub.close_all(CLOSE_RESTART)
            await broker.close()
            if redis is not None:
                await redis.aclose()
            await db.dispose()

    app = FastAPI(
        title="cmschat",
        version=__version__,
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        # The interactive docs load scripts from a CDN, which our CSP rightly forbids.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(build_api_router())
    app.include_router(gateway.router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(RequestMiddleware)
    if settings.trusted_proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    return app
