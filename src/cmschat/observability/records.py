"""Log records of one call site made from a copy of its first: ``LogRecord.__init__`` once.

``LogRecord.__init__`` works out, for every record, what is the same for every record of a
call site: the level's name, the file name and module from the path (``os.path`` calls),
the argument checks. For the access line, written once per request from one place, that was
a seventh of what the line cost (issue 12 point 9). Here the first record of a call site is
made by the factory and kept; later ones are a copy of its attributes with what changes
between records set as ``__init__`` sets it (message arguments, time, thread, process).
The attributes and their order are the factory's (``tests/observability/test_logs.py``
compares them); a Python whose ``LogRecord`` sets other attributes (3.12 adds ``taskName``)
gets the factory every time.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

_SET_BY_INIT = (
    "name",
    "msg",
    "args",
    "levelname",
    "levelno",
    "pathname",
    "filename",
    "module",
    "exc_info",
    "exc_text",
    "stack_info",
    "lineno",
    "funcName",
    "created",
    "msecs",
    "relativeCreated",
    "thread",
    "threadName",
    "processName",
    "process",
)
USABLE = tuple(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) == _SET_BY_INIT
"""Whether this Python's ``LogRecord`` sets exactly these attributes, in this order."""

_prototypes: dict[tuple[str, int, str, int, str], dict[str, Any]] = {}
_PROTOTYPES_MAX = 256


def made_at(
    base: Callable[..., logging.LogRecord],
    name: str,
    level: int,
    pathname: str,
    lineno: int,
    func: str,
    msg: str,
    args: tuple[Any, ...],
) -> logging.LogRecord:
    """``base(name, level, pathname, lineno, msg, args, None, func)`` (``base`` being
    ``LogRecord``), from the call site's kept first record when it can be."""
    if (
        not USABLE
        or len(args) == 1  # a lone mapping becomes ``args`` itself: the factory decides
        or not (logging.logThreads and logging.logMultiprocessing and logging.logProcesses)
    ):
        return base(name, level, pathname, lineno, msg, args, None, func)
    site = (name, level, pathname, lineno, func)
    prototype = _prototypes.get(site)
    if prototype is None:
        record = base(name, level, pathname, lineno, msg, args, None, func)
        if type(record) is logging.LogRecord and len(_prototypes) < _PROTOTYPES_MAX:
            _prototypes[site] = dict(record.__dict__)
        return record
    record = logging.LogRecord.__new__(logging.LogRecord)
    attributes = record.__dict__
    attributes.update(prototype)
    now = time.time()
    attributes["msg"] = msg
    attributes["args"] = args
    attributes["created"] = now
    attributes["msecs"] = int((now - int(now)) * 1000) + 0.0
    attributes["relativeCreated"] = (now - logging._startTime) * 1000  # type: ignore[attr-defined]
    attributes["thread"] = threading.get_ident()
    attributes["threadName"] = threading.current_thread().name
    attributes["processName"] = _process_name()
    attributes["process"] = os.getpid()
    return record


def _process_name() -> str:
    """As ``LogRecord.__init__`` names the process."""
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is not None:
        try:
            return str(multiprocessing.current_process().name)
        except Exception:  # noqa: S110 - as the standard library does
            pass
    return "MainProcess"
