"""SQLite for the async engine without a thread hop per call.

SQLAlchemy's async SQLite dialect drives aiosqlite, which runs every cursor call (cursor,
execute, fetch, close) on a helper thread and wakes the event loop for each result.  A
message costs a dozen such calls, and under load those hand-offs, not SQLite, were most of
the worker's time (benchmarks/README.md).  A local SQLite statement of this service takes
microseconds, less than the hand-off itself, so this module offers the same asyncio
interface as an `aiosqlite.Connection` but runs each call directly on the standard
library's `sqlite3` connection, in the event loop's thread.  It is plugged in through
SQLAlchemy's documented `async_creator` hook; the dialect, its type handling and its
error classes stay those of aiosqlite.

One wait is made asynchronous on purpose: when another process holds the write lock,
`BEGIN IMMEDIATE` fails at once with "database is locked" (the connection's own busy
timeout is zero), and `execute` retries it with `asyncio.sleep` backoff until
`busy_timeout_s`, so the worker keeps serving while it waits.  Within the process the
single pooled connection (`bot.db`) already queues transactions, so this wait is only
ever for another process, such as a `xiaobao` command.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any

BACKOFF_START_S = 0.001
BACKOFF_MAX_S = 0.05


class InlineCursor:
    """An `aiosqlite.Cursor` look-alike over a `sqlite3.Cursor`."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid


class _ImmediateQueue:
    """What SQLAlchemy's adapter puts isolation-level changes on: run them at once."""

    def put_nowait(self, item: tuple[asyncio.Future[None], Callable[[], None]]) -> None:
        future, function = item
        try:
            function()
        except Exception as error:  # noqa: BLE001 - handed to the awaiting caller
            future.set_exception(error)
        else:
            future.set_result(None)


class InlineConnection:
    """An `aiosqlite.Connection` look-alike that runs `sqlite3` calls in the caller's thread."""

    def __init__(self, connection: sqlite3.Connection, busy_timeout_s: float) -> None:
        self._conn = connection
        self._tx = _ImmediateQueue()
        self.busy_timeout_s = busy_timeout_s

    @property
    def sqlite(self) -> sqlite3.Connection:
        """The standard library connection, for statements run straight at the driver
        (`bot.transactions`)."""
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._conn.isolation_level = value

    async def cursor(self) -> InlineCursor:
        return _LockWaitingCursor(self._conn.cursor(), self.busy_timeout_s)

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        cursor = await self.cursor()
        return await cursor.execute(sql, parameters)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    def stop(self) -> None:
        """Forced close (SQLAlchemy's terminate): nothing runs elsewhere to stop."""
        self._conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)


class _LockWaitingCursor(InlineCursor):
    """Retries a statement refused for a lock held elsewhere, without blocking the loop."""

    def __init__(self, cursor: sqlite3.Cursor, busy_timeout_s: float) -> None:
        super().__init__(cursor)
        self._busy_timeout_s = busy_timeout_s

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        await execute_waiting(self._cursor, sql, self._busy_timeout_s, parameters)
        return self


async def execute_waiting(target: sqlite3.Cursor | sqlite3.Connection, sql: str,
                          busy_timeout_s: float, parameters: Any = ()) -> None:
    """Run a statement, retrying with asyncio backoff while another process holds the lock."""
    deadline = time.monotonic() + busy_timeout_s
    pause = BACKOFF_START_S
    while True:
        try:
            target.execute(sql, parameters)
            return
        except sqlite3.OperationalError as error:
            if not is_busy(error) or time.monotonic() + pause > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, BACKOFF_MAX_S)


def is_busy(error: sqlite3.OperationalError) -> bool:
    """A lock held by another connection (worth waiting for), not a real failure."""
    return getattr(error, "sqlite_errorcode", None) in (
        sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "database is locked" in str(error)


def async_creator(database: str, busy_timeout_s: float) -> Callable[[], Any]:
    """The `async_creator` for `create_async_engine`: one inline connection per call."""

    async def connect() -> InlineConnection:
        connection = sqlite3.connect(database, timeout=0, isolation_level=None,
                                     check_same_thread=False, uri=database.startswith("file:"))
        return InlineConnection(connection, busy_timeout_s)

    return connect
