"""Fixtures for the gateway: a live server on loopback and an HTTP client to the same app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from cmschat.app import create_app
from cmschat.clock import FakeClock
from cmschat.settings import Settings
from tests.realtime.wsclient import LiveServer, serve


@pytest.fixture
async def server(settings: Settings, clock: FakeClock) -> AsyncIterator[LiveServer]:
    """cmschat under uvicorn, on the test's database."""
    async with serve(create_app(settings, clock=clock)) as live:
        yield live


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP to the same app instance (so its events reach the same hub)."""
    transport = httpx.ASGITransport(app=server.app, client=("192.0.2.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
