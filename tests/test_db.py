"""Migrations and engine setup on an empty SQLite file and on PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from bot import db
from tests.conftest import postgres_url

EXPECTED_TABLES = {
    "conversations", "unanswered_questions", "alembic_version", "processed_deliveries",
    "shared_secret_cache", "complaints", "complaint_events", "notifications",
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
    assert timeout == 0  # waits happen in asyncio (bot.sqlite_inline), never inside SQLite


def _hold_write_lock(path: Path, seconds: float, locked: threading.Event) -> None:
    """Another writer (as a `xiaobao` command in another process would be)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    locked.set()
    time.sleep(seconds)
    other.execute("COMMIT")
    other.close()


async def _hold_lock_elsewhere(path: Path, seconds: float) -> threading.Thread:
    locked = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(path, seconds, locked))
    holder.start()
    await asyncio.to_thread(locked.wait)
    return holder


async def test_a_write_waits_for_a_lock_held_elsewhere_without_blocking_the_loop(tmp_path):
    path = tmp_path / "x.db"
    url = f"sqlite:///{path}"
    await db.upgrade(url)
    engine = db.create_engine(url)
    holder = await _hold_lock_elsewhere(path, 0.4)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO unanswered_questions (text, normalized, "
                                      "score, candidates, created_at) VALUES ('问', '问', 0, "
                                      "'[]', '2026-01-01')"))
    waited = time.monotonic() - started
    ticker.cancel()
    holder.join()
    async with engine.connect() as connection:
        rows = (await connection.execute(text("SELECT count(*) FROM unanswered_questions")))
        assert rows.scalar_one() == 1
    await engine.dispose()
    assert waited >= 0.3
    assert ticks >= 10  # the event loop kept running while the write waited


async def test_a_lock_held_past_the_busy_timeout_fails_the_write(tmp_path, monkeypatch):
    path = tmp_path / "x.db"
    url = f"sqlite:///{path}"
    await db.upgrade(url)
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    engine = db.create_engine(url)
    holder = await _hold_lock_elsewhere(path, 1.0)
    with pytest.raises(OperationalError, match="database is locked"):
        async with engine.begin() as connection:
            await connection.execute(text("DELETE FROM unanswered_questions"))
    holder.join()
    await engine.dispose()


async def test_a_burst_larger_than_the_pool_reuses_the_pools_own_connections():
    """Under load a worker's turns can outnumber its pool.  They wait for a pooled
    connection rather than each opening a PostgreSQL session (a forked backend) that is
    closed again the moment it is returned."""
    engine = db.create_engine(postgres_url(), pool_size=3)

    async def backend_of_one_turn() -> int:
        async with engine.connect() as connection:
            backend = await connection.scalar(text("SELECT pg_backend_pid()"))
            await asyncio.sleep(0.02)
            return int(backend)

    try:
        backends: set[int] = set()
        for _burst in range(3):
            backends |= set(await asyncio.gather(*(backend_of_one_turn() for _ in range(8))))
    finally:
        await engine.dispose()
    assert len(backends) <= 3


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


def test_only_a_database_out_of_reach_counts_as_unreachable():
    """Outages answer 503 and log one line; a bug keeps its 500 and its traceback."""
    assert db.is_unreachable(ConnectionRefusedError(111, "Connect call failed"))
    assert db.is_unreachable(sqlite3.OperationalError("database is locked"))
    assert not db.is_unreachable(sqlite3.OperationalError("no such table: conversations"))
    wrapped = OperationalError("SELECT 1", {}, sqlite3.OperationalError("no such table: x"))
    assert not db.is_unreachable(wrapped)
    assert not db.is_unreachable(ValueError("a bug"))


async def test_upgrading_moves_drafts_into_states_and_drops_wechats_old_rows(database_url):
    """0006–0007: a consumer half-way through a complaint resumes it after the upgrade;
    WeChat's claim and page rows, never read again, are deleted; downgrading moves the
    drafts back."""
    from alembic import command

    from bot.models import Conversation

    await db.upgrade(database_url, "0005")
    engine = db.create_engine(database_url)
    stamp = "2026-11-20 08:00:00+00:00"
    async with engine.begin() as connection:
        for statement in (
            "INSERT INTO conversations (channel, user_id, state, version, updated_at) VALUES"
            f" ('web', 'u1', '{{\"mode\": \"complaint\", \"turns\": 4}}', 4, '{stamp}')",
            "INSERT INTO complaint_drafts (channel, user_id, draft_key, data, created_at,"
            " updated_at) VALUES ('web', 'u1', 'k1', '{\"values\": {\"story\": \"扣年费\"},"
            f" \"order\": [\"story\"]}}', '{stamp}', '{stamp}')",
            "INSERT INTO complaint_drafts (channel, user_id, draft_key, data, created_at,"
            f" updated_at) VALUES ('wechat', 'u2', 'k2', '{{}}', '{stamp}', '{stamp}')",
            "INSERT INTO processed_deliveries (channel, delivery_key, reply, created_at)"
            f" VALUES ('wechat', 'msg:1', '答复', '{stamp}'), ('telegram', '7', NULL, '{stamp}')",
            "INSERT INTO conversations (channel, user_id, state, version, updated_at) VALUES"
            f" ('wechat-pages', 'u2', '{{\"pages\": [\"下一段\"]}}', 1, '{stamp}')",
        ):
            await connection.execute(text(statement))
    await db.upgrade(database_url)
    sessions = db.create_sessionmaker(engine)
    async with sessions() as session:
        u1 = await session.get(Conversation, ("web", "u1"))
        u2 = await session.get(Conversation, ("wechat", "u2"))
        pages = await session.get(Conversation, ("wechat-pages", "u2"))
        claims = (await session.execute(
            text("SELECT channel FROM processed_deliveries"))).scalars().all()
    assert u1.state["mode"] == "complaint" and u1.version == 5
    assert u1.state["draft"]["key"] == "k1"
    assert u1.state["draft"]["data"]["values"] == {"story": "扣年费"}
    assert u1.state["draft"]["updated_at"].startswith("2026-11-20T08:00:00")
    assert u2.state == {"draft": {"key": "k2", "data": {}, "created_at": u2.state["draft"][
        "created_at"], "updated_at": u2.state["draft"]["updated_at"]}}
    assert pages is None and claims == ["telegram"]
    await asyncio.to_thread(command.downgrade, db.alembic_config(database_url), "0006")
    async with engine.connect() as connection:
        drafts = (await connection.execute(text(
            "SELECT channel, user_id, draft_key FROM complaint_drafts ORDER BY user_id"))).all()
    async with sessions() as session:
        u1 = await session.get(Conversation, ("web", "u1"))
    await engine.dispose()
    assert [tuple(row) for row in drafts] == [("web", "u1", "k1"), ("wechat", "u2", "k2")]
    assert "draft" not in u1.state and u1.state["turns"] == 4


def test_a_url_with_percent_encoded_parts_reaches_alembic_intact():
    """A PostgreSQL on the same machine is reached through its Unix socket, whose URL
    carries the socket folder percent-encoded."""
    url = "postgresql://postgres@/xiaobao?host=/var/run/postgresql"
    config = db.alembic_config(url)
    assert make_url(config.get_main_option("sqlalchemy.url")) == db.async_url(url)
