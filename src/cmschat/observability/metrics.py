"""Prometheus metrics, served at ``GET /metrics`` in the text format.

Several worker processes: set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory, emptied
at each start) before the workers start; each process then writes its samples there and
any process's ``/metrics`` reports the sum (prometheus-client's multiprocess mode). Without
it, every process reports only its own, which is right for one process per port.

Some series tell more than an outsider should know: the audit chain head lets whoever reads
it follow the pace of administration. They are shown only when ``/metrics`` is protected by
a bearer token (``CMSCHAT_METRICS__TOKEN``) and the scrape presents it.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response

SENSITIVE = frozenset({"cmschat_audit_head_id", "cmschat_audit_head_hash_prefix"})
"""Families shown only to a scrape that presented the metrics token."""

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _Without(CollectorRegistry):
    """A view of a registry without some families."""

    def __init__(self, source: CollectorRegistry, hidden: frozenset[str]) -> None:
        super().__init__(auto_describe=False)
        self._source = source
        self._hidden = hidden

    def collect(self) -> Iterable[Metric]:
        """The source's families, less the hidden ones."""
        for family in self._source.collect():
            if family.name not in self._hidden:
                yield family


def source_registry() -> CollectorRegistry:
    """Where samples come from: this process, or all workers in multiprocess mode."""
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def render(*, include_sensitive: bool) -> bytes:
    """The exposition text, with or without the sensitive families."""
    source = source_registry()
    return generate_latest(source if include_sensitive else _Without(source, SENSITIVE))


def _presented(request: Request) -> bytes:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip().encode() if scheme.lower() == "bearer" else b""


def metrics_endpoint(token: SecretStr | None) -> Callable[[Request], Awaitable[Response]]:
    """The ``/metrics`` route: open without a token (sensitive series left out), else guarded."""
    # Here, not at the top: the CLI imports this module (its multiprocess setting) and the
    # API's error module brings FastAPI, ~140 ms that each command paid for nothing.
    from cmschat.api.errors import error_response

    expected = token.get_secret_value().encode() if token is not None else None

    async def endpoint(request: Request) -> Response:
        if expected is not None and not hmac.compare_digest(_presented(request), expected):
            return error_response(
                401,
                "unauthorized",
                "send the metrics token: Authorization: Bearer <CMSCHAT_METRICS__TOKEN>",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        # Reading the multiprocess files is file I/O: off the event loop.
        body = await asyncio.to_thread(render, include_sensitive=expected is not None)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return endpoint
