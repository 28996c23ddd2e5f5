"""monitoring: per-minute instance samples, and an index for activity over time

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 17:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cmschat.db import base as cmschat_types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "instance_samples",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("instance", sa.String(length=128), nullable=False),
        sa.Column("minute", cmschat_types.UTCDateTime(), nullable=False),
        sa.Column("host", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("started_at", cmschat_types.UTCDateTime(), nullable=False),
        sa.Column("ready", sa.Boolean(), nullable=False),
        sa.Column("checks", sa.String(length=255), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("p95_ms", sa.Float(), nullable=True),
        sa.Column("websockets", sa.Integer(), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("created_at", cmschat_types.UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", cmschat_types.UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_samples")),
        sa.UniqueConstraint("instance", "minute", name="uq_instance_samples_instance_minute"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
        mysql_engine="InnoDB",
    )
    with op.batch_alter_table("instance_samples", schema=None) as batch_op:
        batch_op.create_index("ix_instance_samples_minute", ["minute"], unique=False)

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_created_at", ["created_at", "author_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_created_at")

    with op.batch_alter_table("instance_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_instance_samples_minute")

    op.drop_table("instance_samples")
