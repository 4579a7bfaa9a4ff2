"""Alembic migrations of the xiaobao schema (run by `xiaobao db upgrade`)."""
