"""The outbox table's life cycle: claim due rows, record attempts, retry, give up.

A row is `pending` until a worker claims it, `sending` while one holds it, then
`delivered`, back to `pending` with a later `next_attempt_at`, or `dead`.

Claiming is one UPDATE in its own short transaction: it sets `status = 'sending'` and
`next_attempt_at` to the end of the worker's lease, and returns what the worker needs.
On PostgreSQL the rows are picked by a sub-select `FOR UPDATE SKIP LOCKED`, so workers
racing for the same rows each get different ones without waiting; SQLite runs one writer
at a time, so there the same UPDATE is atomic by itself.  The lease end doubles as the
claim token: every later change to the row is guarded by `status = 'sending' AND
next_attempt_at = <lease>`, so a worker whose lease ran out (and whose row another worker
took over) changes nothing.  `release_expired` returns such rows to `pending`.

Delivery state is per channel: each send is a `NotificationAttempt` committed right
after it, and a retry skips every channel that already has a successful attempt, so a
retry never posts twice to a channel that got the message.  Functions take the session
and never commit (the caller owns the transaction).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.models import Notification, NotificationAttempt, as_utc

PENDING = "pending"
SENDING = "sending"
DELIVERED = "delivered"
DEAD = "dead"
STATUSES = (PENDING, SENDING, DELIVERED, DEAD)
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Claim:
    """A row this worker holds until `lease`, with what delivering it needs."""

    id: int
    idempotency_key: str
    queue_id: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    lease: datetime


def backoff_seconds(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Delay after the n-th failed round: doubling from `base`, capped, with equal jitter.

    Half the delay is fixed and half random, so rows that failed together (one robot
    down for everybody) do not all come back in the same second.
    """
    delay = min(cap, base * 2 ** max(attempt - 1, 0))
    return delay / 2 + rng.uniform(0, delay / 2)


async def release_expired(session: AsyncSession, now: datetime) -> int:
    """Return rows whose worker's lease ran out (it stopped or hung) to the queue."""
    result = await session.execute(
        update(Notification)
        .where(Notification.status == SENDING, Notification.next_attempt_at <= now)
        .values(status=PENDING)
        .execution_options(synchronize_session=False))
    return max(result.rowcount or 0, 0)


async def claim_due(session: AsyncSession, now: datetime, lease: datetime,
                    limit: int) -> list[Claim]:
    """Take up to `limit` due rows for this worker until `lease` (see the module doc)."""
    due = (select(Notification.id)
           .where(Notification.status == PENDING, Notification.next_attempt_at <= now)
           .order_by(Notification.next_attempt_at, Notification.id)
           .limit(limit)
           .with_for_update(skip_locked=True))
    rows = (await session.execute(
        update(Notification)
        .where(Notification.id.in_(due))
        .values(status=SENDING, next_attempt_at=lease)
        .returning(Notification.id, Notification.idempotency_key, Notification.queue_id,
                   Notification.kind, Notification.payload, Notification.attempts)
        .execution_options(synchronize_session=False))).all()
    claims = [Claim(id=row.id, idempotency_key=row.idempotency_key, queue_id=row.queue_id,
                    kind=row.kind, payload=dict(row.payload or {}), attempts=row.attempts,
                    lease=lease) for row in rows]
    return sorted(claims, key=lambda claim: claim.id)


async def delivered_channel_ids(session: AsyncSession, notification_id: int) -> set[int]:
    """The channels that already have this notification (never sent it again)."""
    return set((await session.scalars(
        select(NotificationAttempt.queue_channel_id)
        .where(NotificationAttempt.notification_id == notification_id,
               NotificationAttempt.ok.is_(True),
               NotificationAttempt.queue_channel_id.is_not(None)))).all())


def record_attempt(session: AsyncSession, notification_id: int, channel_id: int | None,
                   at: datetime, error: str | None = None) -> NotificationAttempt:
    """Log one send to one channel (no channel: the queue had none); ok when no error."""
    attempt = NotificationAttempt(notification_id=notification_id,
                                  queue_channel_id=channel_id, at=at, ok=error is None,
                                  error=error[:MAX_ERROR_CHARS] if error else None)
    session.add(attempt)
    return attempt


async def attempt_times(session: AsyncSession, channel_ids: Iterable[int],
                        since: datetime) -> list[datetime]:
    """When any worker tried these channels since a moment, oldest first."""
    ids = list(channel_ids)
    if not ids:
        return []
    moments = (await session.scalars(
        select(NotificationAttempt.at)
        .where(NotificationAttempt.queue_channel_id.in_(ids), NotificationAttempt.at > since)
        .order_by(NotificationAttempt.at))).all()
    return [as_utc(moment) for moment in moments]


async def _settle(session: AsyncSession, claim: Claim, **values: Any) -> bool:
    """Change a claimed row, only if this worker still holds it."""
    result = await session.execute(
        update(Notification)
        .where(Notification.id == claim.id, Notification.status == SENDING,
               Notification.next_attempt_at == claim.lease)
        .values(**values)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


async def mark_delivered(session: AsyncSession, claim: Claim, attempts: int,
                         now: datetime) -> bool:
    """Every channel has the notification."""
    return await _settle(session, claim, status=DELIVERED, attempts=attempts,
                         delivered_at=now, next_attempt_at=now, last_error=None)


async def schedule_retry(session: AsyncSession, claim: Claim, attempts: int,
                         at: datetime, error: str | None) -> bool:
    """Some channel still lacks it: try again at `at` (attempts unchanged when deferred)."""
    values: dict[str, Any] = {"status": PENDING, "attempts": attempts, "next_attempt_at": at}
    if error is not None:
        values["last_error"] = error[:MAX_ERROR_CHARS]
    return await _settle(session, claim, **values)


async def mark_dead(session: AsyncSession, claim: Claim, attempts: int, now: datetime,
                    error: str) -> bool:
    """Give up after the last allowed round; the dashboard and the CLI list dead rows."""
    return await _settle(session, claim, status=DEAD, attempts=attempts, next_attempt_at=now,
                         last_error=error[:MAX_ERROR_CHARS])


async def release(session: AsyncSession, claim: Claim, now: datetime) -> bool:
    """Hand a row back unfinished (the lease is nearly over), due at once for anyone."""
    return await _settle(session, claim, status=PENDING, next_attempt_at=now)


async def status_counts(session: AsyncSession) -> dict[str, int]:
    """How many rows are in each status (every known status, zeros included)."""
    rows = (await session.execute(
        select(Notification.status, func.count(Notification.id))
        .group_by(Notification.status))).all()
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({status: count for status, count in rows})
    return counts


async def dead_rows(session: AsyncSession, limit: int = 100) -> list[Notification]:
    """The dead rows, oldest first, for operators to look at."""
    return list((await session.scalars(
        select(Notification).where(Notification.status == DEAD)
        .order_by(Notification.id).limit(limit))).all())


async def retry_dead(session: AsyncSession, now: datetime) -> int:
    """Give every dead row a fresh set of attempts, due now; channels that had it keep it."""
    result = await session.execute(
        update(Notification).where(Notification.status == DEAD)
        .values(status=PENDING, attempts=0, next_attempt_at=now)
        .execution_options(synchronize_session=False))
    return max(result.rowcount or 0, 0)


def after(now: datetime, seconds: float) -> datetime:
    """A moment `seconds` after now."""
    return now + timedelta(seconds=seconds)
