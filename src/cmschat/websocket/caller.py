"""What a WebSocket connection keeps of its signed-in user: a few plain fields.

Not the ORM ``User`` row: a loaded instance carries SQLAlchemy's instance state, a dict of
every column (the password hash too) and the committed values, several KiB that an idle
connection would hold for hours (docs/performance.md, section 1). A connection is
closed when its account changes (``CLOSE_RECONNECT``), so the snapshot never goes stale
for long.
"""

from __future__ import annotations

from dataclasses import dataclass

from cmschat.accounts.models import Role, User


@dataclass(frozen=True, slots=True)
class Caller:
    """The signed-in user of one connection, as the frames it sends need it."""

    id: int
    username: str
    display_name: str
    role: Role

    @classmethod
    def of(cls, user: User) -> Caller:
        """The fields of a loaded user."""
        return cls(
            id=user.id, username=user.username, display_name=user.display_name, role=user.role
        )

    def as_user(self) -> User:
        """A transient ``User`` with these fields (in no session, never flushed), for the
        services that take one and read its id and names; the frame actions keep one
        only once their connection sends (idle connections hold none)."""
        return User(
            id=self.id, username=self.username, display_name=self.display_name, role=self.role
        )
