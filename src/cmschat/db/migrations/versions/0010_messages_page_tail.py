"""messages.page_tail: each message's history item from "content" on, stored at its send

A send without files stores the bytes of its history item that need neither its id nor its
author (``chat.messages.page_tail``); the page writes the head (id, room, seq, author) and
splices the tail, so a rename changes nothing stored. No backfill: a NULL tail is built as
before. Triggers clear a tail in the transaction of any change it would show: any UPDATE of
the message that does not itself set the tail, a mention deleted or added after the send, a
file linked, changed or removed; on MariaDB also a user's deletion, whose mentions go by the
foreign key's cascade, which InnoDB runs without triggers (SQLite's key actions fire them).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 04:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The send inserts its mentions right after its message, whose tail lists them: a mention
# the tail already lists changes nothing, any other (an edit's, a hand insert) clears it.
# The tail's one unescaped '"mentions":[' is its key (a quote inside a JSON string is
# escaped), and its list ends at the first ']' after it.
_SQLITE = (
    "CREATE TRIGGER messages_page_tail_clear AFTER UPDATE ON messages"
    " WHEN OLD.page_tail IS NOT NULL AND NEW.page_tail IS OLD.page_tail"
    " BEGIN UPDATE messages SET page_tail = NULL WHERE id = NEW.id; END",
    "CREATE TRIGGER mentions_insert_page_tail AFTER INSERT ON mentions"
    " BEGIN UPDATE messages SET page_tail = NULL WHERE id = NEW.message_id"
    " AND page_tail IS NOT NULL AND instr(',' || substr("
    "substr(page_tail, instr(page_tail, '\"mentions\":[') + 12), 1,"
    " instr(substr(page_tail, instr(page_tail, '\"mentions\":[') + 12), ']') - 1"
    ") || ',', ',' || NEW.user_id || ',') = 0; END",
    "CREATE TRIGGER mentions_delete_page_tail AFTER DELETE ON mentions"
    " BEGIN UPDATE messages SET page_tail = NULL WHERE id = OLD.message_id"
    " AND page_tail IS NOT NULL; END",
    "CREATE TRIGGER attachments_insert_page_tail AFTER INSERT ON attachments"
    " WHEN NEW.message_id IS NOT NULL"
    " BEGIN UPDATE messages SET page_tail = NULL WHERE id = NEW.message_id"
    " AND page_tail IS NOT NULL; END",
    "CREATE TRIGGER attachments_update_page_tail AFTER UPDATE ON attachments"
    " WHEN NEW.message_id IS NOT NULL OR OLD.message_id IS NOT NULL"
    " BEGIN UPDATE messages SET page_tail = NULL WHERE id IN (NEW.message_id, OLD.message_id)"
    " AND page_tail IS NOT NULL; END",
    "CREATE TRIGGER attachments_delete_page_tail AFTER DELETE ON attachments"
    " WHEN OLD.message_id IS NOT NULL"
    " BEGIN UPDATE messages SET page_tail = NULL WHERE id = OLD.message_id"
    " AND page_tail IS NOT NULL; END",
)
_MARIADB = (
    "CREATE TRIGGER messages_page_tail_clear BEFORE UPDATE ON messages FOR EACH ROW"
    " SET NEW.page_tail = IF(NEW.page_tail <=> OLD.page_tail, NULL, NEW.page_tail)",
    "CREATE TRIGGER mentions_insert_page_tail AFTER INSERT ON mentions FOR EACH ROW"
    " UPDATE messages SET page_tail = NULL WHERE id = NEW.message_id AND page_tail IS NOT NULL"
    " AND FIND_IN_SET(NEW.user_id,"
    " SUBSTRING_INDEX(SUBSTRING_INDEX(page_tail, '\"mentions\":[', -1), ']', 1)) = 0",
    "CREATE TRIGGER mentions_delete_page_tail AFTER DELETE ON mentions FOR EACH ROW"
    " UPDATE messages SET page_tail = NULL WHERE id = OLD.message_id AND page_tail IS NOT NULL",
    "CREATE TRIGGER attachments_insert_page_tail AFTER INSERT ON attachments FOR EACH ROW"
    " UPDATE messages SET page_tail = NULL WHERE id = NEW.message_id AND page_tail IS NOT NULL",
    "CREATE TRIGGER attachments_update_page_tail AFTER UPDATE ON attachments FOR EACH ROW"
    " UPDATE messages SET page_tail = NULL WHERE id IN (NEW.message_id, OLD.message_id)"
    " AND page_tail IS NOT NULL",
    "CREATE TRIGGER attachments_delete_page_tail AFTER DELETE ON attachments FOR EACH ROW"
    " UPDATE messages SET page_tail = NULL WHERE id = OLD.message_id AND page_tail IS NOT NULL",
    "CREATE TRIGGER users_delete_page_tail BEFORE DELETE ON users FOR EACH ROW"
    " UPDATE messages SET page_tail = NULL WHERE page_tail IS NOT NULL"
    " AND id IN (SELECT message_id FROM mentions WHERE user_id = OLD.id)",
)
_NAMES = (
    "messages_page_tail_clear",
    "mentions_insert_page_tail",
    "mentions_delete_page_tail",
    "attachments_insert_page_tail",
    "attachments_update_page_tail",
    "attachments_delete_page_tail",
)


def upgrade() -> None:
    op.add_column(
        "messages",
        sa.Column("page_tail", sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")),
    )
    sqlite = op.get_bind().dialect.name == "sqlite"
    for trigger in _SQLITE if sqlite else _MARIADB:
        op.execute(trigger)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for name in _NAMES if sqlite else (*_NAMES, "users_delete_page_tail"):
        op.execute(f"DROP TRIGGER {name}")
    # SQLite drops a column in place (3.35+): no copy of the table, whose rebuild would
    # also meet the foreign keys of mentions and attachments.
    op.execute("ALTER TABLE messages DROP COLUMN page_tail")
