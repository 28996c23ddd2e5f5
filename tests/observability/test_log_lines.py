"""Lines written from a template per shape (ecs_shapes.py) are ecs-logging's lines, byte
for byte, whatever the values hold; fields a template cannot place take the general path."""

from __future__ import annotations

import logging

import ecs_logging
import pytest

from cmschat.observability import ecs_shapes
from cmschat.observability.ecs_format import EXCLUDED_FIELDS, EcsFormatter

# Values a line must survive: braces (the template's own syntax), quotes, backslashes,
# line breaks, control and non-ASCII characters, large and negative numbers.
TRICKY = ("{0}", "}{", "{{x}}", 'say "hi"\\', "two\r\nlines\x00\x7f", "caf\u00e9 \u2615 \U0001f600")


def access_extra(n: int) -> dict[str, object]:
    """The fields of an access line, a few present or absent as on real requests."""
    extra: dict[str, object] = {
        "http.request.id": f"{n:032x}",
        "http.request.method": "GET",
        "url.path": "/api/v1/rooms/{room_id}",
        "url.original": f"/api/v1/rooms/{n}?q={TRICKY[n % len(TRICKY)]}",
        "http.response.status_code": 200 + n,
        "event.duration": 10**12 * n - 7,
        "client.ip": "203.0.113.7",
        "service.name": "cmschat",
        "user.id": str(n) if n % 2 else None,
        "labels.client_request_id": TRICKY[(n + 1) % len(TRICKY)] if n % 3 else None,
        "trace.id": f"{n:032x}",
        "color_message": "excluded",
    }
    return extra


def record(
    name: str, level: int, line: int, msg: str, args: tuple[object, ...], **extra: object
) -> logging.LogRecord:
    """A record with extra fields (made directly: whatever record factory is installed)."""
    made = logging.LogRecord(name, level, "/srv/cmschat/x.py", line, msg, args, None, "f")
    made.__dict__.update(extra)
    return made


def records() -> list[logging.LogRecord]:
    """Access-shaped records, then shapes a template must refuse or write around."""
    made = [
        record(
            "cmschat.http",
            logging.INFO,
            140,
            "%s %s %s",
            ("GET", TRICKY[n % len(TRICKY)], 200),
            **access_extra(n),
        )
        for n in range(12)
    ]
    odd_fields: list[dict[str, object]] = [
        {"url": "a string where a mapping goes", "url.path": "/x"},  # clash
        {"url.path": "/x", "url": "after the mapping"},  # clash the other way
        {"message.detail": "under the message"},
        {"log.level": "forged"},
        {"@timestamp": "forged"},
        {"ecs.version": "9"},
        {"log.origin.extra": "beside the fixed fields", "labels.{odd}": "{1}"},
        {"event.duration": 1.5},  # a float: json decides how it reads
        {"flag": True},
        {"process.extra": "excluded", "labels.n": -3},
    ]
    for n, extra in enumerate(odd_fields):
        made.append(record("cmschat.sample", logging.WARNING, n, "odd %s", (n,), **extra))
    no_function = logging.LogRecord("cmschat.bare", logging.DEBUG, "b.py", 2, "bare", (), None)
    made.append(no_function)
    return made


def line(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The line, or what the library says of a field it cannot merge."""
    try:
        return formatter.format(record)
    except TypeError:  # ecs-logging refuses a value where a mapping goes
        return "refused"


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_template_lines_are_the_library_lines(ensure_ascii: bool) -> None:
    ours = EcsFormatter()
    ours.ensure_ascii = ensure_ascii
    theirs = ecs_logging.StdlibFormatter(
        exclude_fields=list(EXCLUDED_FIELDS), ensure_ascii=ensure_ascii
    )
    for _twice in range(2):  # the second time from the kept templates
        for record in records():
            assert line(ours, record) == line(theirs, record)


def test_one_template_per_shape_and_none_for_fields_it_cannot_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[object] = []
    template = ecs_shapes.template

    def counting(*args: object, **kwargs: object) -> ecs_shapes.Template | None:
        text = template(*args, **kwargs)  # type: ignore[arg-type]
        made.append(text)
        return text

    monkeypatch.setattr(ecs_shapes, "template", counting)
    formatter = EcsFormatter()
    access = records()[:12]
    for record in access:
        formatter.format(record)
    # Shapes: with or without a user (n odd) and a client id (n not a multiple of 3).
    assert len(made) == 4
    assert all(text is not None for text in made)
    made.clear()
    for record in records()[12:15]:  # clashes and a field under the message
        line(formatter, record)
    assert made == [None, None, None]
