"""ECS JSON lines written from a template per shape of record: no dicts, no sorting per line.

Most lines a server writes have one of a few shapes: the access line of a request, with
or without a user, a client id or a route, the slow-query line. For a shape (where the
record was logged from, which extra fields it carries, all plain strings or integers) the
whole line is the same text but for the values: the nesting, the sorted keys, the fixed
``ecs.version``, the logger, level, file, line and function. So each
shape is worked out once, through the same placement rules as ``EcsFormatter`` (which the
tests compare byte for byte with ecs-logging's own lines), into a ``%`` template and the
order its values go in; a line is then its values encoded (the C string encoder ``json``
uses), picked in that order and formatted in one call. Issue 12 point 9: encoding and
placing the access line was two thirds of what observation cost per request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from json.encoder import encode_basestring, encode_basestring_ascii
from operator import itemgetter
from typing import Any

from ecs_logging._meta import ECS_VERSION

FIXED = ("@timestamp", "message")
"""The values every line starts with (encoded), in this order; extra fields' values follow."""
_TIMESTAMP, _MESSAGE = range(len(FIXED))

Paths = Callable[[str], "tuple[str, ...] | None"]


class _Slot:
    """Where value number ``index`` goes in the line."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _literal(text: str) -> str:
    """Text that ``%`` formatting writes as it is."""
    return text.replace("%", "%%")


def string_encoder(*, ensure_ascii: bool) -> Callable[[str], str]:
    """The quoted JSON string of a value, as ``json.dumps`` writes it."""
    return encode_basestring_ascii if ensure_ascii else encode_basestring


def _render(node: dict[str, Any], encode: Callable[[str], str], order: list[int]) -> str:
    """``json.dumps(node, sort_keys=True, separators=(",", ":"))`` with ``%s`` for each
    slot; the slots' value numbers appended to ``order`` as they come."""
    parts = []
    for key in sorted(node):
        value = node[key]
        if isinstance(value, dict):
            text = _render(value, encode, order)
        elif isinstance(value, _Slot):
            text = "%s"
            order.append(value.index)
        else:  # what is the same on every line of the shape: where it was logged from
            text = _literal(encode(value) if isinstance(value, str) else repr(value))
        parts.append(f"{_literal(encode(key))}:{text}")
    return "{" + ",".join(parts) + "}"


class Template:
    """A shape's line: ``text % pick(values)``."""

    __slots__ = ("pick", "text")

    def __init__(self, text: str, order: list[int]) -> None:
        self.text = text
        self.pick = itemgetter(*order)  # at least the fixed values: always a tuple

    def line(self, values: list[str]) -> str:
        """The line of these values (encoded JSON, in ``FIXED`` then extra-field order)."""
        picked: tuple[str, ...] = self.pick(values)
        return self.text % picked


def template(shape: Sequence[Any], paths: Paths) -> Template | None:
    """The line of a record of this shape, as a template of its values (``FIXED``, then
    one per extra field); None if a field would clash with another (the formatter's general
    path, the library's merging, decides those).

    ``shape``: ``ensure_ascii``, then where the record was made (logger name, level name,
    line, file name, function or None), then the names of its extra fields.
    """
    ensure_ascii, logger, level, line, file, function, *keys = shape
    if not all(type(v) is str for v in (logger, level, file)) or type(line) is not int:
        return None
    if function is not None and type(function) is not str:
        return None
    origin: dict[str, Any] = {"file": {"line": line, "name": file}}
    if function is not None:
        origin["function"] = function
    log = {"level": level.lower(), "logger": logger, "origin": origin}
    result: dict[str, Any] = {
        "@timestamp": _Slot(_TIMESTAMP),
        "ecs.version": ECS_VERSION,
        "log": log,
    }
    for number, key in enumerate(keys, start=len(FIXED)):
        path = paths(key)
        if path is None:  # excluded: its value goes nowhere
            continue
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if type(node) is not dict:
                return None
        if node.get(path[-1], {}) != {}:
            return None
        node[path[-1]] = _Slot(number)
    if "message" in result:  # a field under "message" (the general path writes that)
        return None
    # "@timestamp", "log.level" and "message" open the line, as the library writes it.
    del result["@timestamp"]
    encode = string_encoder(ensure_ascii=ensure_ascii)
    level_text = _literal(encode(log.pop("level")))
    order = [_TIMESTAMP, _MESSAGE]
    rest = _render(result, encode, order)
    return Template(f'{{"@timestamp":%s,"log.level":{level_text},"message":%s,' + rest[1:], order)
