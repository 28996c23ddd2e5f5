"""The ECS JSON line of a log record, exactly as ecs-logging writes it, built directly.

ecs-logging's ``format_to_ecs`` builds every line through its generic path: fifteen field
extractors, each turned into a nested dict and deep-merged into the result (about forty
merges per access line). That was most of what the access log cost per request (issue 12
point 9: observability under 5 % of a request). Here the fixed fields are written straight
into their nested places, a plain ``extra`` field (a dotted name, not a mapping) is put in
its place by a path split once per name, and only what that cannot place (a mapping, a
name clashing with another) goes through the library's own flattening and merging, so the
output stays byte for byte the library's (``tests/observability/test_logs.py`` compares
them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from itertools import islice
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

import ecs_logging
from ecs_logging._meta import ECS_VERSION
from ecs_logging._utils import _json_dumps_fallback, de_dot, flatten_dict, merge_dicts

from cmschat.observability import ecs_shapes

# Left out of every line: the process group (one process per container; the worker
# index is ``labels.worker``), the unformatted message and uvicorn's coloured copy.
EXCLUDED_FIELDS = ("process", "log.original", "color_message")


def _encoder(*, ensure_ascii: bool) -> json.JSONEncoder:
    # The library's json.dumps options; one encoder kept instead of one made per value.
    return json.JSONEncoder(
        sort_keys=True,
        separators=(",", ":"),
        default=_json_dumps_fallback,
        ensure_ascii=ensure_ascii,
    )


_CONVERTER = ecs_logging.StdlibFormatter.converter
_MILLIS = tuple(f'{n:03d}Z"' for n in range(1000))
"""The end of every ``@timestamp``: its milliseconds, ``Z`` and the closing quote."""
_FRESH = tuple(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)
_STANDARD, _LAST = len(_FRESH), _FRESH[-1]
"""How many attributes ``LogRecord.__init__`` sets (first, in every record it made), the last."""

_LEAVES = (str, int, float)
"""The usual field values, told from mappings without the slower ABC check."""


class _Clash(Exception):
    """A field the direct path cannot place as the library would: take the library's path."""


class EcsFormatter(ecs_logging.StdlibFormatter):
    """ecs-logging's formatter with its per-line field assembly done without merges."""

    def __init__(self) -> None:
        super().__init__(exclude_fields=list(EXCLUDED_FIELDS))
        self._paths: dict[str, tuple[str, ...] | None] = {}
        self._encoders = {True: _encoder(ensure_ascii=True), False: _encoder(ensure_ascii=False)}
        self._second = -1
        self._second_text = ""
        self._second_quoted = ""
        self._templates: dict[tuple[object, ...], ecs_shapes.Template | None] = {}

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line: ``@timestamp``, ``log.level`` and ``message`` first, as the
        library writes them (``ecs_logging._utils.json_dumps``), the rest sorted."""
        line = self._from_template(record)
        return line if line is not None else self._format_placed(record)

    def _from_template(self, record: logging.LogRecord) -> str | None:
        """The line through its shape's template (ecs_shapes.py), if it has one: every
        extra field a plain string or integer, no error or stack to write."""
        if record.exc_info or record.stack_info:
            return None
        message = record.getMessage()
        record.message = message  # as the library does: a formatter may read it later
        ascii_only = bool(self.ensure_ascii)
        encode = encode_basestring_ascii if ascii_only else encode_basestring
        values = [self._quoted_timestamp(record), encode(message)]
        # Where the record was made is part of its shape: written into the template.
        keys: list[object] = [
            ascii_only,
            record.name,
            record.levelname,
            record.lineno,
            record.filename,
            record.funcName,
        ]
        fields = record.__dict__
        # LogRecord.__init__'s own attributes come first: not even looked at.
        items = iter(fields.items())
        if len(fields) > _STANDARD and next(islice(fields, _STANDARD - 1, None)) == _LAST:
            items = islice(items, _STANDARD, None)
        skip = self._LOGRECORD_DICT
        for key, value in items:
            if key in skip or value is None:
                continue
            kind = type(value)
            if kind is str:
                values.append(encode(value))
            elif kind is int:
                values.append(int.__repr__(value))
            else:  # bool, float, a mapping...: json.dumps decides how they read
                return None
            keys.append(key)
        shape = tuple(keys)
        try:
            found = self._templates[shape]
        except KeyError:
            found = ecs_shapes.template(shape, self._path)
            if len(self._templates) < 1024:  # shapes come from code, but bound them anyway
                self._templates[shape] = found
        return None if found is None else found.line(values)

    def _quoted_timestamp(self, record: logging.LogRecord) -> str:
        """``@timestamp``'s JSON string, as ``_record_timestamp`` writes it."""
        millis = int(record.msecs)
        second = int(record.created)
        if second == self._second and self.converter is _CONVERTER and 0 <= millis < 1000:
            return self._second_quoted + _MILLIS[millis]
        return f'"{self._record_timestamp(record)}"'

    def _format_placed(self, record: logging.LogRecord) -> str:
        """The line through nested dicts (what a template cannot write)."""
        result = self.format_to_ecs(record)
        encode = self._encoders[bool(self.ensure_ascii)].encode
        head = (
            f'{{"@timestamp":{encode(result.pop("@timestamp"))},'
            f'"log.level":{encode(result["log"].pop("level"))},'
            f'"message":{encode(result.pop("message"))}'
        )
        if not result["log"]:
            del result["log"]
        return f"{head},{encode(result)[1:]}" if result else head + "}"

    def _record_timestamp(self, record: logging.LogRecord) -> str:
        # formatTime (a gmtime and a strftime) once per second, not once per line.
        second = int(record.created)
        if second != self._second or self.converter is not _CONVERTER:
            self._second_text = self.formatTime(record, datefmt="%Y-%m-%dT%H:%M:%S")
            self._second_quoted = f'"{self._second_text}.'
            self._second = second
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def _path(self, field: str) -> tuple[str, ...] | None:
        """Where a dotted field goes (None: excluded), worked out once per name."""
        try:
            return self._paths[field]
        except KeyError:
            path = None if self._is_field_excluded(field) else tuple(field.split("."))
            if len(self._paths) < 1024:  # names come from code, but bound it anyway
                self._paths[field] = path
            return path

    def _place_extras(self, record: logging.LogRecord, result: dict[str, Any]) -> None:
        """The record's extra fields put in place directly; ``_Clash`` if one cannot be."""
        skip = self._LOGRECORD_DICT
        for key, value in record.__dict__.items():
            if key in skip or value is None:
                continue
            if not isinstance(value, _LEAVES) and isinstance(value, Mapping):
                raise _Clash
            path = self._path(key)
            if path is None:
                continue
            node = result
            for part in path[:-1]:
                node = node.setdefault(part, {})
                if type(node) is not dict:
                    raise _Clash
            if node.get(path[-1], {}) != {}:
                raise _Clash
            node[path[-1]] = value

    def format_to_ecs(self, record: logging.LogRecord) -> dict[str, Any]:
        """The line's fields, nested as ECS wants them."""
        message = record.getMessage()
        record.message = message  # as the library does: a formatter may read it later
        result = self._fixed_fields(record)
        try:
            self._place_extras(record, result)
        except _Clash:
            result = self._fixed_fields(record)
            extras = {
                key: value
                for key, value in record.__dict__.items()
                if key not in self._LOGRECORD_DICT
            }
            for field, value in flatten_dict(extras).items():
                if value is not None and not self._is_field_excluded(field):
                    merge_dicts(de_dot(field, value), result)
        result.setdefault("message", message)
        return result

    def _fixed_fields(self, record: logging.LogRecord) -> dict[str, Any]:
        file: dict[str, Any] = {"line": record.lineno, "name": record.filename}
        origin: dict[str, Any] = {"file": file}
        if record.funcName is not None:
            origin["function"] = record.funcName
        log: dict[str, Any] = {
            "level": record.levelname.lower(),
            "logger": record.name,
            "origin": origin,
        }
        result: dict[str, Any] = {
            "@timestamp": self._record_timestamp(record),
            "ecs.version": ECS_VERSION,
            "log": log,
        }
        if record.exc_info or getattr(record, "stack_info", None):
            error = {
                "type": self._record_error_type(record),
                "message": self._record_error_message(record),
                "stack_trace": self._record_error_stack_trace(record),
            }
            error = {key: value for key, value in error.items() if value is not None}
            if error:
                result["error"] = error
        return result
