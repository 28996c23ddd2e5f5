"""Reading one file out of a multipart/form-data body as a stream, never all at once.

Starlette's form parser spools uploads to temporary files before the route runs; we want
the bytes to flow straight into storage (with the size limit, hash and type checks applied
on the way), so the body is parsed here, chunk by chunk, with python-multipart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from cmschat.errors import Invalid

FIELD = "file"


class _Collector:
    """Callbacks of the push parser, turned into a queue of (event, value) pairs."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: setattr(self, "_field", self._field + d[s:e]),
            "on_header_value": lambda d, s, e: setattr(self, "_value", self._value + d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": lambda: self.events.append(("headers", self._headers)),
            "on_part_data": lambda d, s, e: self.events.append(("data", bytes(d[s:e]))),
            "on_part_end": lambda: self.events.append(("end", None)),
        }

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""


async def file_part(
    content_type: str | None, body: AsyncIterator[bytes]
) -> tuple[str, AsyncIterator[bytes]]:
    """The ``file`` field's file name and a stream of its bytes."""
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise Invalid("send the file as multipart/form-data in a field named 'file'", field=FIELD)
    collector = _Collector()
    parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    source = body.__aiter__()

    async def next_event() -> tuple[str, object] | None:
        try:
            while not collector.events:
                try:
                    chunk = await source.__anext__()
                except StopAsyncIteration:
                    parser.finalize()
                    if not collector.events:
                        return None
                    break
                parser.write(chunk)
        except MultipartParseError:
            raise Invalid("the multipart/form-data body is malformed", field=FIELD) from None
        return collector.events.pop(0)

    # Skip parts until the file field's headers.
    while True:
        event = await next_event()
        if event is None:
            raise Invalid("no file in the request (field 'file')", field=FIELD)
        name, value = event
        if name != "headers":
            continue
        assert isinstance(value, dict)  # noqa: S101 - the collector's own shape
        _disposition, params = parse_options_header(value.get(b"content-disposition", b""))
        if params.get(b"name") == FIELD.encode():
            raw_name = params.get(b"filename")
            if raw_name is None:
                raise Invalid("the 'file' field must be a file", field=FIELD)
            filename = raw_name.decode("utf-8", errors="replace")
            break

    async def data() -> AsyncIterator[bytes]:
        while True:
            event = await next_event()
            if event is None or event[0] == "end":
                return
            if event[0] == "data" and event[1]:
                yield event[1]  # type: ignore[misc]

    return filename, data()
