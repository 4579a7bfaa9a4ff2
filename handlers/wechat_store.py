"""What the WeChat channel keeps in the database, behind small repository functions.

Several workers answer WeChat behind one address, and WeChat retries a message that had no
answer in five seconds, possibly at another worker.  So everything the channel remembers
lives in rows: the deliveries already claimed (with the reply they got), the pages of a long
answer still to be read with "更多", and the access token all workers share.  The caller
owns the session and the transaction; these functions never commit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.models import Conversation, ProcessedDelivery, SharedSecretCache, utcnow
from bot.state import load_state, save_state

PAGES_CHANNEL = "wechat-pages"
DELIVERY_RETENTION = timedelta(days=1)


def aware(moment: datetime) -> datetime:
    """A datetime read back from the database, as UTC (SQLite drops the zone)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# -- deliveries ----------------------------------------------------------------------------
async def add_claim(session: AsyncSession, channel: str, key: str) -> None:
    """Claim a delivery; committing fails with IntegrityError when another got it first.

    Claims older than a day are dropped on the way: WeChat stops retrying after seconds.
    """
    await session.execute(
        delete(ProcessedDelivery).where(
            ProcessedDelivery.channel == channel,
            ProcessedDelivery.created_at < utcnow() - DELIVERY_RETENTION,
        )
    )
    session.add(ProcessedDelivery(channel=channel, delivery_key=key, reply=None,
                                  created_at=utcnow()))
    await session.flush()


async def stored_reply(session: AsyncSession, channel: str, key: str) -> str | None:
    """The reply given to a claimed delivery, or None while it is still being answered."""
    return await session.scalar(
        select(ProcessedDelivery.reply).where(
            ProcessedDelivery.channel == channel, ProcessedDelivery.delivery_key == key
        )
    )


async def store_reply(session: AsyncSession, channel: str, key: str, reply: str) -> None:
    """Remember what a delivery was answered, so its retries get exactly the same."""
    await session.execute(
        update(ProcessedDelivery)
        .where(ProcessedDelivery.channel == channel, ProcessedDelivery.delivery_key == key)
        .values(reply=reply)
    )


# -- pages of long answers -----------------------------------------------------------------
async def pending_pages(session: AsyncSession, user_id: str) -> list[str]:
    """The pages of the last long answer the user has not read yet."""
    state = await load_state(session, PAGES_CHANNEL, user_id)
    pages = state.get("pages") or []
    return [str(page) for page in pages]


async def save_pages(session: AsyncSession, user_id: str, pages: list[str]) -> None:
    """Keep the unread pages (an empty list forgets them); no row is written for nothing."""
    if not pages and await session.get(Conversation, (PAGES_CHANNEL, user_id)) is None:
        return
    await save_state(session, PAGES_CHANNEL, user_id, {"pages": pages})


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
