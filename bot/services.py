"""The long-lived objects every channel shares, and how they are opened.

Database engine, migrations, knowledge index and the conversation engine are built here in
order; `bot.app` mounts channels on top and the command line reuses the same pieces.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import db
from bot.complaint_dialogue import ComplaintDialogue
from bot.complaint_status import ComplaintStatus
from bot.config import Config
from bot.engine import Engine
from bot.fitted import knowledge_source, scam_advice
from bot.transactions import Transactions
from classifiers.scam import ScamChecker, build_scam_checker
from classifiers.triage import Triage, build_triage
from knowledge.index import KnowledgeIndex


@dataclass
class Services:
    """The long-lived objects every channel shares."""

    config: Config
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    transactions: Transactions
    knowledge: KnowledgeIndex
    scam: ScamChecker
    triage: Triage
    chat: Engine

    async def close(self) -> None:
        """Release the database: the turns' held connection first, then the pool."""
        await self.transactions.close()
        await self.engine.dispose()


SERVICES = web.AppKey("services", Services)




async def open_services(config: Config, knowledge: KnowledgeIndex | None = None) -> Services:
    """Connect to the database (migrating it if allowed) and build the engine."""
    if config.database.auto_migrate:
        await db.upgrade(config.database.url)
    engine = db.create_engine(
        config.database.url, pool_size=config.database.pool_size, echo=config.database.echo
    )
    sessions = db.create_sessionmaker(engine)
    transactions = Transactions(engine)
    if knowledge is None:
        knowledge = await asyncio.to_thread(KnowledgeIndex.build, knowledge_source(config))
    scam = await asyncio.to_thread(
        build_scam_checker, knowledge_source(config).cache_dir,
        scam_advice(knowledge.matcher.base_),
    )
    triage = await asyncio.to_thread(build_triage, knowledge_source(config).cache_dir)
    complaints = ComplaintDialogue(triage, knowledge, config.chat, config.complaints)
    async with sessions() as session, session.begin():
        await complaints.purge_expired(session)
    return Services(
        config=config,
        engine=engine,
        sessions=sessions,
        transactions=transactions,
        knowledge=knowledge,
        scam=scam,
        triage=triage,
        chat=Engine(transactions, knowledge, config.chat, scam, complaints,
                    ComplaintStatus(triage.directory)),
    )


