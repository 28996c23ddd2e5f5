"""chat: full-text search index (bigram tokens; FTS5 on SQLite, FULLTEXT on MariaDB)

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("CREATE VIRTUAL TABLE message_search USING fts5(grams, tokenize='unicode61')")
    else:
        op.execute(
            "CREATE TABLE message_search ("
            " message_id BIGINT NOT NULL PRIMARY KEY,"
            " grams MEDIUMTEXT NOT NULL,"
            " FULLTEXT KEY ft_message_search_grams (grams),"
            " CONSTRAINT fk_message_search_message_id_messages FOREIGN KEY (message_id)"
            " REFERENCES messages (id) ON DELETE CASCADE"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
        )


def downgrade() -> None:
    op.execute("DROP TABLE message_search")
