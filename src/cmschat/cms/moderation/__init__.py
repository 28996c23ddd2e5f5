"""Moderation: admins find messages anywhere and delete them, with a reason."""
