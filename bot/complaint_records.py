"""Complaint records: filing, tracking numbers, deadlines, history, withdrawal.

Everything a confirmed complaint needs is written in the caller's transaction — the
record with its triage, the first history events, the legal deadline and the outbox rows
for the queue's staff — so either all of it exists or none of it does, and the consumer
sees a tracking number only after the commit.  Functions take the session and never
commit (the caller owns the transaction).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.models import Complaint, ComplaintEvent, Notification, utcnow
from bot.privacy import mask_phone, redact
from classifiers.institutions import Directory, Institution
from classifiers.linear import char_ngrams

TRACKING_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L: read aloud safely
TRACKING_PATTERN = re.compile(r"\b([A-Za-z]{2})-?(\d{4})-?([2-9A-Za-z]{4})\b")
DEADLINE_DAYS = (15, 30, 60)
SIMILAR_TEXT = 0.8
SAME_PHONE_LIMIT = 2
LOOKBACK_DAYS = 90
STATUS_NAMES = {
    "received": "已受理，等待机构处理",
    "in_progress": "机构正在处理",
    "awaiting_info": "机构需要您补充材料",
    "resolved": "已处理完毕",
    "withdrawn": "已撤回",
    "transferred": "已转交其他机构处理",
}
RELATIONSHIPS = {
    "self": "本人", "proxy": "代理他人（家人、朋友）", "heir": "继承人（当事人已去世）",
}


@dataclass(frozen=True)
class Submission:
    """What the consumer confirmed, plus triage, ready to become a record."""

    channel: str
    user_id: str
    confirmation_key: str
    queue: Institution
    institution: Institution | None
    sector: str | None
    business: str
    cause: str
    story: str
    occurred: str
    wish: str
    name: str
    phone: str
    id_number: str | None
    relationship: str
    consent_at: datetime
    risk_reasons: tuple[str, ...]
    agent_reasons: tuple[str, ...]


def new_tracking_no(prefix: str, now: datetime, rng: random.Random) -> str:
    """Short, unambiguous and dictatable over the phone: e.g. BB-2611-7K3Q."""
    suffix = "".join(rng.choice(TRACKING_ALPHABET) for _ in range(4))
    return f"{prefix}-{now:%y%m}-{suffix}"


def parse_tracking_no(text: str) -> str | None:
    """A tracking number inside free text, normalised (bb26117k3q → BB-2611-7K3Q)."""
    match = TRACKING_PATTERN.search(text)
    if match is None:
        return None
    return f"{match.group(1).upper()}-{match.group(2)}-{match.group(3).upper()}"


def deadline(received_at: datetime, days: int) -> datetime:
    """The decision deadline: calendar days from receipt, as the 2020 rules count them."""
    return received_at + timedelta(days=days)


def _trigrams(text: str) -> frozenset[str]:
    return frozenset(char_ngrams(text, 3, 3))


def _similar(left: frozenset[str], right: frozenset[str]) -> float:
    """Jaccard similarity of two texts' character trigrams (0 when either has none)."""
    return len(left & right) / len(left | right) if left and right else 0.0


class StoryTrigrams:
    """Counts the recent stories a new one nearly repeats, keeping their trigrams between filings.

    Every filing compares its story with up to 300 recent ones.  Cutting those into
    trigrams again each time was a tenth of a busy worker's CPU, so the sets are kept,
    keyed by the story text (a filed story never changes).  Only the ones of the latest
    comparison stay, and no more than `budget` trigrams in all (a 5,000-character story has
    about as many), so the memory stays bounded.
    """

    def __init__(self, budget: int = 150_000) -> None:
        self.budget = budget
        self._kept: dict[str, frozenset[str]] = {}

    def count_alike(self, story: str, recent: Sequence[str],
                    threshold: float = SIMILAR_TEXT) -> int:
        """How many of `recent` share at least `threshold` of their trigrams with `story`."""
        mine = _trigrams(story)
        kept: dict[str, frozenset[str]] = {}
        room = self.budget
        alike = 0
        for text in recent:
            theirs = kept.get(text) or self._kept.get(text)
            if theirs is None:
                theirs = _trigrams(text)
            if text not in kept and len(theirs) <= room:
                kept[text] = theirs
                room -= len(theirs)
            # |A ∩ B| / |A ∪ B| is at most min(|A|, |B|) / max(|A|, |B|): a cheap first test.
            small, large = sorted((len(mine), len(theirs)))
            if small and small / large >= threshold and _similar(mine, theirs) >= threshold:
                alike += 1
        self._kept = kept
        return alike


async def agent_led_signals(session: AsyncSession, submission: Submission,
                            now: datetime, stories: StoryTrigrams | None = None) -> list[str]:
    """Cross-complaint signs of the agent-led trade: one phone, or one text, many times.

    Pass the same `stories` to every call to reuse the recent stories' trigrams.
    """
    since = now - timedelta(days=LOOKBACK_DAYS)
    same_phone = await session.scalar(
        select(func.count(Complaint.id)).where(
            Complaint.phone == submission.phone, Complaint.received_at >= since,
            Complaint.name != submission.name,
        )
    )
    signals = []
    if same_phone and same_phone >= SAME_PHONE_LIMIT:
        signals.append(f"同一手机号近{LOOKBACK_DAYS}天已用于{same_phone}件其他人的投诉")
    recent = (await session.scalars(
        select(Complaint.story).where(Complaint.received_at >= since)
        .order_by(Complaint.id.desc()).limit(300)
    )).all()
    alike = (stories or StoryTrigrams()).count_alike(submission.story, recent)
    if alike:
        signals.append(f"与近期{alike}件投诉的内容几乎一样")
    return signals


async def file_complaint(
    session: AsyncSession,
    submission: Submission,
    directory: Directory,
    tracking_prefix: str,
    dashboard_url: str,
    rng: random.Random,
    now: datetime | None = None,
    stories: StoryTrigrams | None = None,
) -> Complaint:
    """Create the record, its first events and its notifications (caller commits)."""
    now = now or utcnow()
    agent_reasons = [*submission.agent_reasons,
                     *await agent_led_signals(session, submission, now, stories)]
    complaint = Complaint(
        tracking_no=new_tracking_no(tracking_prefix, now, rng),
        confirmation_key=submission.confirmation_key,
        channel=submission.channel, user_id=submission.user_id,
        queue_id=submission.queue.id,
        institution_id=submission.institution.id if submission.institution else None,
        sector=submission.sector, business=submission.business, cause=submission.cause,
        story=submission.story, occurred=submission.occurred, wish=submission.wish,
        name=submission.name, phone=submission.phone, id_number=submission.id_number,
        relationship=submission.relationship, consent_at=submission.consent_at,
        status="received", risk=bool(submission.risk_reasons),
        risk_reasons=list(submission.risk_reasons), agent_led=bool(agent_reasons),
        agent_reasons=agent_reasons, received_at=now,
        deadline_at=deadline(now, DEADLINE_DAYS[0]), deadline_days=DEADLINE_DAYS[0],
    )
    session.add(complaint)
    await session.flush()
    await add_event(session, complaint, "consumer", "received",
                    {"channel": submission.channel, "relationship": submission.relationship},
                    now)
    await add_event(session, complaint, "system", "routed", {"queue": complaint.queue_id}, now)
    if complaint.risk:
        await add_event(session, complaint, "system", "risk-flagged",
                        {"reasons": complaint.risk_reasons}, now)
    if complaint.agent_led:
        await add_event(session, complaint, "system", "agent-led-flagged",
                        {"reasons": agent_reasons}, now)
    payload = notification_payload(complaint, directory, dashboard_url)
    session.add(Notification(idempotency_key=f"complaint:{complaint.id}:new",
                             queue_id=complaint.queue_id, complaint_id=complaint.id,
                             kind="new-complaint", payload=payload, next_attempt_at=now))
    association = directory.association_for(complaint.sector)
    if complaint.risk and association.id != complaint.queue_id:
        session.add(Notification(idempotency_key=f"complaint:{complaint.id}:urgent",
                                 queue_id=association.id, complaint_id=complaint.id,
                                 kind="urgent-risk", payload=payload, next_attempt_at=now))
    return complaint


def notification_payload(complaint: Complaint, directory: Directory,
                         dashboard_url: str) -> dict[str, Any]:
    """What staff are told: masked, short, with a link to the full record."""
    institution = directory.get(complaint.institution_id or "")
    return {
        "tracking_no": complaint.tracking_no,
        "institution": institution.name if institution else "（未指明机构）",
        "business": complaint.business,
        "cause": complaint.cause,
        "risk": complaint.risk,
        "risk_reasons": list(complaint.risk_reasons),
        "agent_led": complaint.agent_led,
        "summary": redact(complaint.story)[:120],
        "phone": mask_phone(complaint.phone),
        "deadline": complaint.deadline_at.isoformat(),
        "link": f"{dashboard_url.rstrip('/')}/complaints/{complaint.tracking_no}",
    }


async def add_event(session: AsyncSession, complaint: Complaint, actor: str, kind: str,
                    detail: dict[str, Any] | None = None,
                    now: datetime | None = None) -> ComplaintEvent:
    """Append to the complaint's history (never updated, never deleted)."""
    event = ComplaintEvent(complaint_id=complaint.id, at=now or utcnow(), actor=actor,
                           kind=kind, detail=detail or {})
    session.add(event)
    return event


async def find_by_tracking(session: AsyncSession, tracking_no: str) -> Complaint | None:
    """The complaint with this tracking number, if any."""
    return await session.scalar(select(Complaint).where(Complaint.tracking_no == tracking_no))


async def find_by_confirmation(session: AsyncSession, key: str) -> Complaint | None:
    """The complaint a confirmation created (a repeated confirmation finds it)."""
    return await session.scalar(select(Complaint).where(Complaint.confirmation_key == key))


async def complaints_of(session: AsyncSession, channel: str, user_id: str,
                        limit: int = 5) -> list[Complaint]:
    """A consumer's own complaints on this channel, newest first."""
    return list((await session.scalars(
        select(Complaint).where(Complaint.channel == channel, Complaint.user_id == user_id)
        .order_by(Complaint.id.desc()).limit(limit)
    )).all())


async def staff_replies(session: AsyncSession, complaint: Complaint) -> list[ComplaintEvent]:
    """Replies and requests for information staff addressed to the consumer, oldest first."""
    return list((await session.scalars(
        select(ComplaintEvent).where(ComplaintEvent.complaint_id == complaint.id,
                                     ComplaintEvent.kind.in_(("reply", "info-requested")))
        .order_by(ComplaintEvent.id)
    )).all())


async def withdraw(session: AsyncSession, complaint: Complaint, actor: str,
                   now: datetime | None = None) -> None:
    """Record the consumer's withdrawal (the record stays; staff are told)."""
    now = now or utcnow()
    complaint.status = "withdrawn"
    complaint.resolved_at = now
    await add_event(session, complaint, actor, "withdrawn", {}, now)
    session.add(Notification(idempotency_key=f"complaint:{complaint.id}:withdrawn",
                             queue_id=complaint.queue_id, complaint_id=complaint.id,
                             kind="withdrawn", payload={"tracking_no": complaint.tracking_no},
                             next_attempt_at=now))
