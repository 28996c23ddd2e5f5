"""Domain errors, raised by services and mapped to HTTP, WebSocket and CLI in one place each."""

from __future__ import annotations


class CmschatError(Exception):
    """Base of every error a user or operator may see; ``code`` is stable, ``message`` readable."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(CmschatError):
    """A setting is missing or wrong; the message names the variable."""

    code = "config_error"


class Invalid(CmschatError):
    """The input breaks a rule (for a field, ``field`` names it)."""

    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message, code=code)
        self.field = field


class Unauthorized(CmschatError):
    """No valid credentials."""

    code = "unauthorized"


class Forbidden(CmschatError):
    """Authenticated, but not allowed to do this."""

    code = "forbidden"


class NotFound(CmschatError):
    """No such thing, or the caller may not know it exists."""

    code = "not_found"


class Conflict(CmschatError):
    """The change clashes with the current state (a taken name, the last admin...)."""

    code = "conflict"


class RateLimited(CmschatError):
    """Too many attempts; try again after ``retry_after`` seconds."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class Overloaded(CmschatError):
    """The server is at capacity and refused the work; try again after ``retry_after`` s."""

    code = "busy"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class UnsupportedType(CmschatError):
    """A file type cmschat refuses to store (executables, scripts, active content...)."""

    code = "unsupported_type"


class TooLarge(CmschatError):
    """Over a size limit or quota; the message names the limit."""

    code = "too_large"
