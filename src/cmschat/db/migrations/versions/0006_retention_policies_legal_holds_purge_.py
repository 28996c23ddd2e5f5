"""retention: policies, legal holds, purge progress, job leases

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 10:35:24.826536
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cmschat.db import base as cmschat_types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=True),
        sa.Column("expires_at", cmschat_types.UTCDateTime(), nullable=True),
        sa.Column("last_completed_at", cmschat_types.UTCDateTime(), nullable=True),
        sa.Column("created_at", cmschat_types.UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", cmschat_types.UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_leases")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
        mysql_engine="InnoDB",
    )
    op.create_table(
        "retention_defaults",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("message_days", sa.Integer(), nullable=True),
        sa.Column("attachment_days", sa.Integer(), nullable=True),
        sa.Column("created_at", cmschat_types.UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", cmschat_types.UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_defaults")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
        mysql_engine="InnoDB",
    )
    op.create_table(
        "retention_progress",
        sa.Column("room_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("messages", sa.BigInteger(), nullable=False),
        sa.Column("attachments", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("created_at", cmschat_types.UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", cmschat_types.UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["room_id"],
            ["rooms.id"],
            name=op.f("fk_retention_progress_room_id_rooms"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("room_id", name=op.f("pk_retention_progress")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
        mysql_engine="InnoDB",
    )
    op.create_table(
        "room_retention",
        sa.Column("room_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("message_override", sa.Boolean(), nullable=False),
        sa.Column("message_days", sa.Integer(), nullable=True),
        sa.Column("attachment_override", sa.Boolean(), nullable=False),
        sa.Column("attachment_days", sa.Integer(), nullable=True),
        sa.Column("legal_hold", sa.Boolean(), nullable=False),
        sa.Column("legal_hold_reason", sa.String(length=255), nullable=True),
        sa.Column("created_at", cmschat_types.UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", cmschat_types.UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["room_id"],
            ["rooms.id"],
            name=op.f("fk_room_retention_room_id_rooms"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("room_id", name=op.f("pk_room_retention")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
        mysql_engine="InnoDB",
    )
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_attachments_room_id_created_at", ["room_id", "created_at"], unique=False
        )

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_messages_room_id_created_at", ["room_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_messages_reply_to_id", ["reply_to_id"], unique=False)

    with op.batch_alter_table("room_events", schema=None) as batch_op:
        batch_op.create_index("ix_room_events_message_id", ["message_id"], unique=False)

    with op.batch_alter_table("rooms", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("purged_through_seq", sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("rooms", schema=None) as batch_op:
        batch_op.drop_column("purged_through_seq")

    with op.batch_alter_table("room_events", schema=None) as batch_op:
        batch_op.drop_index("ix_room_events_message_id")

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_room_id_created_at")
    _drop_foreign_key_index(
        "messages", "ix_messages_reply_to_id", "fk_messages_reply_to_id_messages", "reply_to_id"
    )

    _drop_foreign_key_index(
        "attachments",
        "ix_attachments_room_id_created_at",
        "fk_attachments_room_id_rooms",
        "room_id",
    )

    op.drop_table("room_retention")
    op.drop_table("retention_progress")
    op.drop_table("retention_defaults")
    op.drop_table("job_leases")


def _drop_foreign_key_index(table: str, index: str, key: str, column: str) -> None:
    """Drop an index a foreign key on ``column`` now relies on.

    InnoDB let the key use the new index and dropped the one it had made for itself, so
    on MariaDB the key gets that index back in the same statement.
    """
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(index)
        return
    op.execute(f"ALTER TABLE {table} DROP INDEX {index}, ADD INDEX {key} ({column})")
