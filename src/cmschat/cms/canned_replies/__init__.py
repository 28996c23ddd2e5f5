"""Canned replies: text agents insert in the composer with ``/shortcut``."""
