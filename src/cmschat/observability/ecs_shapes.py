"""ECS JSON lines written from a template per shape of record: no dicts, no sorting per line.

Most lines a server writes have one of a few shapes: the access line of a request, with
or without a user, a client id or a route, the slow-query line. For a shape (which extra
fields a record carries, all plain strings or integers) the whole line is the same text
but for the values: the nesting, the sorted keys, the fixed ``ecs.version``. So each
shape is worked out once, through the same placement rules as ``EcsFormatter`` (which the
tests compare byte for byte with ecs-logging's own lines), into a ``str.format`` template;
a line is then its values encoded (the C string encoder ``json`` uses) and formatted in
one call. Issue 12 point 9: encoding and placing the access line was two thirds of what
observation cost per request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

from ecs_logging._meta import ECS_VERSION

FIXED = ("@timestamp", "log.level", "message", "log.logger", "line", "file", "function")
"""The values every line starts with, in this order; extra fields' values follow."""
_TIMESTAMP, _LEVEL, _MESSAGE, _LOGGER, _LINE, _FILE, _FUNCTION = range(len(FIXED))

Paths = Callable[[str], "tuple[str, ...] | None"]


class _Slot:
    """Where value number ``index`` goes in the line."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _literal(text: str) -> str:
    """Text that ``str.format`` writes as it is."""
    return text.replace("{", "{{").replace("}", "}}")


def string_encoder(*, ensure_ascii: bool) -> Callable[[str], str]:
    """The quoted JSON string of a value, as ``json.dumps`` writes it."""
    return encode_basestring_ascii if ensure_ascii else encode_basestring


def _render(node: dict[str, Any], encode: Callable[[str], str]) -> str:
    """``json.dumps(node, sort_keys=True, separators=(",", ":"))`` with slots left open."""
    parts = []
    for key in sorted(node):
        value = node[key]
        if isinstance(value, dict):
            text = _render(value, encode)
        elif isinstance(value, _Slot):
            text = "{%d}" % value.index  # noqa: UP031 - a format field written as text
        else:
            text = _literal(encode(value))
        parts.append(f"{_literal(encode(key))}:{text}")
    return "{{" + ",".join(parts) + "}}"


def template(
    keys: Sequence[str], paths: Paths, *, with_function: bool, ensure_ascii: bool
) -> str | None:
    """The line of a record with these extra fields, as a ``str.format`` template of its
    values (``FIXED``, then one per key); None if a field would clash with another (the
    formatter's general path, the library's merging, decides those)."""
    origin: dict[str, Any] = {"file": {"line": _Slot(_LINE), "name": _Slot(_FILE)}}
    if with_function:
        origin["function"] = _Slot(_FUNCTION)
    log = {"level": _Slot(_LEVEL), "logger": _Slot(_LOGGER), "origin": origin}
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
    del result["@timestamp"], log["level"]
    encode = string_encoder(ensure_ascii=ensure_ascii)
    head = f'{{{{"@timestamp":{{{_TIMESTAMP}}},"log.level":{{{_LEVEL}}},"message":{{{_MESSAGE}}},'
    return head + _render(result, encode)[2:]
