"""OpenTelemetry: off by default; on, one message send gives an HTTP span whose trace id is
in the logs and is the request id, holding its write's SQL and publish (a group commit of
one send); sends written together link both ways to the same batch span."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_trace_id
from sqlalchemy import select

from cmschat.app import create_app
from cmschat.audit.models import AuditEvent
from cmschat.chat.messages import batch_writes
from cmschat.chat.messages.group_commit import GroupCommit
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.observability import sql_tally, tracing
from cmschat.settings import Settings
from tests.realtime.wsclient import serve, token_of, ws_client
from tests.support import NamedUser

MESSAGES_ROUTE = "/api/v1/rooms/{room_id}/messages"
BATCH = "chat.send_batch"


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


def linked(span: ReadableSpan) -> set[int]:
    """The span ids ``span`` links to."""
    return {link.context.span_id for link in span.links}


def span_id(span: ReadableSpan) -> int:
    """The span's own id."""
    assert span.context is not None
    return span.context.span_id


def trace_of(span: ReadableSpan) -> int:
    """The span's trace id."""
    assert span.context is not None
    return span.context.trace_id


async def test_one_message_send_is_traced_in_its_http_span(
    traced_client: httpx.AsyncClient,
    exporter: InMemorySpanExporter,
    alice: NamedUser,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    sent = await send_one_message(traced_client, exporter, alice, all_logs)
    spans = exporter.get_finished_spans()
    [server] = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.attributes is not None and server.attributes["http.route"] == MESSAGES_ROUTE
    # A batch of one send is the request's own work: no batch span, no links.
    assert [s.name for s in spans if s.name == BATCH] == []
    assert linked(server) == set()
    mine = in_trace(spans, trace_of(server))
    assert len(mine) == len(spans), [s.name for s in spans]
    [publish] = [s for s in mine if s.name == "broker.publish"]
    sql = [s for s in mine if s.kind is SpanKind.CLIENT]
    assert any(s.name.startswith("INSERT") for s in sql), [s.name for s in sql]
    assert any(s.name.startswith("SELECT") for s in sql), [s.name for s in sql]
    # The writer's SQL and publish are children of the request's span.
    for child in [publish, *sql]:
        assert child.parent is not None and child.parent.span_id == span_id(server)
    # The request says how long it waited for the writer and how long its batch took.
    assert server.attributes["cmschat.send.batch_size"] == 1
    assert float(server.attributes["cmschat.send.queued_ms"]) >= 0
    assert float(server.attributes["cmschat.send.write_ms"]) > 0
    # The trace id is the request id, in the response and on the access log line.
    assert sent.headers["x-request-id"] == format_trace_id(trace_of(server))
    [access] = [r for r in all_logs.records if r.name == "cmschat.http"]
    assert getattr(access, "trace.id") == format_trace_id(trace_of(server))


async def test_a_send_its_caller_did_not_sample_leaves_no_spans(
    traced_client: httpx.AsyncClient, exporter: InMemorySpanExporter, alice: NamedUser
) -> None:
    headers = await alice.login(traced_client)
    room = await traced_client.post(
        "/api/v1/rooms", json={"kind": "group", "name": "t", "member_ids": []}, headers=headers
    )
    exporter.clear()
    unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    sent = await traced_client.post(
        f"/api/v1/rooms/{room.json()['id']}/messages",
        json={"content": "hi"},
        headers={**headers, "traceparent": unsampled},
    )
    assert sent.status_code == 201, sent.text
    # Its write is part of its request: sampled out with it, not a trace of its own.
    assert [s.name for s in exporter.get_finished_spans()] == []


def hold_the_writer(monkeypatch: pytest.MonkeyPatch, sends: int) -> None:
    """The group commit's writer waits until ``sends`` sends are queued: one batch."""
    queued = asyncio.Event()
    count = 0
    send, write_all = GroupCommit.send, GroupCommit._write_all

    async def counted(self: GroupCommit, **kwargs: Any) -> Any:
        nonlocal count
        count += 1
        if count == sends:
            queued.set()
        return await send(self, **kwargs)  # queues before its first await

    async def held(self: GroupCommit) -> None:
        await asyncio.wait_for(queued.wait(), timeout=10)
        await write_all(self)

    monkeypatch.setattr(GroupCommit, "send", counted)
    monkeypatch.setattr(GroupCommit, "_write_all", held)


async def send_together(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter, alice: NamedUser, count: int
) -> list[httpx.Response]:
    """Alice sends ``count`` messages at once into a new room; the exporter keeps only
    their spans."""
    headers = await alice.login(client)
    room = await client.post(
        "/api/v1/rooms", json={"kind": "group", "name": "t", "member_ids": []}, headers=headers
    )
    exporter.clear()
    return await asyncio.gather(
        *(
            client.post(
                f"/api/v1/rooms/{room.json()['id']}/messages",
                json={"content": f"m{n}"},
                headers=headers,
            )
            for n in range(count)
        )
    )


async def test_two_sends_in_one_batch_link_to_the_same_batch_span(
    traced_client: httpx.AsyncClient,
    exporter: InMemorySpanExporter,
    alice: NamedUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hold_the_writer(monkeypatch, sends=2)
    sent = await send_together(traced_client, exporter, alice, 2)
    assert [response.status_code for response in sent] == [201, 201]
    spans = exporter.get_finished_spans()
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    [batch] = [s for s in spans if s.name == BATCH]
    assert len(servers) == 2 and trace_of(servers[0]) != trace_of(servers[1])
    assert linked(batch) == {span_id(s) for s in servers}
    for server in servers:
        assert linked(server) == {span_id(batch)}
        assert server.attributes is not None
        assert server.attributes["cmschat.send.batch_size"] == 2
        # Neither request's trace holds the batch's writes: they are in the batch's.
        assert not any(s.name.startswith("INSERT") for s in in_trace(spans, trace_of(server)))
    assert batch.attributes is not None
    assert batch.attributes["cmschat.batch.size"] == 2
    assert batch.attributes["cmschat.batch.rooms"] == 1
    inserts = [s for s in in_trace(spans, trace_of(batch)) if s.name.startswith("INSERT")]
    assert inserts and all(s.parent is not None for s in inserts)


async def test_a_send_retried_alone_after_its_batch_failed_is_in_its_own_trace(
    traced_client: httpx.AsyncClient,
    exporter: InMemorySpanExporter,
    alice: NamedUser,
    monkeypatch: pytest.MonkeyPatch,
    context: AppContext,
) -> None:
    hold_the_writer(monkeypatch, sends=2)

    async def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the batch cannot be written")

    monkeypatch.setattr(batch_writes, "write_batch", broken)
    sent = await send_together(traced_client, exporter, alice, 2)
    assert [response.status_code for response in sent] == [201, 201]
    spans = exporter.get_finished_spans()
    for response in sent:
        [server] = [
            s
            for s in spans
            if s.kind is SpanKind.SERVER
            and format_trace_id(trace_of(s)) == response.headers["x-request-id"]
        ]
        # Each retry's writes are in its sender's trace, not in the first sender's.
        mine = in_trace(spans, trace_of(server))
        assert any(s.name.startswith("INSERT") for s in mine), [s.name for s in mine]
        # And its audit event names its own request.
        async with context.db.unit_of_work() as session:
            audited = await session.scalar(
                select(AuditEvent.request_id).where(
                    AuditEvent.action == "message.created",
                    AuditEvent.target_id == str(response.json()["id"]),
                )
            )
        assert audited == response.headers["x-request-id"]


async def test_an_error_response_quotes_the_trace_id(
    traced_client: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    response = await traced_client.get("/api/v1/rooms/1")
    assert response.status_code == 401
    [server] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.context is not None
    assert response.headers["x-request-id"] == format_trace_id(server.context.trace_id)


async def test_a_request_continues_its_callers_trace_and_probes_are_not_traced(
    traced_client: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    response = await traced_client.get(
        "/api/v1/rooms/1", headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"}
    )
    assert response.status_code == 401
    assert (await traced_client.get("/healthz")).status_code == 200
    # One server span: the probe has none.
    [server] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert format_trace_id(trace_of(server)) == caller_trace
    assert server.parent is not None and f"{server.parent.span_id:016x}" == caller_span
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 401
    assert server.attributes["http.request.method"] == "GET"


@pytest.mark.parametrize("sql_span_ms", [60_000.0])
async def test_statements_quicker_than_the_threshold_are_counted_not_spanned(
    traced_client: httpx.AsyncClient, exporter: InMemorySpanExporter, alice: NamedUser
) -> None:
    await send_one_message(traced_client, exporter, alice)
    spans = exporter.get_finished_spans()
    [server] = [s for s in spans if s.kind is SpanKind.SERVER]
    assert [s.name for s in spans if s.kind is SpanKind.CLIENT] == []
    assert server.attributes is not None
    # The sign-in check, then the batch's inserts, selects and updates, counted once on
    # the request's span: it says how many.
    assert int(server.attributes[sql_tally.SQL_COUNT]) >= 6
    assert float(server.attributes[sql_tally.SQL_MILLISECONDS]) > 0
    assert float(server.attributes["cmschat.send.write_ms"]) > 0
    assert "broker.publish" in [s.name for s in in_trace(spans, trace_of(server))]


class FrameWatch(InMemorySpanExporter):
    """Keeps spans in memory and says when a WebSocket frame's span has ended."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.get_running_loop()
        self.frame_ended = asyncio.Event()

    def export(self, spans: Any) -> Any:
        """Keep, and wake the test if a frame's span is among them."""
        result = super().export(spans)
        if any(span.name == "websocket.frame" for span in spans):
            self.loop.call_soon_threadsafe(self.frame_ended.set)
        return result


async def test_a_websocket_send_is_traced_in_its_frame_span(
    settings: Settings, clock: FakeClock, alice: NamedUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = FrameWatch()
    settings.metrics.trace_sql_ms = 0  # every statement spanned, however quick
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setattr(tracing, "otlp_processor", lambda: SimpleSpanProcessor(watch))
    async with serve(create_app(settings, clock=clock)) as server:
        transport = httpx.ASGITransport(app=server.app, client=("192.0.2.1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            headers = await alice.login(http)
            room = await http.post(
                "/api/v1/rooms",
                json={"kind": "group", "name": "t", "member_ids": []},
                headers=headers,
            )
            async with ws_client(server, token_of(headers)) as ws:
                watch.clear()
                watch.frame_ended.clear()
                frame = {"type": "message.send", "room_id": room.json()["id"], "content": "x"}
                await ws.send(frame)
                await ws.recv_until(lambda frame: frame["type"] == "ack")
                await asyncio.wait_for(watch.frame_ended.wait(), timeout=10)
    spans = watch.get_finished_spans()
    [frame] = [s for s in spans if s.name == "websocket.frame"]
    assert [s.name for s in spans if s.name == BATCH] == []
    assert linked(frame) == set()
    assert frame.attributes is not None and frame.attributes["cmschat.send.batch_size"] == 1
    # A batch of one: its SQL and publish are the frame's children.
    [publish] = [s for s in spans if s.name == "broker.publish"]
    assert publish.parent is not None and publish.parent.span_id == span_id(frame)
    assert any(s.name.startswith("INSERT") for s in in_trace(spans, trace_of(frame)))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_fastapis_own_telemetry_is_off(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cmschat traces itself: FastAPI's own OpenTelemetry would ask, on every request,
    whether global providers are set (each lookup reads the environment), and with
    ``opentelemetry-instrument`` would add its spans and metrics to cmschat's."""
    from opentelemetry import _logs, metrics, trace

    looked_up: list[str] = []
    for module, name in (
        (trace, "get_tracer_provider"),
        (metrics, "get_meter_provider"),
        (_logs, "get_logger_provider"),
    ):
        real = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda real=real, name=name: looked_up.append(name) or real()
        )
    assert (await client.get("/healthz")).status_code == 200
    assert looked_up == []
