"""Serving the static web client and console (``web/``) at ``/``.

The files are plain ES modules and one stylesheet: no build step, no CDN, no inline
script or style, so the strict Content-Security-Policy holds. The same files work from
any other host once its ``config.json`` names the API's base URL.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles


def shipped_web_dir() -> Path:
    """Where the web files are: packaged into a wheel, or ``web/`` of a source checkout."""
    packaged = Path(str(files("cmschat"))) / "web"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "web"


def mount_web(app: FastAPI, web_dir: Path | None) -> None:
    """Serve the client at ``/`` (after every API route, so it shadows none)."""
    directory = web_dir or shipped_web_dir()
    if directory.is_dir():
        app.mount("/", StaticFiles(directory=directory, html=True), name="web")
