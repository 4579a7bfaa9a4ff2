"""One transaction per message: driver-level statements and the ORM agree, on both databases.

On SQLite `bot.transactions` runs prebuilt statements straight on the `sqlite3` cursor with
SQLAlchemy's compiled conversions; these tests pin that what it writes is what the ORM
reads (and the other way round), that the ORM session it opens shares its transaction,
and that a failed block leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import db
from bot.models import Conversation, UnansweredQuestion, as_utc
from bot.state import load_state, read_state, save_state, save_state_if_unchanged
from bot.transactions import Transactions, _TurnConnections
from tests.conftest import postgres_url, reset_postgres

STATE = {"mode": "complaint", "buttons": ["kb:a", "menu"], "note": "老人家 😀 \u2028 ok"}


class Boom(Exception):
    """Raised inside a transaction block to see it rolled back."""


@pytest.fixture
async def transactions(database_url: str) -> AsyncIterator[Transactions]:
    await db.upgrade(database_url)
    engine = db.create_engine(database_url)
    transactions = Transactions(engine)
    yield transactions
    await transactions.close()
    await engine.dispose()


async def test_state_written_at_the_driver_is_what_the_orm_reads(transactions):
    async with transactions.begin() as tx:
        await save_state(tx, "web", "u1", STATE)
    async with transactions.begin() as tx:
        session = await tx.session()
        row = await session.get(Conversation, ("web", "u1"))
        assert row is not None and row.state == STATE and row.version == 1
        assert abs(as_utc(row.updated_at) - datetime.now(UTC)) < timedelta(minutes=1)


async def test_state_written_by_the_orm_is_what_the_driver_reads(transactions):
    async with transactions.begin() as tx:
        session = await tx.session()
        session.add(Conversation(channel="web", user_id="u2", state=STATE, version=3))
    async with transactions.begin(read_only=True) as tx:
        assert await load_state(tx, "web", "u2") == STATE
        assert await load_state(tx, "web", "nobody") == {}


async def test_saving_twice_updates_the_same_row(transactions):
    for _ in range(3):
        async with transactions.begin() as tx:
            state = await load_state(tx, "web", "u3")
            state["turns"] = state.get("turns", 0) + 1
            await save_state(tx, "web", "u3", state)
    async with transactions.begin() as tx:
        session = await tx.session()
        row = await session.get(Conversation, ("web", "u3"))
        assert row is not None and row.state["turns"] == 3 and row.version == 3


async def test_a_failed_block_keeps_neither_driver_nor_orm_changes(transactions):
    with pytest.raises(Boom):
        async with transactions.begin() as tx:
            await save_state(tx, "web", "u4", STATE)
            session = await tx.session()
            session.add(UnansweredQuestion(text="问", normalized="问", score=0.1))
            await session.flush()
            raise Boom
    async with transactions.begin() as tx:
        assert await load_state(tx, "web", "u4") == {}
        session = await tx.session()
        assert (await session.scalars(select(UnansweredQuestion))).all() == []


async def test_orm_changes_are_visible_to_later_driver_statements(transactions):
    async with transactions.begin() as tx:
        session = await tx.session()
        session.add(Conversation(channel="web", user_id="u5", state={"a": 1}))
        # Not flushed yet: the driver-level read must still see it.
        assert await load_state(tx, "web", "u5") == {"a": 1}


# -- optimistic turns: an unlocked read, a versioned last write ------------------------------
async def test_a_state_saved_against_its_version_is_kept(transactions):
    async with transactions.begin() as tx:
        state, version = await read_state(tx, "web", "o1")
        assert (state, version) == ({}, None)
        assert await save_state_if_unchanged(tx, "web", "o1", {"n": 1}, version)
    async with transactions.begin() as tx:
        state, version = await read_state(tx, "web", "o1")
        assert (state, version) == ({"n": 1}, 1)
        assert await save_state_if_unchanged(tx, "web", "o1", {"n": 2}, version)
    async with transactions.begin(read_only=True) as tx:
        assert await read_state(tx, "web", "o1") == ({"n": 2}, 2)


async def test_a_state_saved_meanwhile_is_not_overwritten(transactions):
    async with transactions.begin() as tx:
        await save_state(tx, "web", "o2", {"n": 1})
    async with transactions.begin() as tx:
        _, version = await read_state(tx, "web", "o2")
    async with transactions.begin() as tx:  # another turn of the same user wins
        await save_state(tx, "web", "o2", {"n": 5})
    async with transactions.begin() as tx:
        assert not await save_state_if_unchanged(tx, "web", "o2", {"n": 2}, version)
    async with transactions.begin() as tx:  # a new user, created meanwhile by another turn
        await save_state(tx, "web", "o3", {"first": True})
    async with transactions.begin() as tx:
        assert not await save_state_if_unchanged(tx, "web", "o3", {"second": True}, None)
    async with transactions.begin(read_only=True) as tx:
        assert await load_state(tx, "web", "o2") == {"n": 5}
        assert await load_state(tx, "web", "o3") == {"first": True}


async def test_nothing_runs_after_the_last_statement(transactions):
    with pytest.raises(RuntimeError, match="last statement"):
        async with transactions.begin() as tx:
            await save_state_if_unchanged(tx, "web", "o4", {}, None)
            await load_state(tx, "web", "o4")


async def test_a_last_statement_inside_a_failed_block_is_rolled_back(transactions):
    with pytest.raises(Boom):
        async with transactions.begin() as tx:
            await save_state(tx, "web", "o6", {"n": 1})
            await save_state_if_unchanged(tx, "web", "o6", {"n": 2}, 1)
            raise Boom
    async with transactions.begin(read_only=True) as tx:
        assert await read_state(tx, "web", "o6") == ({}, None)


async def test_on_postgresql_a_lone_read_and_write_hold_no_transaction_open():
    """The point of optimistic turns: no BEGIN before the read, the write committed at once
    (so another connection sees it before the block ends), no transaction left idle."""
    url = postgres_url()
    await reset_postgres(url)
    await db.upgrade(url)
    engine, admin = db.create_engine(url), db.create_engine(url)
    transactions = Transactions(engine)
    try:
        async with transactions.begin() as tx, admin.connect() as watcher:
            row = await tx.read_first(select(func.pg_backend_pid()), {})
            assert row is not None
            backend = row[0]
            activity = text("SELECT state FROM pg_stat_activity WHERE pid = :pid")
            assert (await watcher.execute(activity, {"pid": backend})).scalar_one() == "idle"
            assert await save_state_if_unchanged(tx, "web", "p1", {"n": 1}, None)
            assert (await watcher.execute(activity, {"pid": backend})).scalar_one() == "idle"
            await watcher.rollback()  # a fresh snapshot for the next read
            seen = await watcher.execute(
                select(Conversation.state).where(Conversation.user_id == "p1"))
            assert seen.scalar_one() == {"n": 1}
    finally:
        await transactions.close()
        await engine.dispose()
        await admin.dispose()


async def _postgres_transactions(pool_size: int) -> tuple[AsyncEngine, Transactions]:
    url = postgres_url()
    await reset_postgres(url)
    await db.upgrade(url)
    engine = db.create_engine(url, pool_size=pool_size)
    return engine, Transactions(engine)


async def _held_turn(transactions: Transactions, started: asyncio.Event,
                     release: asyncio.Event, backends: list[int]) -> None:
    async with transactions.begin() as tx:
        row = await tx.read_first(select(func.pg_backend_pid()), {})
        assert row is not None
        backends.append(row[0])
        started.set()
        await release.wait()


async def test_on_postgresql_turns_hand_their_connections_on_and_leave_two_in_the_pool():
    """A connection that ended its turn cleanly serves the next turn (no checkout).  The
    turns hold at most all of the pool but two: a turn beyond that waits for one to be
    handed on, while the rest of the worker still gets a connection at once."""
    engine, transactions = await _postgres_transactions(pool_size=4)
    try:
        backends: list[int] = []
        go_on = asyncio.Event()
        go_on.set()
        for _ in range(3):
            await _held_turn(transactions, asyncio.Event(), go_on, backends)
        assert len(set(backends)) == 1  # one connection, passed on

        release = asyncio.Event()
        started = [asyncio.Event() for _ in range(3)]
        running = [asyncio.create_task(_held_turn(transactions, event, release, backends))
                   for event in started]
        await asyncio.wait_for(asyncio.gather(started[0].wait(), started[1].wait()), 10)
        await asyncio.sleep(0.05)
        assert not started[2].is_set()  # the third turn waits in line
        assert engine.pool.checkedout() == 2  # type: ignore[attr-defined]
        async with engine.connect() as dashboard:  # not kept waiting by the turns
            assert (await dashboard.execute(text("SELECT 1"))).scalar_one() == 1
        release.set()
        await asyncio.wait_for(asyncio.gather(*running), 10)
        assert backends[-1] in backends[-3:-1]  # handed on, not a new connection
        assert engine.pool.checkedout() == 2  # type: ignore[attr-defined]
        await transactions.close()
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await transactions.close()
        await engine.dispose()


async def test_on_postgresql_turns_waiting_for_a_connection_get_it_in_arrival_order():
    engine, transactions = await _postgres_transactions(pool_size=3)  # the turns hold 1
    try:
        order: list[int] = []

        async def turn(number: int) -> None:
            async with transactions.begin() as tx:
                await tx.read_first(select(func.pg_backend_pid()), {})
                order.append(number)
                await asyncio.sleep(0.01)

        await asyncio.wait_for(asyncio.gather(*(turn(n) for n in range(6))), 10)
        assert order == list(range(6))
    finally:
        await transactions.close()
        await engine.dispose()


async def test_on_postgresql_a_turn_that_waits_too_long_gets_the_pool_timeout_and_loses_nothing():
    """Waiting for a connection ends, like waiting on SQLAlchemy's pool, in `PoolTimeout`
    (a 503); a wait given up, by timeout or cancellation, takes no place in the line."""
    engine, _ = await _postgres_transactions(pool_size=3)
    turns = _TurnConnections(engine, limit=1, timeout_s=0.2)
    try:
        busy = await turns.take()
        with pytest.raises(PoolTimeout):
            await turns.take()
        cancelled = asyncio.create_task(turns.take())
        await asyncio.sleep(0.05)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        later = asyncio.create_task(turns.take())
        await asyncio.sleep(0.05)
        await turns.give_back(busy, clean=True)
        assert await asyncio.wait_for(later, 1) is busy
        await turns.give_back(busy, clean=False)  # a failed turn: back to the pool
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        again = await asyncio.wait_for(turns.take(), 1)  # its place was freed
        await turns.give_back(again, clean=True)
    finally:
        await turns.close()
        await engine.dispose()


async def test_on_postgresql_a_failed_turn_gives_its_connection_back():
    url = postgres_url()
    await reset_postgres(url)
    await db.upgrade(url)
    engine = db.create_engine(url, pool_size=4)
    transactions = Transactions(engine)
    try:
        with pytest.raises(Boom):
            async with transactions.begin() as tx:
                await save_state(tx, "web", "f1", STATE)
                raise Boom
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        async with transactions.begin() as tx:
            assert await read_state(tx, "web", "f1") == ({}, None)
    finally:
        await transactions.close()
        await engine.dispose()


async def test_a_turn_waits_for_a_write_elsewhere_in_the_process_then_goes_on(sqlite_url):
    """SQLite: the turns' connection and the pool's other one take the write lock in turn,
    and the waiting side does not block the event loop."""
    await db.upgrade(sqlite_url)
    engine = db.create_engine(sqlite_url)
    transactions = Transactions(engine)
    try:
        sessions = db.create_sessionmaker(engine)
        async with sessions() as writer, writer.begin():
            writer.add(Conversation(channel="web", user_id="dashboard", state={}))
            await writer.flush()  # holds SQLite's write lock until the block ends

            async def turn() -> None:
                async with transactions.begin() as tx:
                    await save_state(tx, "web", "waiting", {"turns": 1})

            waiting = asyncio.create_task(turn())
            await asyncio.sleep(0.2)
            assert not waiting.done()  # queued behind the writer, loop still running
        await asyncio.wait_for(waiting, timeout=5)
        async with transactions.begin(read_only=True) as tx:
            assert await load_state(tx, "web", "waiting") == {"turns": 1}
    finally:
        await transactions.close()
        await engine.dispose()


async def test_turns_on_the_held_connection_run_one_after_another(sqlite_url):
    await db.upgrade(sqlite_url)
    engine = db.create_engine(sqlite_url)
    transactions = Transactions(engine)
    try:
        async def add_one() -> None:
            async with transactions.begin() as tx:
                state = await load_state(tx, "web", "counter")
                await asyncio.sleep(0)  # let the others try to interleave
                state["n"] = state.get("n", 0) + 1
                await save_state(tx, "web", "counter", state)

        await asyncio.gather(*(add_one() for _ in range(20)))
        async with transactions.begin(read_only=True) as tx:
            assert await load_state(tx, "web", "counter") == {"n": 20}
    finally:
        await transactions.close()
        await engine.dispose()
