"""Persistence: schema, migrations and repositories (SQLite by default)."""
