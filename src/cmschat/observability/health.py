"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from cmschat.api.deps import Context
from cmschat.context import AppContext

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])
# A dependency that does not answer quickly is as good as down for a load balancer.
CHECK_SECONDS = 3.0
REMIND_SECONDS = 300.0
"""While a dependency stays down, how often the log says so again."""


class ReadinessLog:
    """Logs each dependency going down once, a reminder per interval while it stays down,
    and its return: a load balancer probing every few seconds must not write a line per
    probe (12 a minute per instance, for as long as the outage lasts)."""

    def __init__(
        self, remind_every: float = REMIND_SECONDS, now: Callable[[], float] = time.monotonic
    ) -> None:
        self._remind_every = remind_every
        self._now = now
        self._down: dict[str, tuple[float, float, int]] = {}
        """Per check: since when it is down, when it was last logged, probes since then."""

    def down(self, check: str, reason: str) -> None:
        """A probe found ``check`` failing for ``reason``."""
        now = self._now()
        since, logged, probes = self._down.get(check, (now, 0.0, 0))
        if check not in self._down:
            log.warning("readiness: %s %s", check, reason)
            self._down[check] = (now, now, 0)
        elif now - logged >= self._remind_every:
            log.warning(
                "readiness: %s still %s after %.0f s (%d failed probes since the last report)",
                check,
                reason,
                now - since,
                probes + 1,
            )
            self._down[check] = (since, now, 0)
        else:
            self._down[check] = (since, logged, probes + 1)

    def up(self, check: str) -> None:
        """A probe found ``check`` fine: log its return if it was down."""
        state = self._down.pop(check, None)
        if state is not None:
            log.info("readiness: %s is back after %.0f s", check, self._now() - state[0])


readiness_log = ReadinessLog()
"""The process's readiness log, shared by /readyz and the monitoring sampler."""


def disk_check(directory: Path, min_free_mib: int) -> dict[str, str]:
    """``{"disk": "ok" | "low"}`` for the disk that holds ``directory`` (nothing if off)."""
    if min_free_mib == 0 or not directory.exists():
        return {}
    free = shutil.disk_usage(directory).free
    if free >= min_free_mib << 20:
        readiness_log.up("disk")
        return {"disk": "ok"}
    readiness_log.down("disk", f"low: {free >> 20} MiB free, below {min_free_mib}")
    return {"disk": "low"}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving."""
    return {"status": "ok"}


async def readiness(context: AppContext) -> dict[str, str]:
    """Each dependency's state (``ok`` or why not); ready when every value is ``ok``."""
    checks: dict[str, str] = {}
    checks["database"] = await _probe("database", context.db.ping)
    if context.redis is not None:
        checks["redis"] = await _probe("redis", context.redis.ping)
        # Commands may work again before the subscription is back: events from other
        # instances reach this one only once it is.
        checks["broker"] = "ok" if context.broker.connected else "reconnecting"
    checks["storage"] = await _probe("storage", context.storage.ping)
    checks.update(disk_check(context.settings.data_dir, context.settings.min_free_disk_mib))
    if context.draining:
        checks["lifecycle"] = "draining"
    return checks


async def _probe(check: str, ping: Callable[[], Awaitable[object]]) -> str:
    """``ok`` or ``unreachable``, logged through the readiness log."""
    try:
        await asyncio.wait_for(ping(), CHECK_SECONDS)
    except Exception as exc:
        readiness_log.down(check, f"unreachable ({type(exc).__name__})")
        return "unreachable"
    readiness_log.up(check)
    return "ok"


@router.get("/readyz", responses={503: {"description": "draining, or a dependency is down"}})
async def readyz(context: Context) -> JSONResponse:
    """Ready for traffic: database (and broker, if configured) answer and we are not draining."""
    checks = await readiness(context)
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )
