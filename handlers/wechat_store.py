"""What the WeChat channel keeps in the database, behind small repository functions.

Several workers answer WeChat behind one address, and WeChat retries a message that had no
answer in five seconds, possibly at another worker.  So everything the channel remembers
lives in rows: the deliveries already claimed (with the reply they got), the pages of a long
answer still to be read with "更多", and the access token all workers share.  The caller
owns the transaction; these functions never commit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.models import Conversation, ProcessedDelivery, SharedSecretCache, utcnow
from bot.state import load_state, save_state
from bot.transactions import Transaction

PAGES_CHANNEL = "wechat-pages"
DELIVERY_RETENTION = timedelta(days=1)


def aware(moment: datetime) -> datetime:
    """A datetime read back from the database, as UTC (SQLite drops the zone)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# -- deliveries ----------------------------------------------------------------------------
# Every WeChat message runs the claim, the reply and the pages statements, so they are built
# once with bound parameters and run by `bot.transactions` (straight at the driver on
# SQLite): the ORM's per-call machinery cost more than SQLite did.  The claim is an
# INSERT that does nothing on a duplicate key, so a retry is told apart by the row count
# instead of by an error (on PostgreSQL it waits for the first claim's commit).
_CLAIM = text(
    "INSERT INTO processed_deliveries (channel, delivery_key, reply, created_at)"
    " VALUES (:channel, :key, NULL, :now) ON CONFLICT (channel, delivery_key) DO NOTHING"
).bindparams(bindparam("now", type_=ProcessedDelivery.__table__.c.created_at.type))
_PURGE = delete(ProcessedDelivery).where(ProcessedDelivery.channel == bindparam("channel"),
                                         ProcessedDelivery.created_at < bindparam("before"))
_REPLY_OF = select(ProcessedDelivery.reply).where(
    ProcessedDelivery.channel == bindparam("channel"),
    ProcessedDelivery.delivery_key == bindparam("key"))
_STORE_REPLY = update(ProcessedDelivery).where(
    ProcessedDelivery.channel == bindparam("of_channel"),
    ProcessedDelivery.delivery_key == bindparam("of_key")).values(reply=bindparam("new_reply"))
_FORGET_PAGES = delete(Conversation).where(Conversation.channel == PAGES_CHANNEL,
                                           Conversation.user_id == bindparam("user_id"))


async def add_claim(tx: Transaction, channel: str, key: str) -> bool:
    """Claim a delivery; False when another delivery of the same message got it first."""
    return await tx.run(_CLAIM, {"channel": channel, "key": key, "now": utcnow()}) == 1


async def purge_claims(tx: Transaction, channel: str) -> None:
    """Drop claims older than a day: WeChat stops retrying a message after seconds."""
    await tx.run(_PURGE, {"channel": channel, "before": utcnow() - DELIVERY_RETENTION})


async def stored_reply(tx: Transaction, channel: str, key: str) -> str | None:
    """The reply given to a claimed delivery, or None while it is still being answered."""
    row = await tx.first(_REPLY_OF, {"channel": channel, "key": key})
    return row[0] if row is not None else None


async def store_reply(tx: Transaction, channel: str, key: str, reply: str) -> None:
    """Remember what a delivery was answered, so its retries get exactly the same."""
    await tx.run(_STORE_REPLY, {"of_channel": channel, "of_key": key, "new_reply": reply})


async def keep_answer(tx: Transaction, channel: str, key: str, user_id: str,
                      pages: list[str]) -> None:
    """Keep what a claimed delivery was answered: its first page for retries, the rest
    for "更多"."""
    await store_reply(tx, channel, key, pages[0] if pages else "")
    await save_pages(tx, user_id, pages[1:])


# -- pages of long answers -----------------------------------------------------------------
async def pending_pages(tx: Transaction, user_id: str) -> list[str]:
    """The pages of the last long answer the user has not read yet."""
    state = await load_state(tx, PAGES_CHANNEL, user_id)
    pages = state.get("pages") or []
    return [str(page) for page in pages]


async def save_pages(tx: Transaction, user_id: str, pages: list[str]) -> None:
    """Keep the unread pages; an empty list forgets them (and writes nothing if none were kept)."""
    if pages:
        await save_state(tx, PAGES_CHANNEL, user_id, {"pages": pages})
        return
    await tx.run(_FORGET_PAGES, {"user_id": user_id})


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
