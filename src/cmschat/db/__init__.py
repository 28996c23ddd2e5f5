"""Data layer: declarative base with audit columns, engines, sessions and migrations."""
