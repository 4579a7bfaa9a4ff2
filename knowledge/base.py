"""The curated knowledge base: loading and checking the YAML entries.

Entries are reviewed like code, so every problem is reported as `file:line: message`, and
a base with problems is never loaded into a running service (the previous index stays).
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PACKAGE_DIR = Path(__file__).parent
DEFAULT_DATA_DIR = PACKAGE_DIR / "data"
DEFAULT_TOPICS_FILE = PACKAGE_DIR / "topics.toml"
AUDIENCES = frozenset({"elderly", "students", "new-citizens"})
MIN_QUESTIONS = 5
ANSWER_CHARS = (80, 600)
REQUIRED_KEYS = ("id", "topic", "title", "questions", "answer", "next_steps", "sources",
                 "reviewed")
OPTIONAL_KEYS = ("risk", "audience", "related")


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class KnowledgeError(ValueError):
    """The knowledge base has problems; `problems` lists them as `file:line: message`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Topic:
    """A knowledge topic (ids are stable contracts, see topics.toml)."""

    id: str
    zh: str
    scope: str


@dataclass(frozen=True)
class Entry:
    """One answer of the knowledge base and the phrasings it answers."""

    id: str
    topic: str
    title: str
    questions: tuple[str, ...]
    answer: str
    risk: str | None
    next_steps: tuple[str, ...]
    audience: tuple[str, ...]
    related: tuple[str, ...]
    sources: tuple[str, ...]
    reviewed: dt.date
    location: str


@dataclass(frozen=True)
class KnowledgeBase:
    """All topics and entries, validated and indexed by id."""

    topics: tuple[Topic, ...]
    entries: tuple[Entry, ...]

    def entry(self, entry_id: str) -> Entry | None:
        """The entry with this id, if any."""
        return self._by_id().get(entry_id)

    def topic(self, topic_id: str) -> Topic | None:
        """The topic with this id, if any."""
        return next((topic for topic in self.topics if topic.id == topic_id), None)

    def entries_of(self, topic_id: str) -> list[Entry]:
        """The entries of one topic, in file order."""
        return [entry for entry in self.entries if entry.topic == topic_id]

    def _by_id(self) -> dict[str, Entry]:
        cached = self.__dict__.get("_index")
        if cached is None:
            cached = {entry.id: entry for entry in self.entries}
            object.__setattr__(self, "_index", cached)
        return cached


def load_topics(path: Path = DEFAULT_TOPICS_FILE) -> tuple[Topic, ...]:
    """Read the topic list (the spec's ids plus any the base adds)."""
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    return tuple(Topic(t["id"], t["zh"], t.get("scope", "")) for t in document["topic"])


def _text_list(value: Any) -> list[str] | None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return [item.strip() for item in value]


def _parse_entry(node: yaml.MappingNode, raw: Any, where: str, problems: list[str]) -> Entry | None:
    """Validate one entry's shape; append problems and return None when it is unusable."""
    if not isinstance(raw, dict):
        problems.append(f"{where}: an entry must be a mapping")
        return None
    before = len(problems)
    for key in REQUIRED_KEYS:
        if key not in raw:
            problems.append(f"{where}: missing key '{key}'")
    for key in raw:
        if key not in REQUIRED_KEYS + OPTIONAL_KEYS:
            problems.append(f"{where}: unknown key '{key}'")
    if len(problems) > before:
        return None
    for key in ("id", "topic", "title", "answer"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            problems.append(f"{where}: '{key}' must be non-empty text")
    lists = {key: _text_list(raw.get(key, [])) for key in
             ("questions", "next_steps", "sources", "audience", "related")}
    for key, value in lists.items():
        if value is None:
            problems.append(f"{where}: '{key}' must be a list of text")
    risk = raw.get("risk")
    if risk is not None and not isinstance(risk, str):
        problems.append(f"{where}: 'risk' must be text")
    reviewed = raw["reviewed"]
    if isinstance(reviewed, str):
        try:
            reviewed = dt.date.fromisoformat(reviewed)
        except ValueError:
            reviewed = None
    if not isinstance(reviewed, dt.date):
        problems.append(f"{where}: 'reviewed' must be a date (YYYY-MM-DD)")
    if len(problems) > before:
        return None
    return Entry(
        id=raw["id"].strip(),
        topic=raw["topic"].strip(),
        title=raw["title"].strip(),
        questions=tuple(lists["questions"] or ()),
        answer=raw["answer"].strip(),
        risk=risk.strip() if isinstance(risk, str) else None,
        next_steps=tuple(lists["next_steps"] or ()),
        audience=tuple(lists["audience"] or ()),
        related=tuple(lists["related"] or ()),
        sources=tuple(lists["sources"] or ()),
        reviewed=reviewed,
        location=where,
    )


def _read_file(path: Path, problems: list[str]) -> list[Entry]:
    """Parse one data file, keeping each entry's line for error messages."""
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=_LOADER)
        data = yaml.load(text, Loader=_LOADER)  # _LOADER is a safe loader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problems.append(f"{path}:{line}: not valid YAML ({getattr(error, 'problem', error)})")
        return []
    if data is None:
        return []
    if not isinstance(root, yaml.SequenceNode) or not isinstance(data, list):
        problems.append(f"{path}:1: the file must be a list of entries")
        return []
    entries = []
    for node, raw in zip(root.value, data, strict=True):
        entry = _parse_entry(node, raw, f"{path}:{node.start_mark.line + 1}", problems)
        if entry is not None:
            entries.append(entry)
    return entries


def _normal(question: str) -> str:
    return "".join(ch for ch in question.lower() if ch.isalnum())


def check_entries(entries: list[Entry], topics: tuple[Topic, ...]) -> list[str]:
    """Cross-entry checks: ids, topics, links, duplicate questions, answer length."""
    problems: list[str] = []
    topic_ids = {topic.id for topic in topics}
    seen: dict[str, Entry] = {}
    for entry in entries:
        if entry.id in seen:
            problems.append(f"{entry.location}: duplicate id '{entry.id}' "
                            f"(first at {seen[entry.id].location})")
        seen.setdefault(entry.id, entry)
    asked: dict[str, Entry] = {}
    for entry in entries:
        if entry.topic not in topic_ids:
            problems.append(f"{entry.location}: unknown topic '{entry.topic}'")
        if len(entry.questions) < MIN_QUESTIONS:
            problems.append(f"{entry.location}: '{entry.id}' has {len(entry.questions)} "
                            f"questions, at least {MIN_QUESTIONS} are needed")
        low, high = ANSWER_CHARS
        if not low <= len(entry.answer) <= high:
            problems.append(f"{entry.location}: answer of '{entry.id}' is {len(entry.answer)} "
                            f"characters, expected {low}-{high}")
        for link in entry.related:
            if link not in seen:
                problems.append(f"{entry.location}: '{entry.id}' relates to unknown '{link}'")
        for tag in entry.audience:
            if tag not in AUDIENCES:
                problems.append(f"{entry.location}: unknown audience '{tag}'")
        if not entry.sources:
            problems.append(f"{entry.location}: '{entry.id}' names no source")
        for question in entry.questions:
            key = _normal(question)
            if not key:
                problems.append(f"{entry.location}: empty question in '{entry.id}'")
                continue
            other = asked.get(key)
            if other is not None and other.id != entry.id:
                problems.append(f"{entry.location}: question '{question}' of '{entry.id}' "
                                f"also belongs to '{other.id}' ({other.location})")
            elif other is not None:
                problems.append(f"{entry.location}: question '{question}' repeated "
                                f"in '{entry.id}'")
            asked[key] = entry
    return problems


def load_knowledge(
    data_dir: Path = DEFAULT_DATA_DIR, topics_file: Path = DEFAULT_TOPICS_FILE
) -> KnowledgeBase:
    """Load and fully check the base; raise `KnowledgeError` listing every problem."""
    problems: list[str] = []
    topics = load_topics(topics_file)
    files = sorted(data_dir.glob("*.yaml"))
    if not files:
        raise KnowledgeError([f"{data_dir}: no *.yaml knowledge files"])
    entries: list[Entry] = []
    for path in files:
        entries.extend(_read_file(path, problems))
    problems.extend(check_entries(entries, topics))
    if problems:
        raise KnowledgeError(problems)
    return KnowledgeBase(topics=topics, entries=tuple(entries))


def coverage(base: KnowledgeBase) -> dict[str, int]:
    """Entries per topic, for `kb check`'s summary."""
    counts: dict[str, int] = defaultdict(int)
    for entry in base.entries:
        counts[entry.topic] += 1
    return {topic.id: counts.get(topic.id, 0) for topic in base.topics}
