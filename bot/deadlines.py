"""The deadline scheduler: due-soon and overdue notices, and escalation to the association.

Institutions must decide a complaint within 15 calendar days of receipt (30 or 60 when
extended with a reason); `deadline_at` holds that moment (`complaint_records.deadline`).
A sweep, run by the service every `deadlines.interval_seconds`, writes outbox rows for the
notification dispatcher to deliver:

* **due-soon** to the complaint's queue when an open complaint's deadline falls within the
  next `due_soon_days` days;
* **overdue** to the complaint's queue once the deadline has passed with the complaint
  still open;
* for an overdue complaint, **escalation**: an "escalated" event in its history and an
  urgent notification ("urgent-overdue") to its sector's association
  (`Directory.association_for`).  The complaint stays in its queue: the institution still
  owes the decision, the association now watches it.  A complaint already in the
  association's own queue gets the overdue notice and no escalation (there is nobody
  above it in this service).

Each notice is written exactly once per complaint, kind and deadline: the idempotency key
`complaint:{id}:{kind}:{deadline_days}` is unique in the outbox, so a repeated sweep (or a
second worker racing this one) writes nothing new, while an extended deadline (15 → 30
days) arms the warnings again.  Open means any status but "resolved" and "withdrawn".
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.complaint_records import add_event, notification_payload
from bot.config import ComplaintsConfig, Config, DeadlinesConfig
from bot.leadership import while_leader
from bot.models import Complaint, Notification, as_utc, utcnow
from bot.reports import CLOSED_STATUSES
from bot.services import SERVICES
from classifiers.institutions import Directory

DUE_SOON_DAYS = 3
SHANGHAI = ZoneInfo("Asia/Shanghai")
DEFAULT_DASHBOARD_URL = ComplaintsConfig().dashboard_url


@dataclass(frozen=True)
class SweepResult:
    """Which complaints one sweep warned, declared overdue and escalated (ids)."""

    due_soon: tuple[int, ...] = ()
    overdue: tuple[int, ...] = ()
    escalated: tuple[int, ...] = ()

    @property
    def written(self) -> int:
        """How many notices the sweep wrote."""
        return len(self.due_soon) + len(self.overdue) + len(self.escalated)


def calendar_days_left(deadline_at: datetime, now: datetime) -> int:
    """Days from today to the deadline's day on the Beijing calendar (negative: past)."""
    return (as_utc(deadline_at).astimezone(SHANGHAI).date()
            - as_utc(now).astimezone(SHANGHAI).date()).days


def notice_key(complaint: Complaint, kind: str) -> str:
    """The outbox idempotency key of one notice: once per complaint, kind and deadline."""
    return f"complaint:{complaint.id}:{kind}:{complaint.deadline_days}"


async def _existing(session: AsyncSession, keys: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        found.update((await session.scalars(
            select(Notification.idempotency_key)
            .where(Notification.idempotency_key.in_(chunk)))).all())
    return found


async def run_once(session: AsyncSession, directory: Directory, now: datetime, *,
                   due_soon_days: int = DUE_SOON_DAYS,
                   dashboard_url: str = DEFAULT_DASHBOARD_URL) -> SweepResult:
    """One sweep at `now`: write the notices and escalations not yet written (no commit)."""
    now = as_utc(now).astimezone(UTC)  # SQLite compares naive UTC strings
    horizon = now + timedelta(days=due_soon_days)
    candidates = list((await session.scalars(
        select(Complaint)
        .where(Complaint.status.not_in(sorted(CLOSED_STATUSES)),
               Complaint.deadline_at <= horizon)
        .order_by(Complaint.id))).all())
    planned: list[tuple[Complaint, str, bool]] = []
    for complaint in candidates:
        overdue = now > as_utc(complaint.deadline_at)
        planned.append((complaint, "overdue" if overdue else "due-soon", overdue))
    keys = [notice_key(c, kind) for c, kind, _ in planned]
    keys += [notice_key(c, "escalated") for c, _, overdue in planned if overdue]
    done = await _existing(session, keys)
    due_soon: list[int] = []
    overdue_ids: list[int] = []
    escalated: list[int] = []
    for complaint, kind, overdue in planned:
        deadline_at = as_utc(complaint.deadline_at)
        payload: dict[str, Any] = {
            **notification_payload(complaint, directory, dashboard_url),
            "deadline_days": complaint.deadline_days,
        }
        left = calendar_days_left(deadline_at, now)
        if overdue:
            payload["days_overdue"] = -left
        else:
            payload["days_left"] = left
        key = notice_key(complaint, kind)
        if key not in done:
            session.add(Notification(idempotency_key=key, queue_id=complaint.queue_id,
                                     complaint_id=complaint.id, kind=kind, payload=payload,
                                     next_attempt_at=now))
            (overdue_ids if overdue else due_soon).append(complaint.id)
        association = directory.association_for(complaint.sector)
        escalation = notice_key(complaint, "escalated")
        if overdue and association.id != complaint.queue_id and escalation not in done:
            await add_event(session, complaint, "system", "escalated",
                            {"to": association.id, "reason": "overdue",
                             "deadline_days": complaint.deadline_days,
                             "deadline_at": deadline_at.isoformat()}, now)
            session.add(Notification(idempotency_key=escalation, queue_id=association.id,
                                     complaint_id=complaint.id, kind="urgent-overdue",
                                     payload={**payload, "escalated_from": complaint.queue_id},
                                     next_attempt_at=now))
            escalated.append(complaint.id)
    await session.flush()
    return SweepResult(tuple(due_soon), tuple(overdue_ids), tuple(escalated))


async def run_forever(sessions: async_sessionmaker[AsyncSession], directory: Directory,
                      settings: DeadlinesConfig, dashboard_url: str,
                      clock: Callable[[], datetime] = utcnow) -> None:
    """Sweep every interval until cancelled; a failed sweep is logged and retried later."""
    log = logging.getLogger(__name__)
    while True:
        await asyncio.sleep(settings.interval_seconds)
        try:
            async with sessions() as session, session.begin():
                result = await run_once(session, directory, clock(),
                                        due_soon_days=settings.due_soon_days,
                                        dashboard_url=dashboard_url)
        except Exception as error:  # noqa: BLE001 - the next sweep must still run
            # Only the type: a driver's message may quote a row.
            log.warning("deadline sweep failed (%s); next try in %.0f s",
                        type(error).__name__, settings.interval_seconds)
            continue
        if result.written:
            log.info("deadline sweep: %d due-soon, %d overdue, %d escalated",
                     len(result.due_soon), len(result.overdue), len(result.escalated))


DEADLINE_TASK = web.AppKey("deadline_task", asyncio.Task)


def setup(app: web.Application, config: Config) -> None:
    """Run the sweep in the service when `deadlines.enabled` (after the services start).

    The first sweep comes one interval after start-up, then one every interval.
    """
    if not config.deadlines.enabled:
        return

    async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
        """Start the sweep loop with the services; cancel it at shutdown."""
        services = app[SERVICES]
        sweeps = functools.partial(run_forever, services.sessions, services.triage.directory,
                                   config.deadlines, config.complaints.dashboard_url)
        # One worker sweeps: the leader (bot.leadership); another takes over if it dies.
        task = asyncio.create_task(while_leader(app, sweeps, "deadline scheduler"))
        app[DEADLINE_TASK] = task
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(scheduler_ctx)
