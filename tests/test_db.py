"""Migrations and engine setup on an empty SQLite file and on PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect, text

from bot import db

EXPECTED_TABLES = {
    "conversations", "unanswered_questions", "alembic_version", "processed_deliveries",
    "shared_secret_cache", "complaint_drafts", "complaints", "complaint_events", "notifications",
    "staff_users", "staff_sessions", "staff_invites", "audit_log", "queue_channels",
    "notification_attempts", "link_codes", "consumer_messages",
}


async def _tables(url: str) -> set[str]:
    engine = db.create_engine(url)
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    await engine.dispose()
    return names


async def test_upgrade_creates_the_schema_on_an_empty_database(database_url):
    await db.upgrade(database_url)
    assert await _tables(database_url) >= EXPECTED_TABLES


async def test_upgrade_twice_is_harmless(database_url):
    await db.upgrade(database_url)
    await db.upgrade(database_url)
    assert await _tables(database_url) >= EXPECTED_TABLES


async def test_sqlite_file_and_folder_are_created_and_use_wal(tmp_path):
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'x.db'}"
    await db.upgrade(url)
    engine = db.create_engine(url)
    async with engine.connect() as connection:
        mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
        timeout = (await connection.execute(text("PRAGMA busy_timeout"))).scalar_one()
    await engine.dispose()
    assert (tmp_path / "nested" / "dir" / "x.db").exists()
    assert mode == "wal"
    assert timeout == db.SQLITE_BUSY_TIMEOUT_MS


def test_plain_urls_get_async_drivers():
    assert db.async_url("sqlite:///var/x.db").drivername == "sqlite+aiosqlite"
    assert db.async_url("postgresql://u@h/d").drivername == "postgresql+asyncpg"
    assert db.async_url("postgres://u@h/d").drivername == "postgresql+asyncpg"


async def test_ping_reports_an_unreachable_database():
    engine = db.create_engine("postgresql://nobody@127.0.0.1:1/none")
    assert await db.ping(engine) is False
    await engine.dispose()


async def test_migrations_match_the_models(database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from bot.models import Base

    await db.upgrade(database_url)
    engine = db.create_engine(database_url)
    async with engine.connect() as connection:
        differences = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata))
    await engine.dispose()
    assert differences == []
