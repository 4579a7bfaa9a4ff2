"""The public-opinion board: risk-flagged complaints now, why, and how far handling got.

Associations must report public-opinion risk at once (media exposure, people gathering,
escalation after being ignored, extreme distress, a large shared loss — complaints.toml).
The board lists every open risk-flagged complaint of the association's sectors, plus those
closed in the last few days, with the reasons in words and the state of handling: status,
deadline, overdue, escalated, and the last thing that happened.  It reads the database on
every call, so the page is as current as its last refresh.  No contact data is returned;
the summary is masked like a staff notification.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.complaint_records import STATUS_NAMES
from bot.exports import mask_text
from bot.models import Complaint, ComplaintEvent, as_utc, utcnow
from bot.reports import CLOSED_STATUSES, sector_filter
from classifiers.institutions import Directory
from classifiers.triage import RISK_REASON_TEXT

SUMMARY_CHARS = 120


@dataclass(frozen=True)
class RiskItem:
    """One risk-flagged complaint as the board shows it."""

    complaint_id: int
    tracking_no: str
    received_at: datetime
    queue_id: str
    queue_name: str
    institution_id: str | None
    institution_name: str | None
    sector: str | None
    business: str
    cause: str
    reason_codes: tuple[str, ...]
    reasons: tuple[str, ...]
    status: str
    status_name: str
    open: bool
    deadline_at: datetime
    deadline_days: int
    overdue: bool
    escalated: bool
    agent_led: bool
    last_action: str | None
    last_action_at: datetime | None
    summary: str

    def as_dict(self) -> dict[str, Any]:
        """JSON form (for a page that refreshes itself)."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in ("received_at", "deadline_at", "last_action_at"):
            data[name] = data[name].isoformat() if data[name] else None
        data["reason_codes"] = list(self.reason_codes)
        data["reasons"] = list(self.reasons)
        return data


async def risk_board(session: AsyncSession, directory: Directory,
                     sectors: Collection[str] | None, *, queues: Collection[str] | None = None,
                     now: datetime | None = None, recent_days: int = 7,
                     limit: int = 200) -> list[RiskItem]:
    """Risk-flagged complaints of these sectors (None: all): open first, newest first.

    `queues` narrows further to a dashboard user's scope (None: no queue condition);
    closed complaints stay on the board for `recent_days` after they were closed.
    """
    now = as_utc(now or utcnow()).astimezone(UTC)
    since = now - timedelta(days=recent_days)
    query = (select(Complaint)
             .where(Complaint.risk.is_(True),
                    or_(Complaint.status.not_in(sorted(CLOSED_STATUSES)),
                        Complaint.resolved_at >= since))
             .order_by(Complaint.received_at.desc(), Complaint.id.desc()))
    scope = sector_filter(sectors)
    if scope is not None:
        query = query.where(scope)
    if queues is not None:
        query = query.where(Complaint.queue_id.in_(sorted(queues)))
    complaints = list((await session.scalars(query)).all())
    complaints.sort(key=lambda c: c.status in CLOSED_STATUSES)  # stable: open ones first
    complaints = complaints[:limit]
    events = await _events(session, [c.id for c in complaints])
    return [_item(c, directory, now, events.get(c.id, [])) for c in complaints]


async def _events(session: AsyncSession, ids: list[int]
                  ) -> dict[int, list[tuple[str, datetime]]]:
    found: dict[int, list[tuple[str, datetime]]] = {}
    for start in range(0, len(ids), 500):
        rows = await session.execute(
            select(ComplaintEvent.complaint_id, ComplaintEvent.kind, ComplaintEvent.at)
            .where(ComplaintEvent.complaint_id.in_(ids[start:start + 500]))
            .order_by(ComplaintEvent.id))
        for complaint_id, kind, at in rows.all():
            found.setdefault(complaint_id, []).append((kind, as_utc(at)))
    return found


def _item(complaint: Complaint, directory: Directory, now: datetime,
          events: list[tuple[str, datetime]]) -> RiskItem:
    queue = directory.get(complaint.queue_id)
    institution = directory.get(complaint.institution_id or "")
    deadline_at = as_utc(complaint.deadline_at)
    is_open = complaint.status not in CLOSED_STATUSES
    resolved = as_utc(complaint.resolved_at) if complaint.resolved_at else None
    stop = now if is_open or resolved is None else resolved
    last = events[-1] if events else None
    codes = tuple(complaint.risk_reasons or ())
    return RiskItem(
        complaint_id=complaint.id, tracking_no=complaint.tracking_no,
        received_at=as_utc(complaint.received_at), queue_id=complaint.queue_id,
        queue_name=queue.name if queue else complaint.queue_id,
        institution_id=complaint.institution_id,
        institution_name=institution.name if institution else None,
        sector=complaint.sector, business=complaint.business, cause=complaint.cause,
        reason_codes=codes, reasons=tuple(RISK_REASON_TEXT.get(code, code) for code in codes),
        status=complaint.status, status_name=STATUS_NAMES.get(complaint.status, complaint.status),
        open=is_open, deadline_at=deadline_at, deadline_days=complaint.deadline_days,
        overdue=stop > deadline_at,
        escalated=any(kind == "escalated" for kind, _ in events),
        agent_led=complaint.agent_led,
        last_action=last[0] if last else None, last_action_at=last[1] if last else None,
        summary=mask_text(complaint.story, complaint.name)[:SUMMARY_CHARS],
    )
