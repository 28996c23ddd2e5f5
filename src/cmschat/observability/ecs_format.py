"""The ECS JSON line of a log record, exactly as ecs-logging writes it, built directly.

ecs-logging's ``format_to_ecs`` builds every line through its generic path: fifteen field
extractors, each turned into a nested dict and deep-merged into the result (about forty
merges per access line). That was most of what the access log cost per request (issue 12
point 9: observability under 5 % of a request). Here the fixed fields are written straight
into their nested places, and only the record's ``extra`` fields go through the library's
own de-dotting and merging, so the output stays byte for byte the library's
(``tests/observability/test_logs.py`` compares them).
"""

from __future__ import annotations

import logging
from typing import Any

import ecs_logging
from ecs_logging._meta import ECS_VERSION
from ecs_logging._utils import de_dot, flatten_dict, merge_dicts

# Left out of every line: the process group (one process per container; the worker
# index is ``labels.worker``), the unformatted message and uvicorn's coloured copy.
EXCLUDED_FIELDS = ("process", "log.original", "color_message")


class EcsFormatter(ecs_logging.StdlibFormatter):
    """ecs-logging's formatter with its per-line field assembly done without merges."""

    def __init__(self) -> None:
        super().__init__(exclude_fields=list(EXCLUDED_FIELDS))

    def format_to_ecs(self, record: logging.LogRecord) -> dict[str, Any]:
        """The line's fields, nested as ECS wants them."""
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
        message = record.getMessage()
        record.message = message  # as the library does: a formatter may read it later
        extras = {
            key: value for key, value in record.__dict__.items() if key not in self._LOGRECORD_DICT
        }
        for field, value in flatten_dict(extras).items():
            if value is not None and not self._is_field_excluded(field):
                merge_dicts(de_dot(field, value), result)
        result.setdefault("message", message)
        return result
