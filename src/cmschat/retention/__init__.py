"""Retention: how long messages and attachments are kept, and purging what has expired."""
