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
from sqlalchemy import select

from bot import db
from bot.complaint_drafts import load_draft, new_draft
from bot.models import ComplaintDraft, Conversation, UnansweredQuestion, as_utc
from bot.state import load_state, save_state
from bot.transactions import Transactions

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


async def test_draft_changes_are_written_at_commit_and_only_then(transactions):
    async with transactions.begin() as tx:
        draft = new_draft(tx, "wechat", "u6")
        draft.update({"values": {"story": "扣了年费"}, "order": ["story"]})
        assert await load_draft(tx, "wechat", "u6") is draft
    with pytest.raises(Boom):
        async with transactions.begin() as tx:
            draft = await load_draft(tx, "wechat", "u6")
            assert draft is not None
            draft.update({"values": {}, "order": []})
            raise Boom
    async with transactions.begin() as tx:
        session = await tx.session()
        row = await session.get(ComplaintDraft, ("wechat", "u6"))
        assert row is not None and row.data["values"] == {"story": "扣了年费"}
        assert as_utc(row.created_at) <= as_utc(row.updated_at)


async def test_a_discarded_draft_is_deleted(transactions):
    async with transactions.begin() as tx:
        new_draft(tx, "web", "u7")
    async with transactions.begin() as tx:
        draft = await load_draft(tx, "web", "u7")
        assert draft is not None
        draft.discard()
        assert await load_draft(tx, "web", "u7") is None
    async with transactions.begin() as tx:
        assert await load_draft(tx, "web", "u7") is None


async def test_a_draft_created_and_discarded_in_one_turn_writes_nothing(transactions):
    async with transactions.begin() as tx:
        new_draft(tx, "web", "u8").discard()
    async with transactions.begin() as tx:
        session = await tx.session()
        assert await session.get(ComplaintDraft, ("web", "u8")) is None


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
