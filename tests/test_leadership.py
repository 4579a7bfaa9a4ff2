"""Leader election: one leader at a time on PostgreSQL, a successor when it goes, and the
leader-only work started and stopped with office; on SQLite the one process leads."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from bot.leadership import Leadership
from tests.conftest import postgres_url


async def _until(condition: object, timeout: float = 5.0) -> None:
    async def wait() -> None:
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), timeout)


async def test_on_sqlite_the_only_process_always_leads(sqlite_url):
    leadership = Leadership(sqlite_url)
    await asyncio.wait_for(leadership.run(), 1)
    assert leadership.elected.is_set()


async def test_leader_only_work_runs_while_leading(sqlite_url):
    leadership = Leadership(sqlite_url, poll_seconds=0.05)
    runs: list[str] = []

    async def work() -> None:
        runs.append("started")
        try:
            await asyncio.Event().wait()
        finally:
            runs.append("stopped")

    guarded = asyncio.create_task(leadership.while_leader(work, "test work"))
    await asyncio.sleep(0.05)
    assert runs == []  # not elected yet
    await leadership.run()
    await _until(lambda: runs == ["started"])
    leadership._step_down()  # as when the leader's connection fails
    await _until(lambda: runs == ["started", "stopped"])
    guarded.cancel()
    await asyncio.gather(guarded, return_exceptions=True)


@pytest.mark.postgres
async def test_one_postgres_leader_and_a_successor_when_it_goes():
    url = postgres_url()
    key = secrets.randbits(62)  # nobody else's lock
    first, second = (Leadership(url, poll_seconds=0.1, key=key) for _ in range(2))
    campaigns = [asyncio.create_task(first.run())]
    await _until(first.elected.is_set)
    campaigns.append(asyncio.create_task(second.run()))
    await asyncio.sleep(0.5)
    assert not second.elected.is_set()
    campaigns[0].cancel()  # the leader goes; its connection, and the lock, with it
    await asyncio.gather(campaigns[0], return_exceptions=True)
    assert not first.elected.is_set()
    await _until(second.elected.is_set)
    campaigns[1].cancel()
    await asyncio.gather(campaigns[1], return_exceptions=True)


@pytest.mark.postgres
async def test_a_campaign_ends_when_cancelled_whatever_it_was_doing():
    # Shutdown cancels the campaign at any moment, also just as a query finishes: Python
    # 3.11's wait_for swallowed such a cancel and the worker never stopped (about 2 in 5
    # tries here with a tight loop before the fix).
    url = postgres_url()
    for attempt in range(30):
        leadership = Leadership(url, poll_seconds=0, key=secrets.randbits(62))
        campaign = asyncio.create_task(leadership.run())
        await asyncio.sleep(0.05 + attempt * 0.002)
        campaign.cancel()
        done, _ = await asyncio.wait({campaign}, timeout=3)
        while not campaign.done():  # clean up before failing
            campaign.cancel()
            await asyncio.sleep(0.01)
        assert done, f"the campaign went on after being cancelled (attempt {attempt + 1})"
        assert not leadership.elected.is_set()
