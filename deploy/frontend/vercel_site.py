"""Stage the web client for Vercel: ``web/``, its ``config.json`` and ``vercel.json``.

    .venv/bin/python deploy/frontend/vercel_site.py --api-origin https://chat.example.com \\
        --out build/vercel
    vercel deploy --cwd build/vercel --prod

Vercel reads ``vercel.json`` from the root of what it deploys, and the headers it sends
are fixed there: the staged copy of ``deploy/frontend/vercel.json`` has its CSP opened to
the API origin (``connect-src``), exactly as ``publish.py`` does for CloudFront.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hosting import (
    CONFIG,
    DEFAULT_WEB_DIR,
    HERE,
    PublishError,
    check_origin,
    config_json,
    content_security_policy,
)

VERCEL_JSON = HERE / "vercel.json"


def vercel_config(api_origin: str, path: Path = VERCEL_JSON) -> dict[str, Any]:
    """``vercel.json`` with every Content-Security-Policy opened to ``api_origin``."""
    config: dict[str, Any] = json.loads(path.read_text())
    for rule in config["headers"]:
        for header in rule["headers"]:
            if header["key"].lower() == "content-security-policy":
                header["value"] = content_security_policy(header["value"], api_origin)
    return config


def stage(*, web_dir: Path, out: Path, api_origin: str) -> None:
    """Write ``out/vercel.json`` and ``out/web/`` (with this origin's ``config.json``)."""
    if not (web_dir / "index.html").is_file():
        raise PublishError(f"{web_dir} is not the web client (no index.html)")
    if out.exists() and any(out.iterdir()):
        raise PublishError(f"{out} is not empty; give a new directory")
    shutil.copytree(web_dir, out / "web", dirs_exist_ok=True)
    (out / "web" / CONFIG).write_bytes(config_json(api_origin))
    (out / "vercel.json").write_text(json.dumps(vercel_config(api_origin), indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; 0 when staged, 1 with one line on stderr when not."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-origin", required=True, help="e.g. https://chat.example.com")
    parser.add_argument("--out", type=Path, required=True, help="a new, empty directory")
    parser.add_argument("--web-dir", type=Path, default=DEFAULT_WEB_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        stage(web_dir=args.web_dir, out=args.out, api_origin=check_origin(args.api_origin))
    except (PublishError, OSError) as error:
        print(f"vercel_site: error: {error}", file=sys.stderr)
        return 1
    print(f"staged {args.out}: deploy with `vercel deploy --cwd {args.out} --prod`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
