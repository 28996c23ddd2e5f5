"""What any host of the web client must serve besides ``web/``: its ``config.json`` and
the server's security headers, the CSP opened to the API on another origin.

Shared by ``publish.py`` (S3 + CloudFront) and ``vercel_site.py`` (Vercel); plain Python,
no AWS.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
DEFAULT_WEB_DIR = HERE.parents[1] / "web"
HEADERS_POLICY = HERE / "cloudfront-headers.json"
CONFIG = "config.json"


class PublishError(Exception):
    """A problem the operator can fix; printed as one line, exit status 1."""


def check_origin(value: str) -> str:
    """``value`` as a bare origin (``https://host[:port]``), or PublishError."""
    parts = urlsplit(value.strip())
    local = parts.hostname in ("localhost", "127.0.0.1")
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise PublishError(f"--api-origin {value!r}: use https://HOST (http only for localhost)")
    if not parts.netloc or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise PublishError(f"--api-origin {value!r}: an origin only, like https://chat.example.com")
    return f"{parts.scheme}://{parts.netloc}"


def websocket_origin(api_origin: str) -> str:
    """The origin the client opens its WebSocket on (``web/js/api.js``: http -> ws)."""
    return "ws" + api_origin.removeprefix("http")


def config_json(api_origin: str) -> bytes:
    """The client's ``config.json`` for this API origin (the client derives wss:// itself)."""
    return (json.dumps({"apiBase": api_origin}, indent=2) + "\n").encode()


def content_security_policy(base: str, api_origin: str) -> str:
    """``base`` (the server's CSP) letting scripts reach the API and its WebSocket too."""
    sources = f"connect-src 'self' {api_origin} {websocket_origin(api_origin)}"
    directives = [part.strip() for part in base.split(";") if part.strip()]
    if any(part.split()[0] == "connect-src" for part in directives):
        raise PublishError("the base CSP already has connect-src; extend it by hand")
    return "; ".join([*directives, sources])


def headers_policy(api_origin: str, path: Path = HEADERS_POLICY) -> dict[str, Any]:
    """The CloudFront response headers policy config, its CSP opened to ``api_origin``."""
    policy: dict[str, Any] = json.loads(path.read_text())
    rendered = copy.deepcopy(policy)
    csp = rendered["SecurityHeadersConfig"]["ContentSecurityPolicy"]
    csp["ContentSecurityPolicy"] = content_security_policy(csp["ContentSecurityPolicy"], api_origin)
    return rendered


def policy_headers(policy: dict[str, Any]) -> dict[str, str]:
    """The HTTP response headers a CloudFront response headers policy config adds."""
    security = policy.get("SecurityHeadersConfig", {})
    headers: dict[str, str] = {}
    if "ContentSecurityPolicy" in security:
        headers["Content-Security-Policy"] = security["ContentSecurityPolicy"][
            "ContentSecurityPolicy"
        ]
    if "ContentTypeOptions" in security:
        headers["X-Content-Type-Options"] = "nosniff"
    if "FrameOptions" in security:
        headers["X-Frame-Options"] = security["FrameOptions"]["FrameOption"]
    if "ReferrerPolicy" in security:
        headers["Referrer-Policy"] = security["ReferrerPolicy"]["ReferrerPolicy"]
    if "StrictTransportSecurity" in security:
        hsts = security["StrictTransportSecurity"]
        value = f"max-age={hsts['AccessControlMaxAgeSec']}"
        value += "; includeSubDomains" if hsts.get("IncludeSubdomains") else ""
        value += "; preload" if hsts.get("Preload") else ""
        headers["Strict-Transport-Security"] = value
    for item in policy.get("CustomHeadersConfig", {}).get("Items", []):
        headers[item["Header"]] = item["Value"]
    return headers
