"""Firing alerts, asked of Alertmanager's API v2 (``CMSCHAT_MONITORING__ALERTMANAGER_URL``).

The console must load even when Alertmanager is down: the request has a short timeout and
any failure becomes the state ``unreachable`` with a one-line reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from cmschat.monitoring.schemas import AlertRead, AlertsRead

log = logging.getLogger(__name__)

MAX_ALERTS = 50
MAX_BODY = 4 << 20
SEVERITY_ORDER = {"critical": 0, "page": 0, "warning": 1, "info": 2}
NEVER = datetime.max.replace(tzinfo=UTC)
QUERY = "/api/v2/alerts?active=true&silenced=false&inhibited=false"


def _fetch(url: str, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - scheme checked by the settings
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read(MAX_BODY))


def _since(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def parse_alerts(payload: Any) -> AlertsRead:
    """Alertmanager's answer as the console shows it: most severe first, then oldest."""
    if not isinstance(payload, list):
        return AlertsRead(state="unreachable", detail="Alertmanager answered something else")
    alerts = []
    for item in payload:
        if not isinstance(item, dict):
            continue
        labels = item.get("labels") or {}
        annotations = item.get("annotations") or {}
        alerts.append(
            AlertRead(
                name=str(labels.get("alertname", "?"))[:200],
                severity=str(labels.get("severity", "none"))[:40],
                since=_since(item.get("startsAt")),
                summary=str(annotations.get("summary") or annotations.get("description") or "")[
                    :500
                ],
            )
        )
    alerts.sort(key=lambda a: (SEVERITY_ORDER.get(a.severity, 3), a.since or NEVER, a.name))
    return AlertsRead(state="ok", total=len(alerts), items=alerts[:MAX_ALERTS])


async def firing_alerts(*, url: str, seconds: float) -> AlertsRead:
    """The firing (not silenced, not inhibited) alerts, or the state that explains why none."""
    if not url:
        return AlertsRead(state="not_configured")
    try:
        # urllib's timeout is per socket operation; the outer one bounds the whole exchange.
        payload = await asyncio.wait_for(
            asyncio.to_thread(_fetch, url.rstrip("/") + QUERY, seconds), seconds + 1
        )
    except TimeoutError:
        log.warning("alertmanager unreachable: no answer in %s s", seconds)
        return AlertsRead(state="unreachable", detail=f"no answer within {seconds:g} s")
    except urllib.error.HTTPError as exc:
        log.warning("alertmanager answered HTTP %d", exc.code)
        return AlertsRead(state="unreachable", detail=f"HTTP {exc.code} {exc.reason}"[:200])
    except (OSError, ValueError) as exc:
        log.warning("alertmanager unreachable: %s", type(exc).__name__)
        reason = getattr(exc, "reason", None) or exc  # URLError wraps the socket's error
        return AlertsRead(state="unreachable", detail=str(reason)[:200] or type(exc).__name__)
    return parse_alerts(payload)
