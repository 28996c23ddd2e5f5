"""Logs as JSON lines with Elastic Common Schema names, or readable lines on a terminal.

Every record of a request carries its id (``http.request.id``, always made by the server),
the caller's own id if it sent a safe one (``labels.client_request_id``) and, once known,
the user (``user.id``), taken from context variables set by the request middleware.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from types import CodeType, FrameType
from typing import Any

from opentelemetry import trace

from cmschat.observability.ecs_format import EcsFormatter
from cmschat.observability.records import made_at
from cmschat.settings import LogFormat

request_id_var: ContextVar[str | None] = ContextVar("cmschat_request_id", default=None)
user_id_var: ContextVar[int | None] = ContextVar("cmschat_user_id", default=None)
client_request_id_var: ContextVar[str | None] = ContextVar(
    "cmschat_client_request_id", default=None
)
"""The caller's own ``X-Request-ID`` (when short and safe): kept beside ours, never for it."""
client_address_var: ContextVar[str | None] = ContextVar("cmschat_client_address", default=None)
"""The caller's address (after trusted proxy headers), for the audit trail."""
route_var: ContextVar[str | None] = ContextVar("cmschat_route", default=None)
"""The template of the route that served the request, once answered (for logs and metrics)."""
scope_var: ContextVar[MutableMapping[str, Any] | None] = ContextVar("cmschat_scope", default=None)
"""The request's ASGI scope, which routing fills in (for the route while handling)."""


def routed_template(scope: MutableMapping[str, Any]) -> str | None:
    """The route template routing recorded in the scope, if it has routed yet."""
    # FastAPI >= 0.16x keeps included routers nested: the route's own path lacks the
    # prefixes, the effective route context has the full template.
    effective = (scope.get("fastapi") or {}).get("effective_route_context")
    for candidate in (effective, scope.get("route")):
        path = getattr(candidate, "path_format", None) or getattr(candidate, "path", None)
        if isinstance(path, str):
            return path
    return None


_worker: str | None = None


def set_worker(index: int) -> None:
    """Name this process's worker (``serve --workers N``) on every record it logs."""
    global _worker
    _worker = str(index)


_base_factory = logging.getLogRecordFactory()
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def current_trace_id(request_id: str | None) -> str | None:
    """The trace id of this moment: the span's when tracing, else our generated request id
    (32 hex digits, the W3C trace-id form), so logs correlate the same way either way."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return trace.format_trace_id(context.trace_id)
    if request_id is not None and _TRACE_ID.fullmatch(request_id):
        return request_id
    return None


def _stamp_context(fields: dict[str, Any], trace_id: str | None = None) -> None:
    """Write this moment's request context into a record's attributes (``trace_id``:
    this moment's, if the caller knows it)."""
    request_id = request_id_var.get()
    if request_id is not None:
        fields["http.request.id"] = request_id
    client_request_id = client_request_id_var.get()
    if client_request_id is not None:
        fields["labels.client_request_id"] = client_request_id
    route = route_var.get()
    if route is None and (scope := scope_var.get()) is not None:
        route = routed_template(scope)
    if route is not None:
        fields["http.route"] = route
    if trace_id is None:
        trace_id = current_trace_id(request_id)
    if trace_id is not None:
        fields["trace.id"] = trace_id
    user_id = user_id_var.get()
    if user_id is not None:
        fields["user.id"] = str(user_id)
    if _worker is not None:
        fields["labels.worker"] = _worker
    fields["service.name"] = "cmschat"


def _record_with_context(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    _stamp_context(record.__dict__)
    return record


_lines: dict[tuple[int, int], tuple[CodeType, int]] = {}


def _line_of(frame: FrameType) -> int:
    """``frame.f_lineno``, kept per code object and instruction: CPython finds it by
    walking the code's line table from the start, some 15,000 instructions in a long
    function such as the request middleware's (a twentieth of an access line's cost)."""
    code = frame.f_code
    key = (id(code), frame.f_lasti)
    found = _lines.get(key)
    if found is not None and found[0] is code:  # the code kept alive: its id is its own
        return found[1]
    line = frame.f_lineno
    if len(_lines) < 4096:  # call sites of log_access: a handful
        _lines[key] = (code, line)
    return line


def log_access(
    logger: logging.Logger,
    msg: str,
    args: tuple[Any, ...],
    fields: dict[str, Any],
    *,
    trace_id: str | None = None,
) -> None:
    """``logger.info(msg, *args, extra=fields)`` for the one line every request writes,
    the same record without the generic path's costs.

    ``Logger._log`` looks for the caller by walking the stack and normalising each frame's
    file name, then ``makeRecord`` copies ``extra`` key by key behind checks: a tenth of
    what observation cost per request. Here the caller is the frame above, the record is
    made by the same factory (from a copy of the call site's first, records.py) and the
    fields written at once; level, filters, handlers and
    ``disabled`` are honoured as ``Logger.handle`` does. Another record factory than ours
    gets the generic path. ``trace_id``: this moment's trace id if the caller knows it
    (the request middleware does: its request id), saving ``current_trace_id``'s look
    through OpenTelemetry's context, some 5,000 instructions a line.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    if logging.getLogRecordFactory() is not _record_with_context:
        logger.info(msg, *args, extra=fields, stacklevel=2)
        return
    caller = sys._getframe(1)
    code = caller.f_code
    record = made_at(
        _base_factory,
        logger.name,
        logging.INFO,
        code.co_filename,
        _line_of(caller),
        code.co_name,
        msg,
        args,
    )
    attributes = record.__dict__
    _stamp_context(attributes, trace_id)
    attributes.update(fields)
    logger.handle(record)


def install_log_context() -> None:
    """Stamp the request id and user id on every record, whichever handler gets it."""
    if logging.getLogRecordFactory() is not _record_with_context:
        logging.setLogRecordFactory(_record_with_context)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """Control characters escaped: text from a request (a path, a username) cannot end the
    line and forge another record."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


class ConsoleFormatter(logging.Formatter):
    """``time level logger [request] message key=value`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        """One readable line (plus a stack trace if any)."""
        request_id = getattr(record, "http.request.id", None)
        extras = " ".join(
            f"{key}={value}"
            for key, value in record.__dict__.items()
            if "." in key and key not in ("http.request.id", "service.name", "trace.id")
        )
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}"
        if request_id:
            line += f" [{request_id[:8]}]"
        line = one_line(f"{line} {record.getMessage()}")
        if extras:
            line += f"  {one_line(extras)}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


# Database drivers log statements *with their parameters* at DEBUG: password hashes and
# token digests. They stay at WARNING whatever level the operator chooses.
PARAMETER_LOGGERS = ("aiosqlite", "asyncmy", "sqlalchemy.engine", "sqlalchemy.pool")


def quiet_parameter_loggers() -> None:
    """Keep loggers that print bound parameters away from DEBUG."""
    for name in PARAMETER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(*, level: str, log_format: LogFormat) -> None:
    """Route every logger (ours, uvicorn's, SQLAlchemy's) through one handler on stderr."""
    if log_format is LogFormat.auto:
        log_format = LogFormat.console if sys.stderr.isatty() else LogFormat.json
    handler = logging.StreamHandler(sys.stderr)
    if log_format is LogFormat.json:
        handler.setFormatter(EcsFormatter())
    else:
        handler.setFormatter(ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_parameter_loggers()
    install_log_context()
    # uvicorn's own access log would duplicate ours (which has the request id).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
