"""What the WeChat channel remembers, kept in the database so that any worker can answer.

Several workers answer WeChat behind one address, and WeChat retries a message that had no
answer in five seconds, possibly at another worker.  What the channel must remember about a
follower lives in that follower's conversation state (`bot.state`), under one key, and is
saved with the turn that answers a message, by the same statement:

- the messages answered lately, each with the reply it got, so that a retry is answered
  the same, at any worker, and never processed twice;
- the pages of a long answer still to be read with "更多".

In rows of their own (a claim row per message, a row of pages per follower) these cost
five more round trips per message on PostgreSQL than the state write alone
(benchmarks/README.md, "Runs of 21:33–22:46").  The memory is small: messages older
than `ANSWERED_SECONDS` are dropped at the follower's next message, replies are kept only
for the newest few, and `forget_silent` sweeps what followers who went quiet left behind
after a day, since a reply may repeat what the follower typed.

The access token all workers share is a row of its own (`SharedSecretCache`).  The
functions on a session never commit: the caller owns the transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.models import Conversation, SharedSecretCache, utcnow
from bot.state import load_state, save_state
from bot.transactions import Transaction

MEMORY_KEY = "wechat"  # the channel's part of the follower's state
# WeChat retries a message three times within about 15 seconds; a late answer (past the
# reply budget) stores its passive reply when its turn ends, seconds later.
ANSWERED_SECONDS = 120
MAX_ANSWERED = 32  # a follower at the rate limit sends 15 messages in WeChat's retry span
REPLIES_KEPT = 4  # a retry of an older message still counts as answered, with no reply
RETENTION = timedelta(days=1)
SWEEP_BATCH = 200


def aware(moment: datetime) -> datetime:
    """A datetime read back from the database, as UTC (SQLite drops the zone)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _memory(state: dict[str, Any]) -> dict[str, Any]:
    memory = state.get(MEMORY_KEY)
    return memory if isinstance(memory, dict) else {}


def _answered(state: dict[str, Any]) -> list[list[Any]]:
    """[message key, first page of its reply or None, when (epoch seconds)], newest first."""
    return [entry for entry in _memory(state).get("answered") or []
            if isinstance(entry, list) and len(entry) == 3]


def _entry(state: dict[str, Any], key: str) -> list[Any] | None:
    return next((entry for entry in _answered(state) if entry[0] == key), None)


# -- deliveries ----------------------------------------------------------------------------
def was_answered(state: dict[str, Any], key: str) -> bool:
    """True when the message with this key was answered before (a retry)."""
    return _entry(state, key) is not None


def reply_of(state: dict[str, Any], key: str) -> str | None:
    """What a retry repeats: the reply the message got ("" for none, or no longer kept);
    None while it has not been answered."""
    entry = _entry(state, key)
    if entry is None:
        return None
    return str(entry[1]) if entry[1] is not None else ""


def remember(state: dict[str, Any], key: str, pages: list[str], now: float) -> None:
    """Record a message as answered with `pages`: the first is its reply, the rest wait
    for "更多" (replacing any unread pages of an earlier answer)."""
    _record(state, key, pages[0] if pages else "", now)
    keep_pages(state, pages[1:])


def set_reply(state: dict[str, Any], key: str, reply: str, now: float) -> None:
    """Change what retries of an answered message repeat (a late answer's passive reply)."""
    _record(state, key, reply, now)


def _record(state: dict[str, Any], key: str, reply: str, now: float) -> None:
    kept = [entry for entry in _answered(state)
            if entry[0] != key and now - float(entry[2]) < ANSWERED_SECONDS]
    answered = [[key, reply, now], *kept][:MAX_ANSWERED]
    for entry in answered[REPLIES_KEPT:]:
        entry[1] = None
    state[MEMORY_KEY] = {**_memory(state), "answered": answered}


# -- pages of long answers -----------------------------------------------------------------
def pending_pages(state: dict[str, Any]) -> list[str]:
    """The pages of the last long answer the follower has not read yet."""
    return [str(page) for page in _memory(state).get("pages") or []]


def keep_pages(state: dict[str, Any], pages: list[str]) -> None:
    """Keep the unread pages; an empty list forgets them."""
    memory = {name: value for name, value in _memory(state).items() if name != "pages"}
    if pages:
        memory["pages"] = list(pages)
    if memory:
        state[MEMORY_KEY] = memory
    else:
        state.pop(MEMORY_KEY, None)


# -- followers who went quiet --------------------------------------------------------------
# `as_string` is SQL NULL where the key is missing on both databases (the JSON value's
# own test, `is_not(None)`, is always true on SQLite, which quotes a missing value as null).
_SILENT = select(Conversation.user_id).where(
    Conversation.channel == bindparam("channel"),
    Conversation.updated_at < bindparam("before", type_=Conversation.updated_at.type),
    Conversation.state[MEMORY_KEY].as_string().is_not(None),
)


async def forget_silent(tx: Transaction, channel: str, batch: int) -> int:
    """Drop the channel's memory from the states of up to `batch` followers silent for
    `RETENTION`; how many were found.  Their latest replies and unread pages would
    otherwise stay until they write again.  Every state found is saved, and so not found
    again: the caller calls again while a whole batch was found."""
    session = await tx.session()
    rows = (await session.execute(
        _SILENT.limit(batch), {"channel": channel, "before": utcnow() - RETENTION})).all()
    for (user_id,) in rows:
        state = await load_state(tx, channel, user_id)  # locked: a turn may be running
        state.pop(MEMORY_KEY, None)
        await save_state(tx, channel, user_id, state)
    return len(rows)


# -- the shared access token ---------------------------------------------------------------
async def read_secret(session: AsyncSession, name: str) -> tuple[str, datetime] | None:
    """A cached credential and when it expires, or None when there is none."""
    row = await session.get(SharedSecretCache, name)
    if row is None:
        return None
    return row.value, aware(row.expires_at)


async def write_secret(session: AsyncSession, name: str, value: str, expires_at: datetime) -> None:
    """Store a credential for every worker."""
    row = await session.get(SharedSecretCache, name)
    if row is None:
        session.add(SharedSecretCache(name=name, value=value, expires_at=expires_at))
    else:
        row.value, row.expires_at = value, expires_at
    await session.flush()


async def expire_secret(session: AsyncSession, name: str, value: str) -> None:
    """Mark a credential WeChat refused as expired, unless another worker replaced it."""
    await session.execute(
        update(SharedSecretCache)
        .where(SharedSecretCache.name == name, SharedSecretCache.value == value)
        .values(expires_at=datetime(1970, 1, 1, tzinfo=UTC))
    )


async def take_lease(session: AsyncSession, name: str, until: datetime) -> bool:
    """Become the one worker allowed to refresh a credential until `until`.

    A lease is a row whose expiry is the lease's end; taking a free lease is an UPDATE of
    an expired row or the INSERT of a new one, so two workers never both succeed (the
    loser's INSERT fails with IntegrityError when the caller commits).
    """
    now = utcnow()
    taken = await session.execute(
        update(SharedSecretCache)
        .where(SharedSecretCache.name == name, SharedSecretCache.expires_at <= now)
        .values(value="lease", expires_at=until)
    )
    if taken.rowcount == 1:  # type: ignore[attr-defined]
        return True
    if await session.get(SharedSecretCache, name) is not None:
        return False
    session.add(SharedSecretCache(name=name, value="lease", expires_at=until))
    await session.flush()
    return True
