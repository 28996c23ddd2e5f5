"""audit: append-only hash-chained audit_events and the chain head

The triggers refuse UPDATE and DELETE on audit_events. The one deletion allowed is
expiring old events, done only while a row exists in audit_expiry_permit, which the
retention job writes within its own transaction (on MariaDB inside the
cmschat_expire_audit_events procedure, so an app account needs no rights on either table).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 10:25:28.994255
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cmschat.db import base as cmschat_types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("occurred_at", cmschat_types.UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("actor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("actor_name", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=32), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("client_address", sa.String(length=45), nullable=True),
        sa.Column("changes", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_events_hash")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
        mysql_engine="InnoDB",
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_action", ["action"], unique=False)
        batch_op.create_index("ix_audit_events_actor_id", ["actor_id"], unique=False)
        batch_op.create_index("ix_audit_events_occurred_at", ["occurred_at"], unique=False)
        batch_op.create_index(
            "ix_audit_events_target_type_target_id", ["target_type", "target_id"], unique=False
        )

    op.create_table(
        "audit_head",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
        mysql_engine="InnoDB",
    )
    op.bulk_insert(
        sa.table("audit_head", sa.column("id"), sa.column("last_id"), sa.column("last_hash")),
        [{"id": 1, "last_id": 0, "last_hash": "0" * 64}],
    )
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_guards()
    else:
        _mariadb_guards()


def _sqlite_guards() -> None:
    op.execute("CREATE TABLE audit_expiry_permit (id INTEGER NOT NULL PRIMARY KEY)")
    op.execute(
        "CREATE TRIGGER audit_events_refuse_update BEFORE UPDATE ON audit_events"
        " BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"
    )
    op.execute(
        "CREATE TRIGGER audit_events_refuse_delete BEFORE DELETE ON audit_events"
        " WHEN NOT EXISTS (SELECT 1 FROM audit_expiry_permit)"
        " BEGIN SELECT RAISE(ABORT, '"
        "audit_events is append-only: old events expire only through the retention job'); END"
    )


def _mariadb_guards() -> None:
    op.execute(
        "CREATE TABLE audit_expiry_permit (id INT NOT NULL PRIMARY KEY)"
        " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
    )
    op.execute(
        "CREATE TRIGGER audit_events_refuse_update BEFORE UPDATE ON audit_events FOR EACH ROW"
        " SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_events is append-only'"
    )
    op.execute(
        "CREATE TRIGGER audit_events_refuse_delete BEFORE DELETE ON audit_events FOR EACH ROW"
        " BEGIN"
        " IF NOT EXISTS (SELECT 1 FROM audit_expiry_permit) THEN"
        " SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '"
        "audit_events is append-only: old events expire only through the retention job';"
        " END IF;"
        " END"
    )
    op.execute(
        "CREATE PROCEDURE cmschat_expire_audit_events(IN through_id BIGINT)"
        " MODIFIES SQL DATA SQL SECURITY DEFINER"
        " BEGIN"
        " INSERT INTO audit_expiry_permit (id) VALUES (1);"
        " DELETE FROM audit_events WHERE id <= through_id;"
        " DELETE FROM audit_expiry_permit;"
        " END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP PROCEDURE cmschat_expire_audit_events")
    op.execute("DROP TRIGGER audit_events_refuse_delete")
    op.execute("DROP TRIGGER audit_events_refuse_update")
    op.execute("DROP TABLE audit_expiry_permit")
    op.drop_table("audit_head")
    op.drop_table("audit_events")
