"""Accounts: users, passwords, tokens, login throttling and the admin's user management."""
