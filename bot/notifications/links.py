"""Linking a Telegram chat to a queue with a one-time code, and what a linked chat may see.

An operator issues a code for a queue (`xiaobao staff link-code QUEUE_ID`, later the
dashboard); someone in the staff group sends `/link CODE` there, which makes the chat a
`QueueChannel` of kind telegram for that queue.  A code works once, for 24 hours.  A chat
belongs to one queue at a time: linking it again moves it.  Functions take the session
and never commit (the caller owns the transaction).
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.models import Complaint, LinkCode, QueueChannel, as_utc, utcnow

CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L: typed from a screen
CODE_CHARS = 8
CODE_LIFETIME = timedelta(hours=24)
CLOSED_STATUSES = ("resolved", "withdrawn")
TELEGRAM = "telegram"


class LinkOutcome(enum.Enum):
    """What became of a /link."""

    LINKED = "linked"
    ALREADY = "already"
    MOVED = "moved"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    USED = "used"


@dataclass(frozen=True)
class LinkResult:
    """The outcome, the queue the chat now belongs to, and the one it left if any."""

    outcome: LinkOutcome
    queue_id: str | None = None
    previous_queue_id: str | None = None


def normalise_code(text: str) -> str:
    """A code as typed (lower case, spaces, a dash in the middle) in its stored form."""
    return "".join(ch for ch in text.upper() if ch.isalnum())


async def issue_code(session: AsyncSession, queue_id: str,
                     now: datetime | None = None) -> LinkCode:
    """A new one-time code for the queue, valid for 24 hours."""
    now = now or utcnow()
    code = LinkCode(code="".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_CHARS)),
                    queue_id=queue_id, created_at=now, expires_at=now + CODE_LIFETIME)
    session.add(code)
    await session.flush()
    return code


async def redeem(session: AsyncSession, typed: str, chat_id: str,
                 now: datetime | None = None) -> LinkResult:
    """Use a code to link a chat to its queue; a wrong, expired or used code links nothing."""
    now = now or utcnow()
    code = normalise_code(typed)
    row = await session.get(LinkCode, code) if code else None
    if row is None:
        return LinkResult(LinkOutcome.UNKNOWN)
    if row.used_at is not None:
        return LinkResult(LinkOutcome.USED)
    if as_utc(row.expires_at) <= now:
        return LinkResult(LinkOutcome.EXPIRED)
    taken = await session.execute(
        update(LinkCode).where(LinkCode.code == code, LinkCode.used_at.is_(None),
                               LinkCode.expires_at > now)
        .values(used_at=now).execution_options(synchronize_session=False))
    if taken.rowcount != 1:
        return LinkResult(LinkOutcome.USED)  # someone used it a moment ago
    current = await linked_channels(session, chat_id)
    previous = next((c.queue_id for c in current if c.queue_id != row.queue_id), None)
    for channel in current:
        if channel.queue_id != row.queue_id:
            channel.active = False
    if any(channel.queue_id == row.queue_id for channel in current):
        return LinkResult(LinkOutcome.ALREADY, row.queue_id)
    session.add(QueueChannel(queue_id=row.queue_id, kind=TELEGRAM, target=chat_id,
                             active=True, created_at=now))
    outcome = LinkOutcome.MOVED if previous else LinkOutcome.LINKED
    return LinkResult(outcome, row.queue_id, previous)


async def linked_channels(session: AsyncSession, chat_id: str) -> list[QueueChannel]:
    """The active telegram channels of this chat."""
    return list((await session.scalars(
        select(QueueChannel).where(QueueChannel.kind == TELEGRAM,
                                   QueueChannel.target == chat_id,
                                   QueueChannel.active.is_(True))
        .order_by(QueueChannel.id))).all())


async def linked_queues(session: AsyncSession, chat_id: str) -> list[str]:
    """The queues this chat gets notifications for (usually one)."""
    return list(dict.fromkeys(c.queue_id for c in await linked_channels(session, chat_id)))


async def unlink(session: AsyncSession, chat_id: str) -> list[str]:
    """Stop this chat's notifications; returns the queues it left (rows are kept)."""
    channels = await linked_channels(session, chat_id)
    for channel in channels:
        channel.active = False
    return list(dict.fromkeys(channel.queue_id for channel in channels))


async def open_complaints(session: AsyncSession, queue_id: str,
                          limit: int = 20) -> tuple[list[Complaint], int]:
    """The queue's open complaints, soonest deadline first, and how many there are in all."""
    still_open = (Complaint.queue_id == queue_id, Complaint.status.not_in(CLOSED_STATUSES))
    total = await session.scalar(select(func.count(Complaint.id)).where(*still_open)) or 0
    rows = (await session.scalars(
        select(Complaint).where(*still_open)
        .order_by(Complaint.deadline_at, Complaint.id).limit(limit))).all()
    return list(rows), total
