"""Where the fitted models come from, per configuration (cheap to import).

The command line's one-shot tools (`ask`, `check-message`, `triage`) need only this, not
the web service's database and channel stack, so they start quickly.
"""

from __future__ import annotations

from pathlib import Path

from bot import texts
from bot.config import Config
from knowledge.base import DEFAULT_DATA_DIR, KnowledgeBase
from knowledge.index import KnowledgeSource
from knowledge.text import DEFAULT_LEXICON_DIR


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


def scam_advice(base: KnowledgeBase) -> dict[str, str]:
    """Per scam type, what to do now, taken from that scam's knowledge entry."""
    advice = {}
    for scam_type, entry_id in texts.SCAM_ADVICE_ENTRIES.items():
        entry = base.entry(entry_id)
        if entry is not None and entry.next_steps:
            steps = "\n".join(f"· {step}" for step in entry.next_steps)
            advice[scam_type] = f"关于“{entry.title}”，您可以：\n{steps}"
    return advice
