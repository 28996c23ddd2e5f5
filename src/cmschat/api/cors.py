"""The one CORS policy, shared by the app's middleware and the busy door (``api/busy.py``).

A browser reads a cross-origin answer only if its CORS headers allow it: a 503 ``busy``
answered at the door must carry exactly the headers the stack's would, or the client
cannot see ``Retry-After`` and backs off blindly.
"""

from __future__ import annotations

from typing import Any


def cors_options(origins: list[str]) -> dict[str, Any]:
    """``CORSMiddleware``'s keyword arguments for these allowed origins."""
    return {
        "allow_origins": origins,
        "allow_methods": ["GET", "POST", "PATCH", "DELETE"],
        "allow_headers": ["Authorization", "Content-Type", "X-Request-ID"],
        "expose_headers": ["X-Request-ID", "Retry-After"],
        "max_age": 600,
    }
