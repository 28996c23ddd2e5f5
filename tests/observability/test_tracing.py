"""OpenTelemetry: off by default; on, one message send gives the HTTP, SQL and publish spans
of one trace, whose id is in the logs and is the request id."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_trace_id

from cmschat.app import create_app
from cmschat.clock import FakeClock
from cmschat.observability import tracing
from cmschat.settings import Settings
from tests.support import NamedUser

MESSAGES_ROUTE = "/api/v1/rooms/{room_id}/messages"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ],
)
def test_tracing_is_off_unless_otel_variables_ask(environ: dict[str, str], on: bool) -> None:
    assert tracing.requested(environ) is on
    assert (tracing.from_environment({}) is None) is True


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """Spans kept in memory instead of sent by OTLP; tracing switched on as by OTEL_*."""
    memory = InMemorySpanExporter()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setattr(tracing, "otlp_processor", lambda: SimpleSpanProcessor(memory))
    return memory


@pytest.fixture
def sql_span_ms() -> float:
    """Every statement its own span, unless a test says otherwise."""
    return 0


@pytest.fixture
async def traced_client(
    settings: Settings, clock: FakeClock, exporter: InMemorySpanExporter, sql_span_ms: float
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app with tracing on."""
    settings.metrics.trace_sql_ms = sql_span_ms
    application = create_app(settings, clock=clock)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, client=("198.51.100.9", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


def in_trace(spans: tuple[ReadableSpan, ...], trace_id: int) -> list[ReadableSpan]:
    """The spans of one trace."""
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


async def send_one_message(
    client: httpx.AsyncClient,
    exporter: InMemorySpanExporter,
    alice: NamedUser,
    logs: pytest.LogCaptureFixture | None = None,
) -> httpx.Response:
    """Alice sends one message into a new room; the exporter (and ``logs``) keep only the
    send's spans (and lines)."""
    headers = await alice.login(client)
    room = await client.post(
        "/api/v1/rooms", json={"kind": "group", "name": "t", "member_ids": []}, headers=headers
    )
    exporter.clear()
    if logs is not None:
        logs.clear()
    sent = await client.post(
        f"/api/v1/rooms/{room.json()['id']}/messages", json={"content": "hi"}, headers=headers
    )
    assert sent.status_code == 201, sent.text
    return sent


async def test_one_message_send_is_one_trace_of_http_sql_and_publish(
    traced_client: httpx.AsyncClient,
    exporter: InMemorySpanExporter,
    alice: NamedUser,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    sent = await send_one_message(traced_client, exporter, alice, all_logs)
    spans = exporter.get_finished_spans()
    [server] = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.attributes is not None and server.attributes["http.route"] == MESSAGES_ROUTE
    assert server.context is not None
    trace_id = server.context.trace_id
    names = [s.name for s in in_trace(spans, trace_id)]
    assert "broker.publish" in names, names
    sql = [s for s in in_trace(spans, trace_id) if s.kind is SpanKind.CLIENT]
    assert any(s.name.startswith("INSERT") for s in sql), names
    assert any(s.name.startswith("SELECT") for s in sql), names
    # The trace id is the request id, in the response and on the access log line.
    assert sent.headers["x-request-id"] == format_trace_id(trace_id)
    [access] = [r for r in all_logs.records if r.name == "cmschat.http"]
    assert getattr(access, "trace.id") == format_trace_id(trace_id)


async def test_an_error_response_quotes_the_trace_id(
    traced_client: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    response = await traced_client.get("/api/v1/rooms/1")
    assert response.status_code == 401
    [server] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.context is not None
    assert response.headers["x-request-id"] == format_trace_id(server.context.trace_id)


@pytest.mark.parametrize("sql_span_ms", [60_000.0])
async def test_statements_quicker_than_the_threshold_are_counted_not_spanned(
    traced_client: httpx.AsyncClient, exporter: InMemorySpanExporter, alice: NamedUser
) -> None:
    await send_one_message(traced_client, exporter, alice)
    spans = exporter.get_finished_spans()
    [server] = [s for s in spans if s.kind is SpanKind.SERVER]
    assert [s.name for s in spans if s.kind is SpanKind.CLIENT] == []
    assert server.attributes is not None
    # A send runs several inserts, selects and updates; the trace still says how many.
    assert int(server.attributes[tracing.SQL_COUNT]) >= 5
    assert float(server.attributes[tracing.SQL_MILLISECONDS]) > 0
    assert "broker.publish" in [s.name for s in spans]
