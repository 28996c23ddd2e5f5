"""Alembic environment: runs on the connection cmschat hands it (see cmschat.db.migrate)."""

from __future__ import annotations

from alembic import context

from cmschat.db.migrate import include_name
from cmschat.db.models import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations with `cmschat migrate`, which supplies the connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_name=include_name,
    user_module_prefix="cmschat_types.",
)
with context.begin_transaction():
    context.run_migrations()
