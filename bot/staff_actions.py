"""What staff do to a complaint: claim, reply, ask for more, extend, resolve, transfer.

Each action is one event in the complaint's append-only history, by "staff:<id>" at a
given time, written in the caller's transaction together with whatever else it causes: a
message to the consumer (delivered by the consumer's own channel), an outbox row for a
new queue.  Callers check authorization first (`bot.staff_access`); these functions
check only that the action makes sense for the complaint's state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.complaint_dialogue import SHANGHAI
from bot.complaint_records import DEADLINE_DAYS, add_event, deadline, notification_payload
from bot.models import Complaint, ConsumerMessage, Notification, as_utc, utcnow
from bot.privacy import redact
from classifiers.institutions import Directory

CLOSED = frozenset({"resolved", "withdrawn"})
MAX_TEXT_CHARS = 1500
MAX_REASON_CHARS = 500


class ActionError(ValueError):
    """An action that does not fit the complaint or its input, phrased for staff."""


def actor(user_id: int) -> str:
    """How staff appear in a complaint's history."""
    return f"staff:{user_id}"


def staff_id(actor_name: str) -> int | None:
    """The staff user id inside an actor string, if it is one."""
    kind, _, number = actor_name.partition(":")
    return int(number) if kind == "staff" and number.isdigit() else None


def _text(value: Any, what: str, limit: int) -> str:
    """Form text, trimmed; refuse empty or overlong input."""
    text = str(value or "").replace("\r\n", "\n").strip()
    if not text:
        raise ActionError(f"请填写{what}")
    if len(text) > limit:
        raise ActionError(f"{what}最多 {limit} 个字")
    if "\x00" in text:
        raise ActionError(f"{what}含有无效字符")
    return text


def _open(complaint: Complaint) -> None:
    if complaint.status in CLOSED:
        raise ActionError("这件投诉已经办结或撤回，不能再操作")


def _tell(session: AsyncSession, complaint: Complaint, text: str, now: datetime) -> None:
    """Queue a message for the consumer on the channel they complained through."""
    session.add(ConsumerMessage(complaint_id=complaint.id, channel=complaint.channel,
                                user_id=complaint.user_id, text=text, created_at=now))


def next_deadline_days(current: int) -> int | None:
    """The next legal step after the current period (15 → 30 → 60), None at the end."""
    later = [days for days in DEADLINE_DAYS if days > current]
    return later[0] if later else None


async def claim(session: AsyncSession, complaint: Complaint, user_id: int,
                now: datetime | None = None) -> None:
    """Take the complaint on: it is assigned to the user and in progress."""
    now = now or utcnow()
    _open(complaint)
    previous = complaint.assigned_to
    complaint.assigned_to = user_id
    if complaint.status in {"received", "transferred"}:
        complaint.status = "in_progress"
    await add_event(session, complaint, actor(user_id), "claimed",
                    {"previous": previous} if previous not in (None, user_id) else {}, now)


async def reply(session: AsyncSession, complaint: Complaint, user_id: int, text: Any,
                now: datetime | None = None) -> None:
    """Answer the consumer through their channel (shown in their status view too)."""
    now = now or utcnow()
    _open(complaint)
    body = _text(text, "回复内容", MAX_TEXT_CHARS)
    if complaint.status in {"received", "transferred"}:
        complaint.status = "in_progress"
    _tell(session, complaint, f"关于您的投诉 {complaint.tracking_no}，处理机构回复：\n{body}", now)
    await add_event(session, complaint, actor(user_id), "reply", {"text": body}, now)


async def ask_info(session: AsyncSession, complaint: Complaint, user_id: int, text: Any,
                   now: datetime | None = None) -> None:
    """Ask the consumer for more information; the complaint waits for it."""
    now = now or utcnow()
    _open(complaint)
    body = _text(text, "需要补充的内容", MAX_TEXT_CHARS)
    complaint.status = "awaiting_info"
    _tell(session, complaint,
          f"关于您的投诉 {complaint.tracking_no}，处理机构需要您补充以下信息：\n{body}", now)
    await add_event(session, complaint, actor(user_id), "info-requested", {"text": body}, now)


async def extend(session: AsyncSession, complaint: Complaint, user_id: int, reason: Any,
                 now: datetime | None = None) -> int:
    """Lengthen the deadline one legal step with a reason the consumer is told."""
    now = now or utcnow()
    _open(complaint)
    why = _text(reason, "延期理由", MAX_REASON_CHARS)
    days = next_deadline_days(complaint.deadline_days)
    if days is None:
        raise ActionError(f"处理时限已是最长的 {DEADLINE_DAYS[-1]} 日，不能再延长")
    before = complaint.deadline_days
    complaint.deadline_days = days
    complaint.deadline_at = deadline(as_utc(complaint.received_at), days)
    complaint.extension_reason = why
    due = as_utc(complaint.deadline_at).astimezone(SHANGHAI)
    _tell(session, complaint,
          f"您的投诉 {complaint.tracking_no} 情况较复杂，处理时限延长至{due:%Y年%m月%d日}"
          f"（{days}日）。理由：{why}", now)
    await add_event(session, complaint, actor(user_id), "deadline-extended",
                    {"from_days": before, "to_days": days, "reason": why}, now)
    return days


async def resolve(session: AsyncSession, complaint: Complaint, user_id: int, outcome: Any,
                  now: datetime | None = None) -> None:
    """Close the complaint with its outcome, and tell the consumer."""
    now = now or utcnow()
    _open(complaint)
    result = _text(outcome, "处理结果", MAX_TEXT_CHARS)
    complaint.status = "resolved"
    complaint.resolved_at = now
    complaint.outcome = result
    _tell(session, complaint,
          f"您的投诉 {complaint.tracking_no} 已处理完毕。处理结果：\n{result}", now)
    await add_event(session, complaint, actor(user_id), "resolved", {"outcome": result}, now)


async def transfer(session: AsyncSession, complaint: Complaint, user_id: int, target_id: Any,
                   reason: Any, directory: Directory, dashboard_url: str,
                   now: datetime | None = None) -> None:
    """Send the complaint to another institution or the association, whose staff are told.

    A transfer to an institution also says the complaint is about that institution; one
    to an association leaves the named institution as it was.
    """
    now = now or utcnow()
    _open(complaint)
    why = _text(reason, "转交理由", MAX_REASON_CHARS)
    target = directory.get(str(target_id or ""))
    if target is None:
        raise ActionError("请选择要转交的机构")
    if target.id == complaint.queue_id:
        raise ActionError("投诉已经在这个机构的队列中")
    source = complaint.queue_id
    complaint.queue_id = target.id
    if not target.is_association:
        complaint.institution_id = target.id
        complaint.sector = target.sector
    complaint.status = "transferred"
    complaint.assigned_to = None
    event = await add_event(session, complaint, actor(user_id), "transferred",
                            {"from": source, "to": target.id, "reason": why}, now)
    await session.flush()
    payload = {**notification_payload(complaint, directory, dashboard_url),
               "from_queue": source, "reason": redact(why)}
    session.add(Notification(idempotency_key=f"complaint:{complaint.id}:transfer:{event.id}",
                             queue_id=target.id, complaint_id=complaint.id, kind="transferred",
                             payload=payload, next_attempt_at=now, created_at=now))
    _tell(session, complaint,
          f"您的投诉 {complaint.tracking_no} 已转交{target.name}处理，处理时限不变。", now)
