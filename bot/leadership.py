"""Leader election: the work that must run on exactly one worker at a time.

With several workers on one PostgreSQL database, most work runs everywhere (chat, the
webhook channels, the outbox dispatcher, whose claims are safe), but the deadline scheduler
and Telegram polling must run once: Telegram answers a second concurrent `getUpdates` with
409 Conflict, and two schedulers would race for the same rows.  The leader is the worker
holding a session-level PostgreSQL advisory lock (`pg_try_advisory_lock`) on a dedicated
connection.  The other workers try the lock again every `poll_seconds`; when the leader
dies its connection closes, the server releases the lock and another worker takes over.
A leader whose connection stops answering steps down at once, before trying again, so two
workers never both believe they lead for longer than one poll.

On SQLite there is only ever one process (`xiaobao serve --workers` refuses more), so that
process is always the leader.

`setup` adds the election as a cleanup context; code that must run on the leader only wraps
its loop in `while_leader`, which starts it on election and cancels it on losing office.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from bot import db
from bot.config import Config

log = logging.getLogger(__name__)

# The advisory lock's key: any constant 64-bit number, the same in every worker.
LEADER_LOCK_KEY = 0x7869616F62616F  # "xiaobao"
POLL_SECONDS = 2.0
Work = Callable[[], Awaitable[Any]]


class Leadership:
    """Whether this process leads: `elected` is set while it holds the leader lock."""

    def __init__(self, url: str, *, poll_seconds: float = POLL_SECONDS,
                 key: int = LEADER_LOCK_KEY) -> None:
        self.url = url
        self.poll_seconds = poll_seconds
        self.key = key
        self.elected = asyncio.Event()
        self._deposed = asyncio.Event()
        self._deposed.set()

    @property
    def single_process(self) -> bool:
        """True on SQLite, where this process is the only one and always leads."""
        return db.async_url(self.url).get_backend_name() == "sqlite"

    async def run(self) -> None:
        """Campaign for the lock until cancelled; on SQLite, simply lead."""
        if self.single_process:
            self._take_office()
            return
        engine = self._engine()
        try:
            while True:
                try:
                    await self._campaign(engine)
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # noqa: BLE001 - retried while the service runs
                    log.warning("leader election: database unreachable (%s); trying again "
                                "in %.0f s", type(error).__name__, self.poll_seconds)
                await asyncio.sleep(self.poll_seconds)
        finally:
            self._step_down()
            await engine.dispose()

    def _engine(self) -> AsyncEngine:
        """A pool-less engine: the lock lives and dies with one dedicated connection."""
        name = f"xiaobao-leader-{os.getpid()}"  # shows in pg_stat_activity
        return create_async_engine(db.async_url(self.url), poolclass=NullPool,
                                   hide_parameters=True,
                                   connect_args={"server_settings": {"application_name": name}})

    async def _campaign(self, engine: AsyncEngine) -> None:
        """Hold one connection: take the lock when free, then check the link stays up."""
        timeout = max(self.poll_seconds * 2, 5.0)
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            try:
                while True:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the
                    # result instead of raising when it is cancelled just as the query
                    # finishes, and a swallowed cancel left shutdown waiting for ever.
                    async with asyncio.timeout(timeout):
                        if self.elected.is_set():
                            await autocommit.scalar(text("SELECT 1"))
                        elif await self._try_lock(autocommit):
                            self._take_office()
                    await asyncio.sleep(self.poll_seconds)
            finally:
                self._step_down()  # before the connection (and with it the lock) goes

    async def _try_lock(self, connection: AsyncConnection) -> bool:
        """One non-blocking attempt at the leader lock."""
        return bool(await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"),
                                            {"key": self.key}))

    def _take_office(self) -> None:
        if not self.elected.is_set():
            log.info("this worker (pid %d) is now the leader: it runs the schedulers and "
                     "Telegram polling", os.getpid())
        self._deposed.clear()
        self.elected.set()

    def _step_down(self) -> None:
        if self.elected.is_set():
            log.warning("this worker (pid %d) is no longer the leader", os.getpid())
        self.elected.clear()
        self._deposed.set()

    async def while_leader(self, work: Work, name: str) -> None:
        """Run `work()` whenever this process leads; cancel it when it stops leading.

        Work that ends by itself (a failure) is started again one poll later, if this
        process still leads then.  Returns only when cancelled.
        """
        while True:
            await self.elected.wait()
            task = asyncio.create_task(work(), name=name)
            deposed = asyncio.create_task(self._deposed.wait())
            try:
                await asyncio.wait({task, deposed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                deposed.cancel()
                task.cancel()
                await asyncio.gather(task, deposed, return_exceptions=True)
            if not task.cancelled():
                error = task.exception()
                log.warning("%s stopped (%s); starting it again in %.0f s", name,
                            type(error).__name__ if error else "returned", self.poll_seconds)
                await asyncio.sleep(self.poll_seconds)


LEADERSHIP = web.AppKey("leadership", Leadership)


async def while_leader(app: web.Application, work: Work, name: str) -> None:
    """Run `work()` on the leader only (everywhere when the app has no election)."""
    leadership = app.get(LEADERSHIP)
    if leadership is None:
        await work()
        return
    await leadership.while_leader(work, name)


def setup(app: web.Application, config: Config) -> None:
    """Elect a leader for as long as the service runs (add before schedulers and channels)."""

    async def leadership_ctx(app: web.Application) -> AsyncIterator[None]:
        """Campaign in the background; give up the lock at shutdown, after the work stops."""
        leadership = Leadership(config.database.url)
        app[LEADERSHIP] = leadership
        task = asyncio.create_task(leadership.run(), name="leader-election")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(leadership_ctx)
