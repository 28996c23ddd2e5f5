"""Access log lines carry the ECS fields operators search by; no line can be forged and no
secret reaches the logs."""

from __future__ import annotations

import inspect
import json
import logging
import sys
from types import MappingProxyType
from typing import Any

import ecs_logging
import httpx
import pytest

from cmschat.observability import records
from cmschat.observability.ecs_format import EcsFormatter
from cmschat.observability.logging import (
    ConsoleFormatter,
    client_request_id_var,
    install_log_context,
    log_access,
    request_id_var,
    route_var,
    user_id_var,
)
from cmschat.observability.middleware import RequestMiddleware
from tests.support import PASSWORD, NamedUser

FORGED = '{"log.level":"critical","message":"forged"}'


def ecs_lines(records: list[logging.LogRecord]) -> list[str]:
    """The records as the JSON handler writes them."""
    formatter = ecs_logging.StdlibFormatter(
        exclude_fields=["process", "log.original", "color_message"]
    )
    return [formatter.format(record) for record in records]


def access_records(logs: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The access log records of the captured requests."""
    return [r for r in logs.records if r.name == "cmschat.http"]


async def test_access_lines_carry_route_status_duration_client_user_and_trace(
    client: httpx.AsyncClient, alice: NamedUser, all_logs: pytest.LogCaptureFixture
) -> None:
    headers = await alice.login(client)
    all_logs.clear()
    response = await client.get("/api/v1/rooms/424242", headers=headers)
    assert response.status_code == 404
    [line] = ecs_lines(access_records(all_logs))
    record = json.loads(line)
    assert record["url"]["path"] == "/api/v1/rooms/{room_id}"
    assert record["url"]["original"] == "/api/v1/rooms/424242"
    assert record["http"]["response"]["status_code"] == 404
    assert record["http"]["request"]["method"] == "GET"
    assert record["event"]["duration"] > 0
    assert record["client"]["ip"] == "203.0.113.7"
    assert record["user"]["id"] == str(alice.id)
    # Tracing off: the trace id is the generated request id, also in the response.
    assert record["trace"]["id"] == record["http"]["request"]["id"]
    assert record["trace"]["id"] == response.headers["x-request-id"]


async def test_lines_logged_while_handling_carry_the_route(
    client: httpx.AsyncClient, alice: NamedUser, all_logs: pytest.LogCaptureFixture
) -> None:
    await alice.login(client)
    [login] = [r for r in all_logs.records if r.name == "cmschat.accounts.api"]
    assert getattr(login, "http.route") == "/api/v1/auth/login"


@pytest.mark.parametrize("formatter", ["json", "console"])
async def test_cr_lf_in_a_request_cannot_forge_a_log_line(
    client: httpx.AsyncClient, all_logs: pytest.LogCaptureFixture, formatter: str
) -> None:
    await client.get("/api/v1/x%0d%0a" + FORGED.replace('"', "%22"))
    await client.post("/api/v1/auth/login", json={"username": "a\r\n" + FORGED, "password": "x"})
    records = all_logs.records
    assert any("forged" in r.getMessage() or "forged" in str(r.__dict__) for r in records)
    if formatter == "json":
        lines = [line for text in ecs_lines(records) for line in text.splitlines()]
        assert all(json.loads(line)["message"] != "forged" for line in lines)
    else:
        console = ConsoleFormatter()
        lines = [line for r in records for line in console.format(r).splitlines()]
        assert not any(line.startswith(FORGED) for line in lines)
        assert all("\r" not in line for line in lines)


async def test_a_full_scenario_logs_no_secret(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    body = "the-secret-message-body-7f3a"
    file_name = "secret-file-name-91c2.txt"
    new_password = "Brand-New-Password-5521"
    response = await client.post(
        "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    token = response.json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    room = await client.post(
        "/api/v1/rooms",
        json={"kind": "group", "name": "plans", "member_ids": [bob.id]},
        headers=headers,
    )
    room_id = room.json()["id"]
    sent = await client.post(
        f"/api/v1/rooms/{room_id}/messages", json={"content": body}, headers=headers
    )
    assert sent.status_code == 201, sent.text
    upload = await client.post(
        f"/api/v1/rooms/{room_id}/attachments",
        files={"file": (file_name, b"contents")},
        headers=headers,
    )
    assert upload.status_code == 201, upload.text
    await client.post(
        "/api/v1/auth/login", json={"username": "bob", "password": "wrong-" + PASSWORD}
    )
    changed = await client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    await client.post("/api/v1/auth/logout", headers=headers)
    text = "\n".join(ecs_lines(all_logs.records))
    console = ConsoleFormatter()
    text += "\n".join(console.format(r) for r in all_logs.records)
    assert len(all_logs.records) >= 8
    for secret in (PASSWORD, new_password, token, body, file_name):
        assert secret not in text, secret


def sample_records() -> list[logging.LogRecord]:
    """Records of every shape the JSON handler meets."""
    logger = logging.getLogger("cmschat.sample")
    plain = logger.makeRecord("cmschat.sample", logging.INFO, "f.py", 7, "sent %s", ("x",), None)
    access = logger.makeRecord(
        "cmschat.http",
        logging.INFO,
        "m.py",
        9,
        "GET /x 200",
        (),
        None,
        extra={
            "http.request.id": "a" * 32,
            "url.path": "/api/v1/rooms/{room_id}",
            "event.duration": 1234,
            "http.response.status_code": 200,
            "user.id": None,
            "color_message": "coloured",
            "process.extra": "dropped",
            "labels": {"worker": 2, "nested": {"deeper": "yes"}},
        },
    )
    try:
        raise ValueError("broken\nline")
    except ValueError:
        failed = logger.makeRecord(
            "cmschat.errors", logging.ERROR, "e.py", 3, "failed", (), sys.exc_info()
        )
    stacked = logger.makeRecord(
        "cmschat.sample", logging.WARNING, "s.py", 1, "here", (), None, sinfo="Stack (most recent)"
    )
    no_function = logging.LogRecord("cmschat.bare", logging.DEBUG, "b.py", 2, "bare", (), None)
    # Placed directly: under a fixed field, non-ASCII, a number; then through the
    # library's merging: a mapping that is no dict, a dict beside a dotted name.
    placed = logger.makeRecord(
        "cmschat.db.slow",
        logging.WARNING,
        "d.py",
        4,
        "slow query: %s",
        ("SELECT",),
        None,
        extra={"log.origin.extra": "x", "db.statement": "caf\u00e9 \u2615", "event.duration": 7},
    )
    proxied = logger.makeRecord(
        "cmschat.sample",
        logging.INFO,
        "p.py",
        5,
        "proxied",
        (),
        None,
        extra={"labels": MappingProxyType({"a": 1}), "labels.b": 2, "url.path": "/x"},
    )
    beside = logger.makeRecord(
        "cmschat.sample", logging.INFO, "q.py", 6, "beside", (), None, extra={"labels.b": 2}
    )
    beside.__dict__["labels"] = {"a": {"c": 3}}
    return [plain, access, failed, stacked, no_function, placed, proxied, beside]


def test_json_lines_are_exactly_the_ecs_library_lines() -> None:
    records = sample_records()
    ours = [EcsFormatter().format(record) for record in records]
    assert ours == ecs_lines(records)
    access = json.loads(ours[1])
    assert access["labels"] == {"worker": 2, "nested": {"deeper": "yes"}}
    assert "process" not in access and "color_message" not in access
    assert json.loads(ours[2])["error"]["type"] == "ValueError"
    assert json.loads(ours[6])["labels"] == {"a": 1, "b": 2}
    assert json.loads(ours[7])["labels"] == {"a": {"c": 3}, "b": 2}


def test_json_lines_are_the_library_lines_with_ascii_off_and_across_seconds() -> None:
    records = sample_records()
    ours_formatter = EcsFormatter()
    ours_formatter.ensure_ascii = False
    theirs = ecs_logging.StdlibFormatter(
        exclude_fields=["process", "log.original", "color_message"], ensure_ascii=False
    )
    for shift in (0.0, 0.4, 1.0, 3600.2):
        for record in records:
            record.created += shift
            record.msecs = (record.created - int(record.created)) * 1000
        assert [ours_formatter.format(r) for r in records] == [theirs.format(r) for r in records]


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _access_fields() -> dict[str, object]:
    return {
        "http.request.method": "GET",
        "url.path": "/api/v1/rooms/{room_id}",
        "url.original": "/api/v1/rooms/7",
        "http.response.status_code": 200,
        "event.duration": 1234,
        "client.ip": "203.0.113.7",
    }


def test_the_access_record_is_the_generic_paths_record_without_its_costs() -> None:
    install_log_context()
    logger = logging.getLogger("cmschat.test_access")
    kept = _Kept()
    logger.addHandler(kept)
    logger.setLevel(logging.INFO)
    tokens = [
        (request_id_var, request_id_var.set("b" * 32)),
        (user_id_var, user_id_var.set(42)),
        (route_var, route_var.set("/api/v1/rooms/{room_id}")),
        (client_request_id_var, client_request_id_var.set("theirs-1")),
    ]
    try:
        args = ("GET", "/api/v1/rooms/7", 200)
        logger.info("%s %s %s", *args, extra=_access_fields())
        for _twice in range(2):  # then from a copy of the call site's first (records.py)
            log_access(logger, "%s %s %s", args, _access_fields())
        logger.setLevel(logging.WARNING)
        log_access(logger, "%s %s %s", args, _access_fields())  # the level is honoured
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
        logger.removeHandler(kept)
        logger.setLevel(logging.NOTSET)
    generic, direct, copied = kept.records
    assert len(records._prototypes) > 0 or not records.USABLE
    here = inspect.getsource(test_the_access_record_is_the_generic_paths_record_without_its_costs)
    first_line = test_the_access_record_is_the_generic_paths_record_without_its_costs.__code__
    calls = [n for n, text in enumerate(here.splitlines()) if "log_access(logger" in text]
    assert direct.lineno == first_line.co_firstlineno + calls[0]
    assert direct.funcName == generic.funcName
    assert direct.pathname == generic.pathname
    # The same record but for when and where it was made: the same attributes, in the same
    # order (the console line lists them so), the same JSON line.
    for made in (direct, copied):
        for moment in ("created", "msecs", "relativeCreated", "lineno"):
            setattr(made, moment, getattr(generic, moment))
        assert list(made.__dict__.items()) == list(generic.__dict__.items())
        assert EcsFormatter().format(made) == EcsFormatter().format(generic)
        assert ConsoleFormatter().format(made) == ConsoleFormatter().format(generic)


def test_the_access_record_takes_the_generic_path_under_another_record_factory() -> None:
    ours = logging.getLogRecordFactory()
    made: list[str] = []

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = ours(*args, **kwargs)  # type: ignore[arg-type]
        made.append(record.getMessage())
        return record

    logger = logging.getLogger("cmschat.test_access")
    kept = _Kept()
    logger.addHandler(kept)
    logger.setLevel(logging.INFO)
    logging.setLogRecordFactory(factory)
    try:
        log_access(logger, "%s %s %s", ("GET", "/x", 200), _access_fields())
    finally:
        logging.setLogRecordFactory(ours)
        logger.removeHandler(kept)
        logger.setLevel(logging.NOTSET)
    assert made == ["GET /x 200"]
    [record] = kept.records
    assert (
        record.funcName
        == "test_the_access_record_takes_the_generic_path_under_another_record_factory"
    )
    assert getattr(record, "url.original") == "/api/v1/rooms/7"


async def test_the_access_line_of_a_request_says_where_the_middleware_wrote_it(
    client: httpx.AsyncClient, all_logs: pytest.LogCaptureFixture
) -> None:
    await client.get("/healthz")
    [record] = access_records(all_logs)
    assert (record.filename, record.funcName) == ("middleware.py", "__call__")
    source = inspect.getsourcelines(RequestMiddleware.__call__)
    line = source[0][record.lineno - source[1]]
    assert "log_access(" in line


@pytest.mark.parametrize(
    "given",
    [
        [(b"content-type", b"text/plain")],
        [(b"content-type", b"text/plain"), (b"x-request-id", b"the-route's")],
    ],
)
async def test_a_routes_headers_given_as_an_iterator_are_all_kept(
    given: list[tuple[bytes, bytes]],
) -> None:
    """ASGI lets an app give its response headers as any iterable, not only a list: the
    middleware reads them twice and must not lose them to a spent iterator."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": iter(given)})
        await send({"type": "http.response.body", "body": b"ok"})

    transport = httpx.ASGITransport(app=RequestMiddleware(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as asgi:
        response = await asgi.get("/anything")
    assert response.headers["content-type"] == "text/plain"
    assert response.headers["x-request-id"] != "the-route's"
    assert response.headers["x-content-type-options"] == "nosniff"
