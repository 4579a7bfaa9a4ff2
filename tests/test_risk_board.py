"""The public-opinion board: risk-flagged complaints of one's own sectors only, with the
reasons in words and the state of handling, and no contact data."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from bot import db
from bot.deadlines import run_once
from bot.reports import association_sectors
from bot.risk_board import risk_board
from classifiers.institutions import Directory
from tests.synthetic_complaints import Spec, complaint_row, local

NOW = local(2026, 3, 20, 12)


def spec(key: int, days_ago: float, institution: str | None, queue: str, sector: str, *,
         risk: bool = True, status: str = "received", closed_days_ago: float | None = None
         ) -> Spec:
    received = NOW - timedelta(days=days_ago)
    closed = NOW - timedelta(days=closed_days_ago) if closed_days_ago is not None else None
    return Spec(key=key, institution_id=institution, queue_id=queue, sector=sector,
                business="other", cause="service", status=status, risk=risk,
                agent_led=False, received_at=received, resolved_at=closed,
                story=f"我要找记者曝光，电话1390000{key:04d}。")


SPECS = [
    spec(1, 2, "icbc", "icbc", "bank"),                               # open, bank
    spec(2, 20, "ccb", "ccb", "bank"),                                # open, overdue, bank
    spec(3, 1, "chinalife", "chinalife", "life"),                     # open, life
    spec(4, 10, "picc-pc", "picc-pc", "property", status="resolved",
         closed_days_ago=2),                                          # closed recently
    spec(5, 60, "icbc", "icbc", "bank", status="resolved",
         closed_days_ago=30),                                         # closed long ago
    spec(6, 1, "icbc", "icbc", "bank", risk=False),                   # not flagged
    spec(7, 5, None, "assoc-bank", "bank", status="withdrawn",
         closed_days_ago=1),                                          # withdrawn recently
]


@pytest.fixture
async def sessions(database_url):
    await db.upgrade(database_url)
    engine = db.create_engine(database_url)
    sessions = db.create_sessionmaker(engine)
    rows = [complaint_row(s) for s in SPECS]
    rows[0].risk_reasons = ["gathering", "distress"]
    async with sessions() as session, session.begin():
        session.add_all(rows)
    async with sessions() as session, session.begin():
        await run_once(session, Directory.load(), NOW)  # escalates the overdue one
    yield sessions
    await engine.dispose()


async def board(sessions, sectors, **kwargs):
    async with sessions() as session:
        return await risk_board(session, Directory.load(), sectors, now=NOW, **kwargs)


def keys(items) -> list[int]:
    return [int(item.tracking_no.split("-")[1]) for item in items]


async def test_each_association_sees_only_its_own_sectors(sessions):
    directory = Directory.load()
    bank = await board(sessions, association_sectors(directory, "assoc-bank"))
    insurance = await board(sessions, association_sectors(directory, "assoc-insurance"))
    assert association_sectors(directory, "assoc-insurance") == ("life", "property")
    assert keys(bank) == [1, 2, 7]          # open ones newest first, then the closed one
    assert keys(insurance) == [3, 4]
    assert keys(await board(sessions, None)) == [3, 1, 2, 7, 4]
    assert keys(await board(sessions, ["bank"], queues=["ccb"])) == [2]


async def test_reasons_in_words_and_the_state_of_handling(sessions):
    listed = await board(sessions, None)
    items = dict(zip(keys(listed), listed, strict=True))
    first = items[1]
    assert first.reason_codes == ("gathering", "distress")
    assert first.reasons == ("提到聚集、集体维权或上访", "流露出轻生或极度绝望的情绪")
    assert (first.status, first.status_name, first.open) == ("received", "已受理，等待机构处理",
                                                            True)
    assert first.institution_name == "中国工商银行蚌埠分行" and not first.overdue
    overdue = items[2]
    assert overdue.overdue and overdue.escalated and overdue.last_action == "escalated"
    assert items[3].reasons == ("提到媒体或网络曝光",)
    closed = items[4]
    assert (closed.open, closed.status_name, closed.overdue) == (False, "已处理完毕", False)
    assert items[7].queue_name == "蚌埠市银行业协会" and items[7].institution_id is None


async def test_no_contact_data_leaves_the_board(sessions):
    items = await board(sessions, None)
    text = json.dumps([item.as_dict() for item in items], ensure_ascii=False)
    for s in SPECS:
        assert s.phone not in text and s.name not in text
    assert "139****" in text


async def test_recent_days_and_limit(sessions):
    assert keys(await board(sessions, None, recent_days=40)) == [3, 1, 2, 7, 4, 5]
    assert keys(await board(sessions, None, limit=2)) == [3, 1]
