"""Database engine creation and migrations.

Operators write plain `sqlite:///path` or `postgresql://user@host/db` URLs; the service
needs async drivers, SQLite tuned for a web service (WAL, a busy timeout) and a schema
that Alembic keeps current.  All of that lives here so the rest of the code only ever
sees an `AsyncEngine` and an `async_sessionmaker`.

SQLite transactions begin IMMEDIATE: the write lock is taken at BEGIN, where the busy
timeout makes concurrent writers queue, instead of at the first write, where a transaction
whose snapshot is stale fails at once with "database is locked".  A connection run with
`READ_ONLY` (as `ping` does) begins DEFERRED and never waits for a writer.

Within one process SQLite gets two pooled connections: one that the message turns keep
and take in turn (`bot.transactions`), and one for everything else (dashboard,
schedulers, commands).  SQLite admits one writer at a time anyway, and a writer waiting in
SQLite's busy handler sleeps and polls (in steps of up to 100 ms) and gives up after the
busy timeout, so under load many pooled connections turned queueing into seconds of
latency and "database is locked" errors.  Turns queue on their connection, first come
first served; the other connection is written rarely, and waits for the lock with
asyncio backoff (`bot.sqlite_inline`) rather than in SQLite.  Code must never open a
second session while holding one (it would wait for itself until
`SQLITE_POOL_TIMEOUT_S`); the service passes its session down instead.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from bot import sqlite_inline

SQLITE_BUSY_TIMEOUT_MS = 5000
SQLITE_POOL_TIMEOUT_S = 30.0
SQLITE_CONNECTIONS = 2  # the turns' own connection and one for the rest (see above)
PING_TIMEOUT_S = 5.0
# Execution options of a connection that only reads (on SQLite: BEGIN DEFERRED).
READ_ONLY = {"xiaobao_read_only": True}
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def async_url(url: str) -> URL:
    """Translate an operator's database URL into one with an async driver."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database URL scheme: {parsed.drivername}")


def _ensure_sqlite_folder(url: URL) -> None:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    """Every SQLite connection: WAL so readers never block the writer, and foreign keys.

    The busy timeout stays zero: `bot.sqlite_inline` waits for another process's lock
    with asyncio backoff instead of inside SQLite, which would block the event loop.
    """
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    # The driver's own implicit BEGIN would be DEFERRED; `_begin_sqlite` emits ours instead.
    dbapi_connection.isolation_level = None


def _begin_sqlite(connection: Any) -> None:
    """Take SQLite's write lock at BEGIN, so a busy writer is waited for, not failed."""
    read_only = connection.get_execution_options().get("xiaobao_read_only", False)
    # Straight to the driver's cursor: a full SQLAlchemy execution of one BEGIN per
    # transaction cost as much as the turn's own SELECT.
    if connection.connection.driver_connection.sqlite.in_transaction:
        return  # begun at the driver already (`bot.transactions`); SQLAlchemy joins it
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        cursor.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")
    finally:
        cursor.close()


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """Create the service's async engine for an operator-supplied URL.

    Statement parameters (names, phone numbers) are hidden from logs and error messages.
    """
    target = async_url(url)
    if target.get_backend_name() == "sqlite":
        _ensure_sqlite_folder(target)
        engine = create_async_engine(
            target, echo=echo, hide_parameters=True,
            pool_size=SQLITE_CONNECTIONS, max_overflow=0, pool_timeout=SQLITE_POOL_TIMEOUT_S,
            async_creator=sqlite_inline.async_creator(target.database or ":memory:",
                                                      SQLITE_BUSY_TIMEOUT_MS / 1000),
        )
        event.listen(engine.sync_engine, "connect", _tune_sqlite)
        event.listen(engine.sync_engine, "begin", _begin_sqlite)
        return engine
    # No pool_pre_ping: with asyncpg it is three round trips (BEGIN, ping, ROLLBACK) on
    # every checkout, as many as the message's own work.  A connection that died with the
    # database fails once instead; SQLAlchemy then invalidates the whole pool and the
    # engine runs the turn again (bot.engine).
    # No overflow: SQLAlchemy closes an overflow connection as soon as it is returned, so
    # a worker whose turns outnumbered its pool (two workers sharing 2 cores with the
    # database) opened and closed sessions many times a second, each a forked backend
    # with cold caches: 184-366 sessions in a 16 s run instead of 13-23, and 15-25% fewer
    # messages a second.  A turn now waits for one of the pool's own connections, which
    # are opened as needed and kept (a wait past the pool's timeout is a 503, like an
    # outage: `is_unreachable`).
    return create_async_engine(
        target, echo=echo, pool_size=pool_size, max_overflow=0, hide_parameters=True,
    )


def is_in_process(engine: AsyncEngine) -> bool:
    """True on SQLite: the database runs inside this process, with one connection for the
    turns and a single one for everything else (see above), so whoever holds a session
    holds all of the worker's database access outside the turns."""
    return engine.dialect.name == "sqlite"


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit (no implicit reloads)."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine, timeout_s: float = PING_TIMEOUT_S) -> bool:
    """True when the database answers a trivial query in time (used by /healthz).

    A database that does not answer within `timeout_s` (unreachable, or every pooled
    connection held that long) counts as unhealthy rather than hanging the probe.
    """
    async def select_one() -> None:
        async with engine.connect() as connection:
            await connection.execution_options(**READ_ONLY)
            await connection.execute(text("SELECT 1"))

    try:
        async with asyncio.timeout(timeout_s):  # unlike wait_for, never swallows a cancel
            await select_one()
    except Exception:  # noqa: BLE001 - any failure means "not healthy"
        return False
    return True


def is_unreachable(error: BaseException) -> bool:
    """True when `error` means the database cannot be reached just now (restarting, cut
    off, every connection busy), as opposed to a bug.

    An outage is expected to pass: callers answer 503 and log one line, instead of a 500
    and a traceback for every message that arrives meanwhile.
    """
    cause = error.orig if isinstance(error, DBAPIError) else error
    if isinstance(cause, sqlite3.Error):
        # A lock held past the busy timeout; any other SQLite error (a missing table, a
        # full disk) is no passing outage and keeps its traceback.
        return isinstance(cause, sqlite3.OperationalError) and sqlite_inline.is_busy(cause)
    if isinstance(error, DBAPIError):
        return bool(error.connection_invalidated) or isinstance(
            error, OperationalError | InterfaceError)
    return isinstance(error, ConnectionError | socket.gaierror | PoolTimeout)


def alembic_config(url: str) -> AlembicConfig:
    """An Alembic configuration pointing at the packaged migrations and the given URL."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # The option goes through configparser, which reads "%" as interpolation: a URL with a
    # percent-encoded part (a Unix socket's ?host=%2Fvar%2Frun%2Fpostgresql) needs "%%".
    rendered = async_url(url).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def upgrade_sync(url: str, revision: str = "head") -> None:
    """Apply migrations (blocking); creates the SQLite file and its folder if needed."""
    target = async_url(url)
    if target.get_backend_name() == "sqlite":
        _ensure_sqlite_folder(target)
    command.upgrade(alembic_config(url), revision)


async def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations from async code without blocking the event loop."""
    await asyncio.to_thread(upgrade_sync, url, revision)
