"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from cmschat.api.deps import Context
from cmschat.context import AppContext

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])
# A dependency that does not answer quickly is as good as down for a load balancer.
CHECK_SECONDS = 3.0


def disk_check(directory: Path, min_free_mib: int) -> dict[str, str]:
    """``{"disk": "ok" | "low"}`` for the disk that holds ``directory`` (nothing if off)."""
    if min_free_mib == 0 or not directory.exists():
        return {}
    free = shutil.disk_usage(directory).free
    if free >= min_free_mib << 20:
        return {"disk": "ok"}
    log.warning("readiness: %d MiB free on the data disk, below %d", free >> 20, min_free_mib)
    return {"disk": "low"}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving."""
    return {"status": "ok"}


async def readiness(context: AppContext) -> dict[str, str]:
    """Each dependency's state (``ok`` or why not); ready when every value is ``ok``."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(context.db.ping(), CHECK_SECONDS)
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("readiness: database unreachable: %s", type(exc).__name__)
        checks["database"] = "unreachable"
    if context.redis is not None:
        try:
            await asyncio.wait_for(context.redis.ping(), CHECK_SECONDS)
            checks["redis"] = "ok"
        except Exception as exc:
            log.warning("readiness: redis unreachable: %s", type(exc).__name__)
            checks["redis"] = "unreachable"
        # Commands may work again before the subscription is back: events from other
        # instances reach this one only once it is.
        checks["broker"] = "ok" if context.broker.connected else "reconnecting"
    try:
        await asyncio.wait_for(context.storage.ping(), CHECK_SECONDS)
        checks["storage"] = "ok"
    except Exception as exc:
        log.warning("readiness: storage unreachable: %s", type(exc).__name__)
        checks["storage"] = "unreachable"
    checks.update(disk_check(context.settings.data_dir, context.settings.min_free_disk_mib))
    if context.draining:
        checks["lifecycle"] = "draining"
    return checks


@router.get("/readyz", responses={503: {"description": "draining, or a dependency is down"}})
async def readyz(context: Context) -> JSONResponse:
    """Ready for traffic: database (and broker, if configured) answer and we are not draining."""
    checks = await readiness(context)
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )
