"""Every CLI command starts without the libraries only some commands use: Alembic (migrations),
boto3 (S3 storage and backup targets) and FastAPI (the server) took ~0.45 s of the 1.65 s
that even ``cmschat --help`` took, and the operator waits for each command's start."""

from __future__ import annotations

import sys

from tests.commands import run

ONLY_WHERE_USED = ("alembic", "boto3", "fastapi")


def test_the_cli_starts_without_alembic_boto3_or_fastapi() -> None:
    probe = (
        "import sys, cmschat.cli; "
        f"print(' '.join(name for name in {ONLY_WHERE_USED!r} if name in sys.modules))"
    )
    started = run([sys.executable, "-c", probe])
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "", f"imported at the CLI's start: {started.stdout}"


def test_the_commands_that_need_them_still_load_them() -> None:
    probe = (
        "import sys; from cmschat.db import migrate; migrate.alembic_config(); "
        "from cmschat.attachments.storage import storage_for; "
        "from cmschat.settings import Settings; "
        "storage_for(Settings(storage_url='s3://bucket/prefix', environment='test')); "
        "print('alembic' in sys.modules, 'boto3' in sys.modules)"
    )
    loaded = run([sys.executable, "-c", probe])
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["True", "True"]
