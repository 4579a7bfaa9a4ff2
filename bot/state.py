"""Per-user dialogue state, kept in the database behind a two-function interface.

A restart, or a second worker answering the next message, must continue the same
conversation; so the engine loads the state at the start of every message and saves it in
the same transaction as whatever the message changed.  Callers own the session.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.models import Conversation, utcnow


async def load_state(session: AsyncSession, channel: str, user_id: str) -> dict[str, Any]:
    """The saved state of one user on one channel, or an empty state for a new user."""
    row = await session.scalar(
        select(Conversation).where(
            Conversation.channel == channel, Conversation.user_id == user_id
        )
    )
    return dict(row.state) if row is not None else {}


async def save_state(
    session: AsyncSession, channel: str, user_id: str, state: dict[str, Any]
) -> None:
    """Store the state; the caller's transaction makes it durable."""
    row = await session.get(Conversation, (channel, user_id))
    if row is None:
        session.add(
            Conversation(
                channel=channel, user_id=user_id, state=state, version=1, updated_at=utcnow()
            )
        )
        return
    row.state = state
    row.version = row.version + 1
    row.updated_at = utcnow()
