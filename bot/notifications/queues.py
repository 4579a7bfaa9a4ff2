"""Where a queue's notifications go: its active channels, and the static ones from config.

Channels are `QueueChannel` rows, added by administrators in the dashboard, by a Telegram
chat's `/link`, or declared in `notifications.channels` and synced here at start-up.
Syncing only adds what is missing: rows added elsewhere, and rows an administrator paused,
stay as they are.  Several rows may name one destination (the same robot key or address);
the dispatcher delivers to each destination once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, insert, literal, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import Boolean, DateTime, String

from bot.models import QueueChannel
from bot.notifications.channels import canonical_target

# Any constant shared by all workers: serialises their start-up syncs on PostgreSQL.
SYNC_LOCK_KEY = 0x7869616F  # "xiao"


@dataclass(frozen=True)
class Destination:
    """One place to deliver to, and the channel rows naming it (the first one is used)."""

    kind: str
    target: str
    channel_ids: tuple[int, ...]

    @property
    def channel_id(self) -> int:
        """The row whose attempts record deliveries to this destination."""
        return self.channel_ids[0]


async def destinations(session: AsyncSession, queue_id: str) -> list[Destination]:
    """The queue's active destinations, each once, in the order they were added."""
    rows = (await session.scalars(
        select(QueueChannel).where(QueueChannel.queue_id == queue_id,
                                   QueueChannel.active.is_(True))
        .order_by(QueueChannel.id))).all()
    grouped: dict[tuple[str, str], list[QueueChannel]] = {}
    for row in rows:
        grouped.setdefault((row.kind, canonical_target(row.kind, row.target)), []).append(row)
    return [Destination(kind=kind, target=members[0].target,
                        channel_ids=tuple(member.id for member in members))
            for (kind, _), members in grouped.items()]


async def channel_ids_for(session: AsyncSession, kind: str, target: str) -> list[int]:
    """Every row, active or not, naming the same destination (for shared rate limits)."""
    wanted = canonical_target(kind, target)
    rows = (await session.execute(
        select(QueueChannel.id, QueueChannel.target).where(QueueChannel.kind == kind))).all()
    return [row.id for row in rows if canonical_target(kind, row.target) == wanted]


async def sync_static_channels(session: AsyncSession,
                               specs: Iterable[tuple[str, str, str]], now: datetime) -> int:
    """Add the configured channels the database lacks; returns how many were added.

    Each insert is one statement that checks for the row itself, so two workers starting
    together cannot both add it (on PostgreSQL an advisory lock serialises them as well).
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                              {"key": SYNC_LOCK_KEY})
    added = 0
    for queue_id, kind, target in specs:
        present = exists().where(QueueChannel.queue_id == queue_id, QueueChannel.kind == kind,
                                 QueueChannel.target == target)
        values = select(literal(queue_id, String), literal(kind, String),
                        literal(target, String), literal(True, Boolean),
                        literal(now, DateTime(timezone=True))).where(~present)
        result = await session.execute(
            insert(QueueChannel).from_select(
                ["queue_id", "kind", "target", "active", "created_at"], values))
        added += max(result.rowcount or 0, 0)
    return added
