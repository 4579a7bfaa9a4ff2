"""The live knowledge index of a running service, swappable without dropping a request.

`kb reload` (or SIGHUP) builds a complete new matcher off the event loop and then replaces
the reference in one assignment; requests already holding the old matcher finish with it.
A base that fails its checks is never swapped in: the service keeps answering from the
previous one and the error names the file and line.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from classifiers import cache, linear
from knowledge.base import DEFAULT_DATA_DIR, DEFAULT_TOPICS_FILE, load_knowledge
from knowledge.matcher import Matcher
from knowledge.text import DEFAULT_LEXICON_DIR, Lexicon, TextProcessor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnowledgeSource:
    """Where a knowledge index is built from, and the matcher's settings."""

    data_dir: Path = DEFAULT_DATA_DIR
    lexicon_dir: Path = DEFAULT_LEXICON_DIR
    topics_file: Path = DEFAULT_TOPICS_FILE
    threshold: float = 0.5
    suggestions: int = 3
    cache_dir: Path | None = None


def read_out_of_scope(lexicon_dir: Path) -> list[str]:
    """Messages the bot must decline, used to calibrate the matcher's confidence."""
    path = lexicon_dir / "out_of_scope.txt"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def read_calibration(lexicon_dir: Path) -> list[tuple[str, str | None]]:
    """Realistic labelled queries (topic or None) on which the confidence is fitted."""
    path = lexicon_dir / "calibration.jsonl"
    if not path.exists():
        return []
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            items.append((str(record["text"]), record.get("topic")))
    return items


def fit_matcher(source: KnowledgeSource) -> Matcher:
    """Load, check and index the base from scratch (blocking; raises KnowledgeError)."""
    base = load_knowledge(source.data_dir, source.topics_file)
    lexicon = Lexicon.load(source.lexicon_dir)
    corpus = [text for entry in base.entries for text in (entry.title, *entry.questions)]
    processor = TextProcessor.for_corpus(lexicon, corpus)
    matcher = Matcher(processor, threshold=source.threshold, suggestions=source.suggestions)
    return matcher.fit(
        base, read_out_of_scope(source.lexicon_dir), read_calibration(source.lexicon_dir)
    )


CODE = tuple(Path(__file__).parent / name for name in ("base.py", "matcher.py", "text.py",
                                                       "index.py"))


def build_matcher(source: KnowledgeSource) -> Matcher:
    """The fitted matcher for this source, from the cache when its inputs are unchanged."""
    inputs = (*CODE, Path(linear.__file__), source.data_dir, source.lexicon_dir,
              source.topics_file)
    matcher: Matcher = cache.cached(source.cache_dir, "knowledge", inputs,
                                    lambda: fit_matcher(source))
    matcher.threshold, matcher.suggestions = source.threshold, source.suggestions
    return matcher


class KnowledgeIndex:
    """Holds the current matcher; `reload` swaps in a freshly built one atomically."""

    def __init__(self, source: KnowledgeSource, matcher: Matcher) -> None:
        self.source = source
        self.matcher = matcher

    @classmethod
    def build(cls, source: KnowledgeSource) -> KnowledgeIndex:
        """Build the first index (blocking)."""
        return cls(source, build_matcher(source))

    async def reload(self) -> Matcher:
        """Rebuild from the files and swap; on error keep the old index and re-raise."""
        matcher = await asyncio.to_thread(build_matcher, self.source)
        self.matcher = matcher
        log.info("knowledge index reloaded: %d entries", len(matcher.entries_))
        return matcher
