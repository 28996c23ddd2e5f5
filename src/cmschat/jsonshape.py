"""A cheap look at JSON text before parsing it: how deep it nests, how many keys it has.

The standard parser recurses once per level (5,000 ``[`` raise RecursionError) and a
validation error of a many-keyed object copies it per error, so both HTTP bodies and
WebSocket frames are measured first, in one linear scan that skips strings.
"""

from __future__ import annotations

import re

# A whole JSON string (brackets inside text do not count), a bracket, a colon, or a quote
# that opens a string never closed.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*+"|[\[\]{}:]|"')


def shape_problem(
    text: bytes | str, *, max_depth: int, max_members: int | None = None
) -> str | None:
    """Why this JSON text nests deeper than ``max_depth`` or has too many keys, or None.

    Ordinary text costs two C-speed counts; the exact scan only runs when the counts of
    brackets or colons could break a limit. Malformed text is left to the parser, which
    reports it properly.
    """
    raw = text.encode() if isinstance(text, str) else text
    members_limit = max_members if max_members is not None else len(raw)
    if raw.count(b"[") + raw.count(b"{") <= max_depth and raw.count(b":") <= members_limit:
        return None
    depth = members = 0
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                return f"JSON nested deeper than {max_depth} levels"
        elif token in (b"]", b"}"):
            depth -= 1
        elif token == b":":
            members += 1
            if members > members_limit:
                return f"JSON with more than {members_limit} keys"
        elif token == b'"':
            return None  # a string that never ends: malformed, the parser says so
    return None
