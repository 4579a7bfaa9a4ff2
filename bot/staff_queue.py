"""Reading the queue: filtered lists, deadline arithmetic, history, dead notifications.

Everything here is scoped (`bot.staff_access.Scope`) and read-only, except that showing a
consumer's unmasked contact or exporting a record writes an audit entry.  Lists carry
masked phone numbers only; the unmasked contact exists on one page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.codes import ComplaintCodes
from bot.complaint_dialogue import SHANGHAI
from bot.complaint_records import STATUS_NAMES
from bot.models import Complaint, ComplaintEvent, Notification, StaffUser, as_utc, utcnow
from bot.notifications.render import TITLES
from bot.privacy import mask_id_number, mask_phone
from bot.staff_access import Scope
from bot.staff_accounts import audit
from bot.staff_actions import CLOSED, staff_id
from classifiers.institutions import Directory

DUE_SOON_DAYS = 3
PAGE_SIZE = 50
# Pages past this are empty for any real queue; the cap keeps a typed page number
# within what a database integer holds (OFFSET = (page - 1) x PAGE_SIZE).
MAX_PAGE = 1_000_000
# Staff read shorter names than the consumer's status view (complaint_records.STATUS_NAMES).
STATUS_LABELS = {
    "received": "新投诉", "in_progress": "处理中", "awaiting_info": "待补充材料",
    "resolved": "已办结", "withdrawn": "已撤回", "transferred": "已转交待认领",
}
EVENT_NAMES = {
    "received": "消费者提交投诉", "routed": "分派到队列", "risk-flagged": "标记为风险投诉",
    "agent-led-flagged": "疑似代理投诉", "claimed": "认领", "reply": "回复消费者",
    "info-requested": "要求补充材料", "deadline-extended": "延长处理时限", "resolved": "办结",
    "transferred": "转交", "withdrawn": "消费者撤回",
}


@dataclass(frozen=True)
class QueueFilter:
    """What the queue page is narrowed to (None: no narrowing)."""

    status: str | None = None
    risk: bool | None = None
    overdue: bool = False
    business: str | None = None
    page: int = 1

    def conditions(self, now: datetime) -> list[ColumnElement[bool]]:
        """The filter as SQL conditions on complaints."""
        where: list[ColumnElement[bool]] = []
        if self.status:
            where.append(Complaint.status == self.status)
        if self.risk is not None:
            where.append(Complaint.risk.is_(self.risk))
        if self.business:
            where.append(Complaint.business == self.business)
        if self.overdue:
            where.append(and_(Complaint.deadline_at < now,
                              Complaint.status.not_in(sorted(CLOSED))))
        return where


@dataclass(frozen=True)
class QueueRow:
    """One line of the queue page: no unmasked personal data."""

    tracking_no: str
    queue_name: str
    institution_name: str
    business: str
    cause: str
    status: str
    status_name: str
    received_at: datetime
    deadline_at: datetime
    deadline_days: int
    days_left: int | None
    overdue: bool
    due_soon: bool
    risk: bool
    risk_reasons: list[str]
    agent_led: bool
    agent_reasons: list[str]
    phone: str
    assigned_to: str | None


@dataclass(frozen=True)
class HistoryRow:
    """One event of a complaint's history, with the actor named."""

    at: datetime
    actor: str
    kind: str
    what: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class DeadRow:
    """A notification the dispatcher gave up on, to be followed up by hand."""

    id: int
    queue_name: str
    kind: str
    kind_name: str
    tracking_no: str | None
    attempts: int
    last_error: str
    created_at: datetime


def status_label(status: str) -> str:
    """The staff name of a status (the consumer's wording if staff have none)."""
    return STATUS_LABELS.get(status) or STATUS_NAMES.get(status, status)


def days_left(deadline_at: datetime, now: datetime) -> int:
    """Calendar days (Beijing time) from today to the deadline's day; negative when past."""
    due = as_utc(deadline_at).astimezone(SHANGHAI).date()
    return (due - as_utc(now).astimezone(SHANGHAI).date()).days


def is_overdue(complaint: Complaint, now: datetime) -> bool:
    """An open complaint past its deadline."""
    return complaint.status not in CLOSED and as_utc(complaint.deadline_at) < now


def queue_name(directory: Directory, queue_id: str | None, empty: str = "（未指明机构）") -> str:
    """The directory name of a queue or institution id (the id if unknown)."""
    institution = directory.get(queue_id or "")
    return institution.name if institution else (queue_id or empty)


async def staff_names(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    """Display names of staff users by id (for history and assignment)."""
    if not ids:
        return {}
    rows = await session.execute(
        select(StaffUser.id, StaffUser.display_name).where(StaffUser.id.in_(sorted(ids))))
    return {row.id: row.display_name for row in rows}


async def queue_page(session: AsyncSession, scope: Scope, chosen: QueueFilter,
                     directory: Directory, codes: ComplaintCodes, now: datetime | None = None
                     ) -> tuple[list[QueueRow], int]:
    """One page of the user's queue (earliest deadline first) and the total matching."""
    now = now or utcnow()
    where = [scope.complaints(), *chosen.conditions(now)]
    total = int(await session.scalar(select(func.count(Complaint.id)).where(*where)) or 0)
    complaints = (await session.scalars(
        select(Complaint).where(*where)
        .order_by(Complaint.status.in_(sorted(CLOSED)), Complaint.deadline_at, Complaint.id)
        .offset((max(chosen.page, 1) - 1) * PAGE_SIZE).limit(PAGE_SIZE))).all()
    names = await staff_names(session, {c.assigned_to for c in complaints if c.assigned_to})
    rows = []
    for complaint in complaints:
        left = None if complaint.status in CLOSED else days_left(complaint.deadline_at, now)
        overdue = is_overdue(complaint, now)
        rows.append(QueueRow(
            tracking_no=complaint.tracking_no,
            queue_name=queue_name(directory, complaint.queue_id),
            institution_name=queue_name(directory, complaint.institution_id),
            business=codes.business_name(complaint.business),
            cause=codes.cause_name(complaint.cause),
            status=complaint.status,
            status_name=status_label(complaint.status),
            received_at=as_utc(complaint.received_at),
            deadline_at=as_utc(complaint.deadline_at),
            deadline_days=complaint.deadline_days,
            days_left=left, overdue=overdue,
            due_soon=left is not None and not overdue and left <= DUE_SOON_DAYS,
            risk=complaint.risk, risk_reasons=list(complaint.risk_reasons),
            agent_led=complaint.agent_led, agent_reasons=list(complaint.agent_reasons),
            phone=mask_phone(complaint.phone),
            assigned_to=names.get(complaint.assigned_to) if complaint.assigned_to else None,
        ))
    return rows, total


async def history(session: AsyncSession, complaint: Complaint) -> list[HistoryRow]:
    """The complaint's whole history, oldest first, with staff named."""
    events = (await session.scalars(
        select(ComplaintEvent).where(ComplaintEvent.complaint_id == complaint.id)
        .order_by(ComplaintEvent.at, ComplaintEvent.id))).all()
    names = await staff_names(session, {i for e in events if (i := staff_id(e.actor))})
    rows = []
    for event in events:
        number = staff_id(event.actor)
        if number is not None:
            who = f"{names.get(number, '已删除的用户')}（staff:{number}）"
        else:
            who = {"consumer": "消费者", "system": "系统"}.get(event.actor, event.actor)
        rows.append(HistoryRow(at=as_utc(event.at), actor=who, kind=event.kind,
                               what=EVENT_NAMES.get(event.kind, event.kind),
                               detail=dict(event.detail)))
    return rows


def contact(complaint: Complaint) -> dict[str, str | None]:
    """The consumer's unmasked contact: call only where the view is audited."""
    return {"name": complaint.name, "phone": complaint.phone, "id_number": complaint.id_number}


def record_contact_view(session: AsyncSession, complaint: Complaint, user_id: int,
                        now: datetime | None = None) -> None:
    """Every showing of an unmasked contact leaves an audit entry."""
    audit(session, "view-contact", user_id, complaint.id, {"tracking_no": complaint.tracking_no},
          now)


async def export_record(session: AsyncSession, complaint: Complaint, user_id: int,
                        directory: Directory, now: datetime | None = None) -> dict[str, Any]:
    """The complaint and its history as one JSON document, contact masked, audited."""
    audit(session, "export", user_id, complaint.id, {"tracking_no": complaint.tracking_no}, now)
    events = await history(session, complaint)
    return {
        "tracking_no": complaint.tracking_no,
        "queue": complaint.queue_id,
        "queue_name": queue_name(directory, complaint.queue_id),
        "institution": complaint.institution_id,
        "sector": complaint.sector,
        "business": complaint.business,
        "cause": complaint.cause,
        "status": complaint.status,
        "risk": complaint.risk,
        "risk_reasons": list(complaint.risk_reasons),
        "agent_led": complaint.agent_led,
        "agent_reasons": list(complaint.agent_reasons),
        "story": complaint.story,
        "occurred": complaint.occurred,
        "wish": complaint.wish,
        "relationship": complaint.relationship,
        "phone": mask_phone(complaint.phone),
        "id_number": mask_id_number(complaint.id_number) if complaint.id_number else None,
        "received_at": as_utc(complaint.received_at).isoformat(),
        "deadline_at": as_utc(complaint.deadline_at).isoformat(),
        "deadline_days": complaint.deadline_days,
        "extension_reason": complaint.extension_reason,
        "resolved_at": as_utc(complaint.resolved_at).isoformat()
        if complaint.resolved_at else None,
        "outcome": complaint.outcome,
        "history": [{"at": row.at.isoformat(), "actor": row.actor, "kind": row.kind,
                     "detail": row.detail} for row in events],
    }


async def dead_notifications(session: AsyncSession, scope: Scope, directory: Directory,
                             limit: int = 50) -> list[DeadRow]:
    """Outbox rows marked dead in the user's queues, newest first."""
    rows = await session.execute(
        select(Notification, Complaint.tracking_no)
        .outerjoin(Complaint, Complaint.id == Notification.complaint_id)
        .where(Notification.status == "dead", scope.notifications())
        .order_by(Notification.id.desc()).limit(limit))
    return [DeadRow(id=n.id, queue_name=queue_name(directory, n.queue_id), kind=n.kind,
                    kind_name=TITLES.get(n.kind, n.kind),
                    tracking_no=tracking_no, attempts=n.attempts,
                    last_error=(n.last_error or "")[:200], created_at=as_utc(n.created_at))
            for n, tracking_no in rows]


def page_count(total: int) -> int:
    """How many queue pages a total makes (at least one)."""
    return max(1, math.ceil(total / PAGE_SIZE))
