"""Database tables, as typed SQLAlchemy 2.0 models.

Everything a conversation needs to survive a restart or move to another worker is a row
here, never process memory.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the models use."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored moment is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
    """A Telegram delivery already handled (an update_id), or a button's hashed data.

    Telegram may repeat an update; the first delivery is recorded here, and a repeat is
    never processed twice, whichever worker it reaches.  (WeChat keeps the same memory in
    the follower's conversation state, saved with each turn: `handlers.wechat_store`.)
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


class Complaint(Base):
    """A confirmed complaint, in the queue of the institution (or association) handling it."""

    __tablename__ = "complaints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tracking_no: Mapped[str] = mapped_column(String(20), unique=True)
    confirmation_key: Mapped[str] = mapped_column(String(200), unique=True)
    channel: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    queue_id: Mapped[str] = mapped_column(String(32), index=True)
    institution_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    sector: Mapped[str | None] = mapped_column(String(16), nullable=True)
    business: Mapped[str] = mapped_column(String(32))
    cause: Mapped[str] = mapped_column(String(32))
    story: Mapped[str] = mapped_column(Text)
    occurred: Mapped[str] = mapped_column(String(200))
    wish: Mapped[str] = mapped_column(String(500))
    name: Mapped[str] = mapped_column(String(60))
    phone: Mapped[str] = mapped_column(String(20), index=True)
    id_number: Mapped[str | None] = mapped_column(String(20), nullable=True)
    relationship: Mapped[str] = mapped_column(String(16))
    consent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20), default="received", index=True)
    risk: Mapped[bool] = mapped_column(default=False, index=True)
    risk_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    agent_led: Mapped[bool] = mapped_column(default=False)
    agent_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    deadline_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    deadline_days: Mapped[int] = mapped_column(Integer, default=15)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    outcome: Mapped[str | None] = mapped_column(Text, nullable=True)
    assigned_to: Mapped[int | None] = mapped_column(Integer, nullable=True)
    extension_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class ComplaintEvent(Base):
    """One entry of a complaint's append-only history: who did what, when."""

    __tablename__ = "complaint_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    complaint_id: Mapped[int] = mapped_column(ForeignKey("complaints.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Notification(Base):
    """Outbox row: written in the same transaction as the event that causes it.

    A dispatcher delivers rows to the queue's staff channels with retries; the
    idempotency key lets a retry never double-post where the channel allows.
    """

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(120), unique=True)
    queue_id: Mapped[str] = mapped_column(String(32), index=True)
    complaint_id: Mapped[int | None] = mapped_column(ForeignKey("complaints.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# -- staff side ------------------------------------------------------------------------
class StaffUser(Base):
    """A person who works complaints: institution staff, association, regulator or admin.

    `queue_id` is the institution (or association) whose queue an institution or
    association user works; regulators and admins have none and see everything.
    """

    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    role: Mapped[str] = mapped_column(String(16))
    queue_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    active: Mapped[bool] = mapped_column(default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                          nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class StaffSession(Base):
    """A signed-in browser; only a hash of the cookie's token is stored."""

    __tablename__ = "staff_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StaffInvite(Base):
    """A one-time link to set a password (the first admin, or a user an admin adds)."""

    __tablename__ = "staff_invites"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditEntry(Base):
    """Who looked at or exported what: every view of unmasked contact data is here."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"), nullable=True)
    action: Mapped[str] = mapped_column(String(32))
    complaint_id: Mapped[int | None] = mapped_column(ForeignKey("complaints.id"), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class QueueChannel(Base):
    """Where a queue's notifications go: a WeCom robot, a Telegram chat or an e-mail."""

    __tablename__ = "queue_channels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    queue_id: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(500))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NotificationAttempt(Base):
    """One delivery attempt of an outbox row to one channel, kept for the dashboard."""

    __tablename__ = "notification_attempts"
    __table_args__ = (Index("ix_notification_attempts_channel_at", "queue_channel_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id"), index=True)
    queue_channel_id: Mapped[int | None] = mapped_column(ForeignKey("queue_channels.id"),
                                                         nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ok: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class LinkCode(Base):
    """A one-time code that links a Telegram chat to a queue (staff notifications)."""

    __tablename__ = "link_codes"

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    queue_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ConsumerMessage(Base):
    """A message from staff to the consumer who filed a complaint.

    Channels that can push (Telegram, WeChat customer-service API) deliver it at once;
    the others show it at the consumer's next message.
    """

    __tablename__ = "consumer_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    complaint_id: Mapped[int] = mapped_column(ForeignKey("complaints.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                          nullable=True)
