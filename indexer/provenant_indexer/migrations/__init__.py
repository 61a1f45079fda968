"""Alembic migrations of the index schema (schema.py is the source; revisions are generated from it)."""
