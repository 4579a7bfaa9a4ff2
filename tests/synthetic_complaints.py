"""Synthetic complaints for the oversight tests: generated here, fictitious, no real people.

A `Spec` is what a test knows about one generated complaint, independently of the code
under test; `complaint_row` turns it into a database row; `quarter_dataset` builds a whole
quarter (2026Q1, the previous quarter and a few earlier ones) with fixed per-institution
counts chosen to exercise the ranking (ties at the top and at the cut, a sector with fewer
than three institutions) and random handling (seeded, so every run is the same).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bot import db
from bot.models import Complaint

SHANGHAI = ZoneInfo("Asia/Shanghai")
BUSINESS = ("deposit", "bank-card", "loan", "credit-report", "wealth-management", "e-banking",
            "agency-sales", "life-insurance", "health-insurance", "car-insurance",
            "property-insurance", "other")
CAUSES = ("mis-selling", "fees", "claims", "service", "debt-collection", "info-security",
          "fund-safety", "contract", "other")
SECTOR_OF = {
    "icbc": "bank", "abc": "bank", "boc": "bank", "ccb": "bank", "bocom": "bank",
    "psbc": "bank", "cmb": "bank", "hsbank": "bank",
    "chinalife": "life", "pingan-life": "life", "cpic-life": "life", "taikang-life": "life",
    "picc-pc": "property", "pingan-pc": "property",
}
FAMILY = "赵钱孙李周吴郑王"
# 2026Q1 counts per institution: icbc/ccb tie at the top, abc/boc tie at the cut (abc
# ranks third by id, boc is "tied at the cut"); property has only two institutions.
Q1_COUNTS = {"icbc": 14, "ccb": 14, "abc": 9, "boc": 9, "bocom": 5, "psbc": 2, "cmb": 1,
             "chinalife": 12, "pingan-life": 8, "cpic-life": 6, "taikang-life": 5,
             "picc-pc": 10, "pingan-pc": 7}
Q4_COUNTS = {"icbc": 10, "abc": 9, "boc": 12, "bocom": 5, "psbc": 4, "hsbank": 3,
             "chinalife": 15, "pingan-life": 8, "cpic-life": 2,
             "picc-pc": 6, "pingan-pc": 7}
UNATTRIBUTED_Q1 = {"assoc-bank": 3, "assoc-insurance": 2}
UNATTRIBUTED_Q4 = {"assoc-bank": 1}


@dataclass(frozen=True)
class Spec:
    """One synthetic complaint as the test knows it (times are aware UTC)."""

    key: int
    institution_id: str | None
    queue_id: str
    sector: str
    business: str
    cause: str
    status: str
    risk: bool
    agent_led: bool
    received_at: datetime
    deadline_days: int = 15
    resolved_at: datetime | None = None
    story: str = "办理业务时遇到问题，希望机构给个说法。"

    @property
    def deadline_at(self) -> datetime:
        """Calendar days from receipt (computed here, not by the code under test)."""
        return self.received_at + timedelta(days=self.deadline_days)

    @property
    def name(self) -> str:
        """A fictitious complainant name."""
        return f"{FAMILY[self.key % len(FAMILY)]}测试{self.key}"

    @property
    def phone(self) -> str:
        """A fictitious mobile number (139 0000 xxxx)."""
        return f"1390000{self.key % 10000:04d}"


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
          second: int = 0) -> datetime:
    """A Shanghai wall-clock moment, as aware UTC."""
    return datetime(year, month, day, hour, minute, second, tzinfo=SHANGHAI).astimezone(UTC)


def complaint_row(spec: Spec) -> Complaint:
    """The database row of a spec, with fictitious personal data."""
    return Complaint(
        tracking_no=f"TS-{spec.key:06d}", confirmation_key=f"synthetic:{spec.key}",
        channel="web", user_id=f"synthetic-user-{spec.key}", queue_id=spec.queue_id,
        institution_id=spec.institution_id, sector=spec.sector, business=spec.business,
        cause=spec.cause, story=spec.story, occurred="上个月", wish="退款并道歉",
        name=spec.name, phone=spec.phone,
        id_number=f"110101199001{spec.key % 10000:04d}23" if spec.key % 3 == 0 else None,
        relationship="self", consent_at=spec.received_at, status=spec.status,
        risk=spec.risk, risk_reasons=["media"] if spec.risk else [],
        agent_led=spec.agent_led, agent_reasons=["出现“全额退保”"] if spec.agent_led else [],
        received_at=spec.received_at, deadline_at=spec.deadline_at,
        deadline_days=spec.deadline_days, resolved_at=spec.resolved_at,
        outcome="已退款" if spec.status == "resolved" else None,
    )


async def insert(url: str, specs: Iterable[Spec]) -> None:
    """Migrate the database and insert the specs as complaint rows (one commit)."""
    await db.upgrade(url)
    engine = db.create_engine(url)
    try:
        async with db.create_sessionmaker(engine)() as session, session.begin():
            session.add_all([complaint_row(spec) for spec in specs])
    finally:
        await engine.dispose()


def _random_moment(rng: random.Random, year: int, quarter: int) -> datetime:
    start = datetime(year, 3 * quarter - 2, 1, tzinfo=SHANGHAI)
    end_month = 3 * quarter + 1
    end = datetime(year + (end_month > 12), (end_month - 1) % 12 + 1, 1, tzinfo=SHANGHAI)
    seconds = int((end - start).total_seconds())
    return (start + timedelta(seconds=rng.randrange(seconds))).astimezone(UTC)


def _handling(rng: random.Random, spec: Spec) -> Spec:
    """Random status, resolution moment and deadline extension."""
    roll = rng.random()
    days = rng.choices((15, 30, 60), weights=(80, 15, 5))[0]
    spec = replace(spec, deadline_days=days)
    if roll < 0.55:
        delay = timedelta(hours=rng.uniform(4, 40 * 24))
        return replace(spec, status="resolved", resolved_at=spec.received_at + delay)
    if roll < 0.65:
        delay = timedelta(hours=rng.uniform(1, 20 * 24))
        return replace(spec, status="withdrawn", resolved_at=spec.received_at + delay)
    return replace(spec, status=rng.choice(("received", "in_progress", "awaiting_info",
                                            "transferred")))


def _spec(rng: random.Random, key: int, institution_id: str | None, queue_id: str,
          sector: str, received_at: datetime) -> Spec:
    spec = Spec(key=key, institution_id=institution_id, queue_id=queue_id, sector=sector,
                business=rng.choice(BUSINESS), cause=rng.choice(CAUSES), status="received",
                risk=rng.random() < 0.12, agent_led=rng.random() < 0.08,
                received_at=received_at)
    return _handling(rng, spec)


def _quarter(rng: random.Random, counts: dict[str, int], unattributed: dict[str, int],
             year: int, quarter: int, first_key: int) -> list[Spec]:
    specs = []
    key = first_key
    for institution_id, n in counts.items():
        for _ in range(n):
            specs.append(_spec(rng, key, institution_id, institution_id,
                               SECTOR_OF[institution_id], _random_moment(rng, year, quarter)))
            key += 1
    for queue_id, n in unattributed.items():
        for _ in range(n):
            sector = "bank" if queue_id == "assoc-bank" else rng.choice(("life", "property"))
            specs.append(_spec(rng, key, None, queue_id, sector,
                               _random_moment(rng, year, quarter)))
            key += 1
    return specs


def boundary_specs(first_key: int) -> list[Spec]:
    """Complaints at the edges of 2026Q1 in local time (two are in Q1, the others not)."""
    base = {"queue_id": "cmb", "institution_id": "cmb", "sector": "bank", "business": "loan",
            "cause": "fees", "status": "received", "risk": False, "agent_led": False}
    moments = [
        local(2025, 12, 31, 23, 59, 59),  # Q4 locally (15:59:59 UTC)
        local(2026, 4, 1, 0, 0, 0),       # Q2: the end is excluded (16:00 UTC on 31 March)
        local(2026, 4, 1, 0, 30),         # Q2 locally, still 31 March in UTC
    ]
    return [Spec(key=first_key + i, received_at=moment, **base)
            for i, moment in enumerate(moments)]


def edge_specs(first_key: int) -> list[Spec]:
    """Hand-made 2026Q1 complaints on the edges of each definition."""
    base = {"queue_id": "cmb", "institution_id": "cmb", "sector": "bank",
            "business": "bank-card", "cause": "service", "risk": False, "agent_led": False}
    received = local(2026, 2, 1, 10)
    q1_last_minutes = local(2026, 3, 31, 23, 30)   # Q1 locally, 15:30 UTC
    q1_first = local(2026, 1, 1, 0, 0)             # Q1 locally, 16:00 UTC on 31 December
    return [
        # resolved exactly at 15 days: within 15 days, and exactly at its deadline: on time
        Spec(key=first_key, status="resolved", received_at=received,
             resolved_at=received + timedelta(days=15), **base),
        # one second later: neither within 15 days nor on time
        Spec(key=first_key + 1, status="resolved", received_at=received,
             resolved_at=received + timedelta(days=15, seconds=1), **base),
        # extended to 30 days and resolved on day 20: on time but not within 15 days
        Spec(key=first_key + 2, status="resolved", received_at=received, deadline_days=30,
             resolved_at=received + timedelta(days=20), **base),
        # withdrawn after its deadline had passed unanswered: overdue
        Spec(key=first_key + 3, status="withdrawn", received_at=received,
             resolved_at=received + timedelta(days=16), **base),
        # received in the last half hour of Q1 and still open: pending, not overdue
        Spec(key=first_key + 4, status="received", received_at=q1_last_minutes,
             **base),
        # received at the first instant of Q1
        Spec(key=first_key + 5, status="in_progress", received_at=q1_first,
             **base),
        # resolved after the end of the quarter (open as of the report's end)
        Spec(key=first_key + 6, status="resolved", received_at=local(2026, 3, 28, 9),
             resolved_at=local(2026, 4, 2, 9), **base),
    ]


def quarter_dataset(seed: int = 2026) -> list[Spec]:
    """2026Q1 with the previous quarter, two earlier ones and a few later complaints."""
    rng = random.Random(seed)
    specs = _quarter(rng, Q1_COUNTS, UNATTRIBUTED_Q1, 2026, 1, 1)
    specs += _quarter(rng, Q4_COUNTS, UNATTRIBUTED_Q4, 2025, 4, 1000)
    specs += _quarter(rng, {"icbc": 4, "chinalife": 3}, {}, 2025, 3, 2000)
    specs += _quarter(rng, {"ccb": 2}, {}, 2025, 2, 3000)
    specs += _quarter(rng, {"icbc": 3, "picc-pc": 2}, {}, 2026, 2, 4000)
    specs += boundary_specs(5000)
    specs += edge_specs(6000)
    return specs
