"""The long-lived objects every channel shares, and how they are opened.

Database engine, migrations, knowledge index and the conversation engine are built here in
order; `bot.app` mounts channels on top and the command line reuses the same pieces.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import db, texts
from bot.complaint_dialogue import ComplaintDialogue
from bot.complaint_status import ComplaintStatus
from bot.config import Config
from bot.engine import Engine
from classifiers.scam import ScamChecker, build_scam_checker
from classifiers.triage import Triage, build_triage
from knowledge.base import DEFAULT_DATA_DIR, KnowledgeBase
from knowledge.index import KnowledgeIndex, KnowledgeSource
from knowledge.text import DEFAULT_LEXICON_DIR


@dataclass
class Services:
    """The long-lived objects every channel shares."""

    config: Config
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    knowledge: KnowledgeIndex
    scam: ScamChecker
    triage: Triage
    chat: Engine


SERVICES = web.AppKey("services", Services)


def knowledge_source(config: Config) -> KnowledgeSource:
    """Where the knowledge index comes from, per configuration."""
    knowledge = config.knowledge
    return KnowledgeSource(
        data_dir=Path(knowledge.data_dir) if knowledge.data_dir else DEFAULT_DATA_DIR,
        lexicon_dir=Path(knowledge.lexicon_dir) if knowledge.lexicon_dir else DEFAULT_LEXICON_DIR,
        threshold=knowledge.answer_threshold,
        suggestions=knowledge.suggestion_count,
        cache_dir=Path(knowledge.cache_dir) if knowledge.cache_dir else None,
    )


async def open_services(config: Config, knowledge: KnowledgeIndex | None = None) -> Services:
    """Connect to the database (migrating it if allowed) and build the engine."""
    if config.database.auto_migrate:
        await db.upgrade(config.database.url)
    engine = db.create_engine(
        config.database.url, pool_size=config.database.pool_size, echo=config.database.echo
    )
    sessions = db.create_sessionmaker(engine)
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
        knowledge=knowledge,
        scam=scam,
        triage=triage,
        chat=Engine(sessions, knowledge, config.chat, scam, complaints,
                    ComplaintStatus(triage.directory)),
    )


def scam_advice(base: KnowledgeBase) -> dict[str, str]:
    """Per scam type, what to do now, taken from that scam's knowledge entry."""
    advice = {}
    for scam_type, entry_id in texts.SCAM_ADVICE_ENTRIES.items():
        entry = base.entry(entry_id)
        if entry is not None and entry.next_steps:
            steps = "\n".join(f"· {step}" for step in entry.next_steps)
            advice[scam_type] = f"关于“{entry.title}”，您可以：\n{steps}"
    return advice
