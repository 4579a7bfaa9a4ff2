"""The deadline scheduler: due-soon and overdue notices once, escalation once, re-armed by
an extension, and the sweep running inside the service only when started."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from bot import db
from bot.app import create_app
from bot.config import ConfigError, DeadlinesConfig, build_config
from bot.deadlines import DEADLINE_TASK, run_forever, run_once
from bot.models import Complaint, ComplaintEvent, Notification
from bot.services import SERVICES
from classifiers.institutions import Directory
from tests.conftest import postgres_url, reset_postgres
from tests.synthetic_complaints import Spec, complaint_row, local

NOW = local(2026, 3, 10, 9)


def spec(key: int, received_days_ago: float, *, queue: str = "icbc",
         institution: str | None = "icbc", sector: str = "bank", status: str = "received",
         deadline_days: int = 15) -> Spec:
    received = NOW - timedelta(days=received_days_ago)
    resolved = received + timedelta(days=3) if status in ("resolved", "withdrawn") else None
    return Spec(key=key, institution_id=institution, queue_id=queue, sector=sector,
                business="loan", cause="fees", status=status, risk=False, agent_led=False,
                received_at=received, deadline_days=deadline_days, resolved_at=resolved)


@pytest.fixture
async def sessions(database_url):
    await db.upgrade(database_url)
    engine = db.create_engine(database_url)
    yield db.create_sessionmaker(engine)
    await engine.dispose()


async def add(sessions, *specs: Spec) -> dict[int, int]:
    """Insert the specs; map each spec key to the complaint's database id."""
    rows = [complaint_row(s) for s in specs]
    async with sessions() as session, session.begin():
        session.add_all(rows)
    return {s.key: row.id for s, row in zip(specs, rows, strict=True)}


async def sweep(sessions, now=NOW):
    async with sessions() as session, session.begin():
        return await run_once(session, Directory.load(), now)


async def notices(sessions) -> dict[str, Notification]:
    async with sessions() as session:
        rows = (await session.scalars(select(Notification))).all()
    return {row.idempotency_key: row for row in rows}


async def events(sessions, kind: str) -> list[ComplaintEvent]:
    async with sessions() as session:
        return list((await session.scalars(
            select(ComplaintEvent).where(ComplaintEvent.kind == kind)
            .order_by(ComplaintEvent.id))).all())


async def test_due_soon_and_overdue_notices_are_written_once(sessions):
    ids = await add(
        sessions,
        spec(1, 13),                          # deadline in 2 days: due soon
        spec(2, 12),                          # deadline in exactly 3 days: due soon
        spec(3, 11),                          # deadline in 4 days: nothing yet
        spec(4, 15),                          # deadline exactly now: due soon, not overdue
        spec(5, 16),                          # a day overdue
        spec(6, 20, status="resolved"),       # closed: never warned
        spec(7, 20, status="withdrawn"),      # closed: never warned
    )
    result = await sweep(sessions)
    assert result.due_soon == (ids[1], ids[2], ids[4])
    assert result.overdue == (ids[5],)
    written = await notices(sessions)
    assert set(written) == {
        f"complaint:{ids[1]}:due-soon:15", f"complaint:{ids[2]}:due-soon:15",
        f"complaint:{ids[4]}:due-soon:15", f"complaint:{ids[5]}:overdue:15",
        f"complaint:{ids[5]}:escalated:15"}
    due = written[f"complaint:{ids[1]}:due-soon:15"]
    assert (due.kind, due.queue_id, due.complaint_id, due.status) == (
        "due-soon", "icbc", ids[1], "pending")
    assert due.payload["days_left"] == 2 and due.payload["deadline_days"] == 15
    assert due.payload["phone"] == "139****0001" and "13900000001" not in str(due.payload)
    overdue = written[f"complaint:{ids[5]}:overdue:15"]
    assert (overdue.kind, overdue.queue_id, overdue.payload["days_overdue"]) == (
        "overdue", "icbc", 1)

    assert (await sweep(sessions)).written == 0
    assert set(await notices(sessions)) == set(written)
    # Six hours on, the complaint due exactly at NOW is overdue: that is new, once.
    later = await sweep(sessions, NOW + timedelta(hours=6))
    assert (later.due_soon, later.overdue, later.escalated) == ((), (ids[4],), (ids[4],))
    assert (await sweep(sessions, NOW + timedelta(hours=7))).written == 0
    assert len(await notices(sessions)) == len(written) + 2


async def test_an_overdue_complaint_is_escalated_once_and_stays_in_its_queue(sessions):
    ids = await add(
        sessions,
        spec(10, 17),                                                    # bank
        spec(11, 18, queue="chinalife", institution="chinalife", sector="life"),
        spec(12, 19, queue="assoc-insurance", institution=None, sector="property"),
    )
    result = await sweep(sessions)
    assert result.escalated == (ids[10], ids[11])
    written = await notices(sessions)
    bank = written[f"complaint:{ids[10]}:escalated:15"]
    assert (bank.kind, bank.queue_id, bank.payload["escalated_from"]) == (
        "urgent-overdue", "assoc-bank", "icbc")
    assert written[f"complaint:{ids[11]}:escalated:15"].queue_id == "assoc-insurance"
    # Already in the association's own queue: the overdue notice goes there, no escalation.
    assert written[f"complaint:{ids[12]}:overdue:15"].queue_id == "assoc-insurance"
    assert f"complaint:{ids[12]}:escalated:15" not in written

    await sweep(sessions, NOW + timedelta(days=1))
    escalated = await events(sessions, "escalated")
    assert [(e.complaint_id, e.actor, e.detail["to"]) for e in escalated] == [
        (ids[10], "system", "assoc-bank"), (ids[11], "system", "assoc-insurance")]
    async with sessions() as session:
        queues = dict((await session.execute(select(Complaint.id, Complaint.queue_id))).all())
    assert queues == {ids[10]: "icbc", ids[11]: "chinalife", ids[12]: "assoc-insurance"}


async def test_due_soon_then_overdue_each_once_as_time_passes(sessions):
    ids = await add(sessions, spec(20, 13))
    first = await sweep(sessions)
    assert first.due_soon == (ids[20],) and first.overdue == ()
    second = await sweep(sessions, NOW + timedelta(days=3))
    assert second.due_soon == () and second.overdue == (ids[20],)
    assert second.escalated == (ids[20],)
    assert sorted(n.kind for n in (await notices(sessions)).values()) == [
        "due-soon", "overdue", "urgent-overdue"]


async def test_an_extended_deadline_arms_the_warnings_again(sessions):
    ids = await add(sessions, spec(30, 16))
    await sweep(sessions)
    async with sessions() as session, session.begin():
        complaint = await session.get(Complaint, ids[30])
        complaint.deadline_days = 30
        complaint.deadline_at = complaint.received_at + timedelta(days=30)
    # Received 16 days before NOW: the 30-day deadline is NOW + 14 days.
    assert (await sweep(sessions, NOW + timedelta(days=5))).written == 0
    rearmed = await sweep(sessions, NOW + timedelta(days=12))
    assert rearmed.due_soon == (ids[30],)
    late = await sweep(sessions, NOW + timedelta(days=14, hours=1))
    assert late.overdue == (ids[30],) and late.escalated == (ids[30],)
    assert set(await notices(sessions)) == {
        f"complaint:{ids[30]}:{kind}:{days}"
        for kind, days in [("overdue", 15), ("escalated", 15), ("due-soon", 30),
                           ("overdue", 30), ("escalated", 30)]}
    escalated = await events(sessions, "escalated")
    assert [e.detail["deadline_days"] for e in escalated] == [15, 30]


async def until_a_backend_waits_on_a_lock(engine, timeout: float = 15.0) -> None:
    """Wait (rather than sleep a guessed time) until PostgreSQL shows a backend blocked."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        async with engine.connect() as connection:
            waiting = (await connection.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"))).scalar_one()
        if waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the racing insert never waited on the first one's key")


async def test_racing_workers_still_write_each_notice_once():
    url = postgres_url()
    await reset_postgres(url)
    await db.upgrade(url)
    engine = db.create_engine(url)
    sessions = db.create_sessionmaker(engine)
    try:
        ids = await add(sessions, spec(40, 16))
        directory = Directory.load()
        first, second = sessions(), sessions()
        await first.begin()
        await run_once(first, directory, NOW)  # flushed, not committed yet

        async def racer() -> None:
            async with second.begin():
                await run_once(second, directory, NOW)

        racing = asyncio.create_task(racer())
        await until_a_backend_waits_on_a_lock(engine)  # the second insert, on the unique key
        await first.commit()
        with pytest.raises(IntegrityError):
            await racing
        await first.close()
        await second.close()
        assert set(await notices(sessions)) == {f"complaint:{ids[40]}:overdue:15",
                                                f"complaint:{ids[40]}:escalated:15"}
        assert len(await events(sessions, "escalated")) == 1
    finally:
        await engine.dispose()


# -- in the service ----------------------------------------------------------------------
def deadline_config(sqlite_url: str, **deadlines):
    return build_config({"database": {"url": sqlite_url}, "deadlines": deadlines}, environ={})


async def test_the_service_sweeps_when_the_scheduler_is_started(aiohttp_client, sqlite_url,
                                                                knowledge_index):
    config = deadline_config(sqlite_url, enabled=True, interval_seconds=0.05)
    client = await aiohttp_client(create_app(config, knowledge_index))
    assert not client.app[DEADLINE_TASK].done()
    sessions = client.app[SERVICES].sessions
    overdue = spec(50, 40)  # overdue whatever today's date
    ids = await add(sessions, overdue)
    for _ in range(100):
        if f"complaint:{ids[50]}:overdue:15" in await notices(sessions):
            break
        await asyncio.sleep(0.05)
    written = await notices(sessions)
    assert f"complaint:{ids[50]}:overdue:15" in written
    assert f"complaint:{ids[50]}:escalated:15" in written


async def test_the_scheduler_is_off_when_disabled(aiohttp_client, sqlite_url, knowledge_index):
    config = deadline_config(sqlite_url, enabled=False)
    client = await aiohttp_client(create_app(config, knowledge_index))
    assert DEADLINE_TASK not in client.app


async def test_a_failing_sweep_is_logged_by_type_only_and_the_loop_goes_on(tmp_path, caplog):
    engine = db.create_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables at all
    settings = DeadlinesConfig(interval_seconds=0.01)
    caplog.set_level(logging.WARNING, logger="bot.deadlines")
    task = asyncio.create_task(run_forever(db.create_sessionmaker(engine), Directory.load(),
                                           settings, "http://127.0.0.1:8080/staff"))
    await asyncio.sleep(0.2)
    assert not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await engine.dispose()
    failures = [r.getMessage() for r in caplog.records]
    assert len(failures) >= 2
    assert failures[0] == "deadline sweep failed (OperationalError); next try in 0 s"


# -- configuration -------------------------------------------------------------------------
def test_deadlines_section_defaults_and_environment():
    config = build_config({}, environ={})
    assert config.deadlines == DeadlinesConfig(enabled=True, interval_seconds=300.0,
                                               due_soon_days=3)
    changed = build_config({}, environ={"XIAOBAO_DEADLINES_ENABLED": "false",
                                        "XIAOBAO_DEADLINES_INTERVAL_SECONDS": "60"})
    assert changed.deadlines.enabled is False and changed.deadlines.interval_seconds == 60.0


@pytest.mark.parametrize(("section", "key"), [({"interval_seconds": 0}, "interval_seconds"),
                                              ({"due_soon_days": 0}, "due_soon_days"),
                                              ({"enabled": "yes"}, "enabled")])
def test_bad_deadline_settings_name_the_key(section, key):
    with pytest.raises(ConfigError, match=f"deadlines.{key}"):
        build_config({"deadlines": section}, environ={})


async def test_due_soon_days_widens_the_window(sessions):
    ids = await add(sessions, spec(60, 9))  # deadline in 6 days
    async with sessions() as session, session.begin():
        assert (await run_once(session, Directory.load(), NOW)).written == 0
        wide = await run_once(session, Directory.load(), NOW, due_soon_days=7)
    assert wide.due_soon == (ids[60],)
