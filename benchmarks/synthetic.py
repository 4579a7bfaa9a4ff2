"""Synthetic knowledge bases N times the size of the real one, for scaling measurements.

A base ×N holds every real entry plus N-1 perturbed copies of it.  A copy keeps the
entry's topic, answer, next steps, sources and related links, and gets a new id
(`<id>-x<copy>`) and perturbed phrasings, so that the vocabulary, the jieba segmentation
dictionary and the posting lists grow as they would with more curated entries rather than
repeating the same rows.  Each phrasing (title and every question) of a copy is:

1. with probability 0.35, joined with a clause taken from a phrasing of another entry
   (before or after it), as consumers mix several concerns in one message;
2. given 1-3 characters drawn from the base's own character distribution (weighted by
   frequency), inserted at random positions: new words and new character n-grams appear;
3. with probability 0.25, missing one of its characters (when it has more than four).

Every question stays unique after the base's own normalisation (lower case,
letters and digits only), so the result passes the same checks as the real base
(`load_knowledge`).  A fixed seed makes the bases reproducible.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from knowledge.base import Entry, KnowledgeBase

_CLAUSE_SPLIT = re.compile(r"[\s,.!?;:，。！？；：、…~～]+")
_KEEP = re.compile(r"[0-9a-z\u4e00-\u9fff]")
ENTRIES_PER_FILE = 1000
CLAUSE_PROBABILITY = 0.35
DROP_PROBABILITY = 0.25


def _unique_key(question: str) -> str:
    """The key under which `kb check` finds duplicate questions (same rule as the base)."""
    return "".join(ch for ch in question.lower() if ch.isalnum())


class Perturber:
    """Makes new, unique phrasings out of an entry's own, with the base's vocabulary."""

    def __init__(self, base: KnowledgeBase, seed: int) -> None:
        self.random = random.Random(seed)
        phrasings = [
            (owner, text)
            for owner, entry in enumerate(base.entries)
            for text in (entry.title, *entry.questions)
        ]
        self.clauses = [
            (owner, clause)
            for owner, text in phrasings
            for clause in _CLAUSE_SPLIT.split(text)
            if len(clause) >= 2
        ]
        counts = Counter(ch for _, text in phrasings for ch in text.lower() if _KEEP.match(ch))
        self.chars = list(counts)
        self.cumulative_weights = list(itertools.accumulate(counts.values()))
        self.seen = {_unique_key(q) for e in base.entries for q in e.questions}

    def _random_chars(self, count: int) -> list[str]:
        return self.random.choices(self.chars, cum_weights=self.cumulative_weights, k=count)

    def _variant(self, text: str, owner: int) -> str:
        rng = self.random
        if rng.random() < CLAUSE_PROBABILITY:
            other, clause = rng.choice(self.clauses)
            while other == owner:
                other, clause = rng.choice(self.clauses)
            text = f"{clause}，{text}" if rng.random() < 0.5 else f"{text}，{clause}"
        chars = list(text)
        for ch in self._random_chars(rng.randint(1, 3)):
            chars.insert(rng.randint(0, len(chars)), ch)
        if len(chars) > 4 and rng.random() < DROP_PROBABILITY:
            del chars[rng.randrange(len(chars))]
        return "".join(chars)

    def question(self, text: str, owner: int) -> str:
        """A perturbed phrasing no other question of the base has (after normalisation)."""
        variant = self._variant(text, owner)
        key = _unique_key(variant)
        while not key or key in self.seen:
            variant += self._random_chars(1)[0]
            key = _unique_key(variant)
        self.seen.add(key)
        return variant

    def title(self, text: str, owner: int) -> str:
        """A perturbed title (titles are indexed too, but need not be unique)."""
        return self._variant(text, owner)


def _as_record(entry: Entry, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": entry.id,
        "topic": entry.topic,
        "title": entry.title,
        "questions": list(entry.questions),
        "answer": entry.answer,
        "next_steps": list(entry.next_steps),
        "audience": list(entry.audience),
        "related": list(entry.related),
        "sources": list(entry.sources),
        "reviewed": entry.reviewed,
    }
    if entry.risk is not None:
        record["risk"] = entry.risk
    record.update(changes)
    return record


def synthetic_records(base: KnowledgeBase, factor: int, seed: int) -> Iterator[dict[str, Any]]:
    """The entries of the base ×factor: the real ones, then factor-1 copies of each."""
    perturber = Perturber(base, seed)
    for entry in base.entries:
        yield _as_record(entry)
    for copy in range(1, factor):
        for owner, entry in enumerate(base.entries):
            yield _as_record(
                entry,
                id=f"{entry.id}-x{copy}",
                title=perturber.title(entry.title, owner),
                questions=[perturber.question(q, owner) for q in entry.questions],
            )


def _scalar(value: Any) -> str:
    """A YAML scalar: dates plain, text double-quoted (JSON escapes are valid YAML ones)."""
    return value.isoformat() if isinstance(value, dt.date) else json.dumps(value,
                                                                            ensure_ascii=False)


def to_yaml(records: list[dict[str, Any]]) -> str:
    """Block-style YAML like the real data files (PyYAML's representer is 10x slower)."""
    lines: list[str] = []
    for record in records:
        prefix = "- "
        for key, value in record.items():
            if isinstance(value, list):
                lines.append(f"{prefix}{key}:" + ("" if value else " []"))
                lines.extend(f"    - {_scalar(item)}" for item in value)
            else:
                lines.append(f"{prefix}{key}: {_scalar(value)}")
            prefix = "  "
    return "\n".join(lines) + "\n"


def write_synthetic_base(base: KnowledgeBase, factor: int, directory: Path, seed: int) -> Path:
    """Write the base ×factor as YAML data files in `directory` (created); return it."""
    directory.mkdir(parents=True, exist_ok=True)
    batch: list[dict[str, Any]] = []
    number = 0
    for record in synthetic_records(base, factor, seed):
        batch.append(record)
        if len(batch) == ENTRIES_PER_FILE:
            (directory / f"synthetic-{number:04d}.yaml").write_text(to_yaml(batch),
                                                                   encoding="utf-8")
            number += 1
            batch = []
    if batch:
        (directory / f"synthetic-{number:04d}.yaml").write_text(to_yaml(batch), encoding="utf-8")
    return directory
