"""Notices: announcements admins write and publish to everyone or to some rooms."""
