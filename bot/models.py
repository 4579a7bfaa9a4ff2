"""Database tables, as typed SQLAlchemy 2.0 models.

Everything a conversation needs to survive a restart or move to another worker is a row
here, never process memory.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the models use."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every xiaobao table."""


class Conversation(Base):
    """One user's dialogue state on one channel (menu, dialogue step, draft data)."""

    __tablename__ = "conversations"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UnansweredQuestion(Base):
    """A question the bot declined or answered unsurely, kept for knowledge curators.

    Only the question text and the candidates are stored: no user id, no channel user name.
    """

    __tablename__ = "unanswered_questions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    text: Mapped[str] = mapped_column(Text)
    normalized: Mapped[str] = mapped_column(String(200), index=True)
    score: Mapped[float] = mapped_column()
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProcessedDelivery(Base):
    """A channel delivery already handled (WeChat MsgId, Telegram update_id, ...).

    Channels retry: WeChat re-sends a message three times if it has no answer in five
    seconds, and Telegram may repeat an update.  The first delivery stores its rendered
    reply here; a repeat gets the same reply and is never processed twice, whichever
    worker it reaches.
    """

    __tablename__ = "processed_deliveries"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    delivery_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    reply: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 index=True)


class SharedSecretCache(Base):
    """Short-lived credentials shared by all workers (e.g. the WeChat access token)."""

    __tablename__ = "shared_secret_cache"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
