"""One database transaction per message, with the hot statements run at the driver.

Every message runs a handful of small statements (the user's state, which holds the
complaint draft and WeChat's memory of answered messages; a declined question).  Through
SQLAlchemy's async ORM each cost about ten times what SQLite itself spends on it: a
session and its unit of work, an execution context, and a greenlet switch per call
(benchmarks/README.md, "load").  So a `Transaction` runs these prebuilt statements
differently per database:

- on SQLite, whose driver works in the process (`bot.sqlite_inline`), straight on the
  `sqlite3` connection that the turns keep for themselves (`_HeldSqlite`), BEGIN and
  COMMIT included, with the SQL string, parameter order and type conversions that
  SQLAlchemy compiled once for each statement, so values are stored exactly as the ORM
  stores and reads them;
- on PostgreSQL, round trips are what is saved first: the transaction is begun by the
  driver at its first statement, and a turn's unlocked first read and its only write are
  each sent on their own (`read_first`, `run_last`), without BEGIN and COMMIT around
  them.  Those two, most turns' only statements, go straight to the asyncpg connection
  with SQLAlchemy's compiled SQL and conversions; a failure among them is run again
  through SQLAlchemy, whose disconnect handling the engine relies on (the whole pool is
  replaced after a database restart, `bot.engine` retries the turn).  Statements inside
  a transaction (the locked turn, filing) run as SQLAlchemy Core statements on the
  connection, so that SQLAlchemy begins and ends the transaction.  The connections pass
  from turn to turn (`_TurnConnections`) instead of going back to SQLAlchemy's pool.

The ORM is still there for the rare work that needs it (filing a complaint, staff
replies): `Transaction.session()` opens a session on the same connection and transaction
the first time it is asked for, and the transaction flushes it before committing.

In-process, per message, this took a question turn from 3.7 to 1.2 ms of CPU, a scam
check from 2.4 to 0.5 ms and a complaint dialogue step from 4.1 to 1.4 ms.  On
PostgreSQL the asyncpg path and the connections handed on took the worker's CPU per
message of the benchmark's mix from 1.36 to 0.90-0.94 ms, what it spends on SQLite
(benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.sql.expression import Executable

from bot import sqlite_inline
from bot.db import READ_ONLY, SQLITE_BUSY_TIMEOUT_MS, is_in_process

Row = tuple[Any, ...]
Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    """A statement as the SQLite driver takes it: SQL, parameter order, conversions."""

    statement: Executable  # kept so the id() used as cache key is never reused
    sql: str
    names: tuple[str, ...]
    defaults: Mapping[str, Any]
    binds: tuple[Processor, ...]
    results: tuple[Processor, ...]

    def parameters(self, values: Mapping[str, Any]) -> list[Any]:
        out = []
        for name, bind in zip(self.names, self.binds, strict=True):
            value = values[name] if name in values else self.defaults[name]
            out.append(bind(value) if bind is not None and value is not None else value)
        return out

    def row(self, raw: Sequence[Any]) -> Row:
        return tuple(
            result(value) if result is not None else value
            for value, result in zip(raw, self.results, strict=True)
        )


def _compile(statement: Executable, dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    names = tuple(compiled.positiontup or ())
    # The dialect's own implementation of each type (SQLite stores DateTime as text in a
    # format of SQLAlchemy's), so values match what the ORM writes and expects to read.
    binds = tuple(compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
                  for name in names)
    columns = getattr(statement, "selected_columns", None)
    results = tuple(
        column.type.dialect_impl(dialect).result_processor(dialect, None)
        for column in (columns or ())
    )
    defaults = {name: compiled.binds[name].effective_value for name in names
                if not compiled.binds[name].required}
    return _Compiled(statement, compiled.string, names, defaults, binds, results)


class Transaction:
    """One open transaction: prebuilt statements, and an ORM session when one is needed."""

    def __init__(self, connection: AsyncConnection, sqlite: sqlite3.Connection | None,
                 compiled: dict[int, _Compiled]) -> None:
        self.connection = connection
        self._sqlite = sqlite
        self._compiled = compiled
        self._session: AsyncSession | None = None
        self._ended = False  # by `run_last`

    def _prepared(self, statement: Executable) -> _Compiled:
        prepared = self._compiled.get(id(statement))
        if prepared is None:
            prepared = _compile(statement, self.connection.dialect)
            self._compiled[id(statement)] = prepared
        return prepared

    async def _flush(self) -> None:
        # The ORM must not hold changes the driver-level statements cannot see.
        if self._session is not None and (self._session.new or self._session.dirty
                                          or self._session.deleted):
            await self._session.flush()

    def _untouched(self) -> bool:
        """True while nothing has run in this transaction, so a statement may run alone."""
        return (self._sqlite is None and self._session is None
                and not self.connection.in_transaction())

    def _check_open(self) -> None:
        if self._ended:
            raise RuntimeError("the transaction ended with its last statement")

    async def _alone(self, statement: Executable, values: Mapping[str, Any]) -> Any:
        """Run one statement outside any transaction (committed by the database at once).

        Sent straight to the asyncpg connection, with the SQL and conversions SQLAlchemy
        compiled once for it: a statement outside a transaction is sent alone by asyncpg,
        and skipping SQLAlchemy's execution machinery (an execution context, the driver
        adapter's cursor and a greenlet switch) halves the worker's CPU for the turn's two
        statements (benchmarks/README.md, "load").  If it fails, it runs once more through
        SQLAlchemy, whose error handling the engine relies on: a connection lost with a
        database restart is told from other errors, the whole pool is replaced, and
        `DBAPIError.connection_invalidated` says so.  Running it twice is safe because
        the reads are reads and the writes are conditional (`bot.state`): a write that
        did reach the database touches no row the second time, and the engine runs the
        turn again.
        """
        prepared = self._prepared(statement)
        driver = self.connection.sync_connection.connection.driver_connection  # type: ignore[union-attr]
        try:
            if prepared.results:
                raw = await driver.fetchrow(prepared.sql, *prepared.parameters(values))
                return prepared.row(raw) if raw is not None else None
            status = await driver.execute(prepared.sql, *prepared.parameters(values))
            return int(status.rsplit(" ", 1)[-1])
        except Exception:  # noqa: BLE001 - told apart by SQLAlchemy, just below
            return await self._alone_through_sqlalchemy(statement, values,
                                                        bool(prepared.results))

    async def _alone_through_sqlalchemy(self, statement: Executable,
                                        values: Mapping[str, Any], reads: bool) -> Any:
        """`_alone` the slow way: autocommit on the adapted connection, SQLAlchemy's
        execute (its errors translated), then ending SQLAlchemy's autobegun transaction,
        which sends nothing."""
        driver = self.connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
        driver.autocommit = True
        try:
            result = await self.connection.execute(statement, dict(values))
            await self.connection.commit()
        finally:
            driver.autocommit = False
        if reads:
            row = result.first()
            return tuple(row) if row is not None else None
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def read_first(self, statement: Executable,
                         values: Mapping[str, Any]) -> Row | None:
        """`first`, for a read that needs neither this transaction's snapshot nor its locks.

        When nothing has run in the transaction yet, PostgreSQL gets the SELECT on its
        own, without the BEGIN before it: one round trip instead of two.  What is read
        this way may change before the transaction commits; the caller must check that
        it did not (`run_last` with a version, say).  On SQLite it simply runs inside.
        """
        self._check_open()
        if not self._untouched():
            return await self.first(statement, values)
        row: Row | None = await self._alone(statement, values)
        return row

    async def run_last(self, statement: Executable, values: Mapping[str, Any]) -> int:
        """`run`, for the transaction's last statement; the number of rows it touched.

        When it is also the only one (no statement before it, no session), PostgreSQL
        gets it on its own and commits it at once: one round trip instead of BEGIN, the
        statement and COMMIT.  Nothing may run in the transaction after it.
        """
        self._check_open()
        if self._untouched():
            count = int(await self._alone(statement, values))
        else:
            count = await self.run(statement, values)
        self._ended = True
        return count

    async def first(self, statement: Executable, values: Mapping[str, Any]) -> Row | None:
        """The first row a prebuilt SELECT returns, converted as the ORM would, or None."""
        self._check_open()
        await self._flush()
        if self._sqlite is None:
            result = await self.connection.execute(statement, dict(values))
            row = result.first()
            return tuple(row) if row is not None else None
        prepared = self._prepared(statement)
        raw = self._sqlite.execute(prepared.sql, prepared.parameters(values)).fetchone()
        return prepared.row(raw) if raw is not None else None

    async def run(self, statement: Executable, values: Mapping[str, Any]) -> int:
        """Run a prebuilt INSERT, UPDATE or DELETE; the number of rows it touched."""
        self._check_open()
        await self._flush()
        if self._sqlite is None:
            result = await self.connection.execute(statement, dict(values))
            return int(result.rowcount)  # type: ignore[attr-defined]
        prepared = self._prepared(statement)
        return int(self._sqlite.execute(prepared.sql, prepared.parameters(values)).rowcount)

    async def session(self) -> AsyncSession:
        """An ORM session inside this transaction (opened on first use, flushed at commit)."""
        self._check_open()
        if self._session is None:
            if not self.connection.in_transaction():
                # Begun here, so the session joins it instead of owning (and, when it
                # closes, rolling back) a transaction of its own.
                await self.connection.begin()
            self._session = AsyncSession(bind=self.connection, expire_on_commit=False,
                                         autoflush=True)
        return self._session

    async def _commit(self) -> None:
        session = self._session
        if session is not None:
            await session.flush()
            if self._sqlite is not None:
                # On the held SQLite connection the session began SQLAlchemy's transaction
                # on top of ours; committing it commits the one SQLite transaction.
                await session.commit()
            await self._close_session()
        await self._end(commit=True)

    async def _rollback(self) -> None:
        try:
            if self._session is not None and self._sqlite is not None:
                await self._session.rollback()
        finally:
            await self._close_session()
            await self._end(commit=False)

    async def _end(self, commit: bool) -> None:
        """Commit or roll back at the driver what the ORM session has not ended itself."""
        if self._sqlite is None:
            # A turn whose statements each ran alone left nothing to end: skip the call
            # (a greenlet switch) that would send nothing.
            if self.connection.in_transaction():
                await (self.connection.commit() if commit else self.connection.rollback())
        elif self._sqlite.in_transaction:
            (self._sqlite.commit if commit else self._sqlite.rollback)()

    async def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


@asynccontextmanager
async def _run(transaction: Transaction) -> AsyncIterator[Transaction]:
    """Commit when the block ends, roll back when it (or the commit) raises."""
    try:
        yield transaction
    except BaseException:
        await transaction._rollback()
        raise
    try:
        await transaction._commit()
    except BaseException:
        await transaction._rollback()
        raise


class _HeldSqlite:
    """The one SQLite connection that every message's transaction uses, in turn.

    Checking a connection out of SQLAlchemy's pool and back, and beginning and committing
    through it, cost about 0.2 ms a transaction, more than the statements.  So on SQLite
    the turns keep one pooled connection checked out for the life of the process and
    take turns on it with an asyncio lock (first come, first served, as the pool's queue
    did); BEGIN and COMMIT go straight to `sqlite3`.  The rest of the process (dashboard,
    schedulers) uses the pool's other connection; a write there waits for the SQLite lock
    without blocking the event loop (`bot.sqlite_inline`).
    """

    def __init__(self, engine: AsyncEngine, busy_timeout_s: float) -> None:
        self._engine = engine
        self._busy_timeout_s = busy_timeout_s
        self._connection: AsyncConnection | None = None
        self._lock = asyncio.Lock()

    async def _held(self) -> AsyncConnection:
        connection = self._connection
        if connection is None or connection.closed or connection.invalidated:
            connection = self._connection = await self._engine.connect()
        return connection

    @asynccontextmanager
    async def begin(self, read_only: bool,
                    compiled: dict[int, _Compiled]) -> AsyncIterator[Transaction]:
        async with self._lock:
            connection = await self._held()
            fairy = connection.sync_connection.connection  # type: ignore[union-attr]
            sqlite = fairy.driver_connection.sqlite  # type: ignore[union-attr]
            await sqlite_inline.execute_waiting(
                sqlite, "BEGIN" if read_only else "BEGIN IMMEDIATE", self._busy_timeout_s)
            async with _run(Transaction(connection, sqlite, compiled)) as transaction:
                yield transaction

    async def close(self) -> None:
        async with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None:
                await connection.close()


class _TurnConnections:
    """The PostgreSQL connections of the message turns: a first-come, first-served pool
    on top of SQLAlchemy's, whose connections pass from turn to turn.

    Checking a connection out of SQLAlchemy's async pool and back costs two greenlet
    switches and a shielded task, and under load the turns queued in it: a message cost
    the worker a quarter more CPU than on SQLite, and waited up to 100 ms at p99.  So
    the turns keep the connections they check out, at most `limit` of them (the pool's
    size less two, left to the dashboard, the schedulers and the outbox).  A turn that
    ends cleanly hands its connection straight to the turn waiting longest, or leaves it
    idle for the next; a turn that finds none idle and the limit reached waits in line,
    for at most the pool's own timeout (then `PoolTimeout`, a 503 like any outage).

    A connection whose turn failed goes back to SQLAlchemy's pool, which resets it, and
    its place to the next in line.  After an invalidation (the database restarted, and
    SQLAlchemy now replaces the pool's connections at their next checkout), every idle
    one goes back too, so no turn meets dead connection after dead connection.
    """

    def __init__(self, engine: AsyncEngine, limit: int, timeout_s: float) -> None:
        self._engine = engine
        self._limit = limit
        self._timeout_s = timeout_s
        self._idle: list[AsyncConnection] = []
        self._waiting: collections.deque[asyncio.Future[AsyncConnection | None]] = (
            collections.deque())
        self._held = 0  # checked out of SQLAlchemy's pool for the turns: idle or in use

    async def take(self) -> AsyncConnection:
        """A connection for one turn: the last one idle (warmest), a new one from the pool
        while under the limit, or, in turn, one a finishing turn hands on."""
        if self._idle:  # checked when handed on; nothing touches it while idle
            return self._idle.pop()
        if self._held < self._limit:
            self._held += 1
        else:
            handed = await self._wait()
            if handed is not None:
                return handed
            # else: a place was passed on, with no connection in it.
        try:
            return await self._engine.connect()
        except BaseException:
            self._pass_place_on()
            raise

    async def give_back(self, connection: AsyncConnection, *, clean: bool) -> None:
        """The end of a turn: hand the connection on if the turn ended `clean`ly."""
        if clean and _reusable(connection):
            self._hand_on(connection)
            return
        invalidated = connection.invalidated
        await self._give_back_to_pool(connection)
        if invalidated:
            await self.close()

    async def close(self) -> None:
        """Give every idle connection back to the pool (at shutdown, after an outage)."""
        while self._idle:
            await self._give_back_to_pool(self._idle.pop())

    def _hand_on(self, connection: AsyncConnection) -> None:
        waiter = self._next_waiter()
        if waiter is not None:
            waiter.set_result(connection)
        else:
            self._idle.append(connection)

    async def _give_back_to_pool(self, connection: AsyncConnection) -> None:
        try:
            await connection.close()
        finally:
            self._pass_place_on()

    def _pass_place_on(self) -> None:
        """One connection fewer held: the next in line may open one in its place."""
        waiter = self._next_waiter()
        if waiter is not None:
            waiter.set_result(None)
        else:
            self._held -= 1

    def _next_waiter(self) -> asyncio.Future[AsyncConnection | None] | None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                return waiter
        return None

    async def _wait(self) -> AsyncConnection | None:
        waiter: asyncio.Future[AsyncConnection | None] = (
            asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        try:
            async with asyncio.timeout(self._timeout_s):
                return await waiter
        except BaseException as error:
            # Handed something just as the wait ended (a timeout, a cancelled request):
            # pass it on rather than lose a connection or a place.
            if waiter.done() and not waiter.cancelled():
                handed = waiter.result()
                if handed is not None:
                    self._hand_on(handed)
                else:
                    self._pass_place_on()
            else:
                waiter.cancel()
            if isinstance(error, TimeoutError):
                raise PoolTimeout(f"no database connection free for a turn within "
                                  f"{self._timeout_s:g} s") from None
            raise


def _reusable(connection: AsyncConnection) -> bool:
    return not (connection.closed or connection.invalidated or connection.in_transaction())


class Transactions:
    """Opens `Transaction`s on one engine; built once by `bot.services`, closed with it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._reader = engine.execution_options(**READ_ONLY)
        self._compiled: dict[int, _Compiled] = {}
        self._sqlite = (_HeldSqlite(engine, SQLITE_BUSY_TIMEOUT_MS / 1000)
                        if is_in_process(engine) else None)
        self._turns = _TurnConnections(engine, *_turn_pool_size(engine))

    @asynccontextmanager
    async def begin(self, *, read_only: bool = False) -> AsyncIterator[Transaction]:
        """A transaction committed when the block ends and rolled back when it raises.

        On SQLite a writing transaction takes the write lock at once (`bot.db`); a
        `read_only` one does not, for lookups that change nothing.
        """
        if self._sqlite is not None:
            async with self._sqlite.begin(read_only, self._compiled) as transaction:
                yield transaction
            return
        # Not begun here: the driver begins it at the first statement (see `run_last`).
        if read_only:
            async with self._reader.connect() as connection, \
                    _run(Transaction(connection, None, self._compiled)) as transaction:
                yield transaction
            return
        connection = await self._turns.take()
        clean = False
        try:
            async with _run(Transaction(connection, None, self._compiled)) as transaction:
                yield transaction
            clean = True
        finally:
            await self._turns.give_back(connection, clean=clean)

    async def close(self) -> None:
        """Give back the connections held for the turns (before the engine is disposed)."""
        if self._sqlite is not None:
            await self._sqlite.close()
        await self._turns.close()


def _turn_pool_size(engine: AsyncEngine) -> tuple[int, float]:
    """How many connections the turns may hold, and how long a turn waits for one: all of
    the pool but two, left to the rest of the worker (dashboard, schedulers, outbox),
    and the pool's own timeout."""
    pool = engine.pool
    size = getattr(pool, "size", None)
    timeout = getattr(pool, "timeout", None)
    return (max(1, int(size()) - 2) if callable(size) else 1,
            float(timeout()) if callable(timeout) else 30.0)
