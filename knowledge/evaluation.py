"""Measuring the matcher honestly on a labelled file it was not tuned on.

Each line of the file is `{"text": ..., "topic": id-or-null}`; null marks a message the
bot must decline.  The report gives top-1 and top-3 topic accuracy, how many in-scope
questions were declined, how many out-of-scope messages were declined, and confusions.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowledge.matcher import Matcher


@dataclass(frozen=True)
class EvalItem:
    """One labelled message."""

    text: str
    topic: str | None


@dataclass
class EvalReport:
    """Counts behind the evaluation figures."""

    in_scope: int = 0
    top1: int = 0
    top3: int = 0
    answered_correct: int = 0
    answered_wrong: int = 0
    in_scope_declined: int = 0
    out_of_scope: int = 0
    out_of_scope_declined: int = 0
    confusions: Counter[tuple[str, str]] = field(default_factory=Counter)
    wrongly_answered_out_of_scope: list[str] = field(default_factory=list)

    def ratio(self, part: int, whole: int) -> float:
        """A share, 0 when there is nothing to divide."""
        return part / whole if whole else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready numbers."""
        return {
            "in_scope": self.in_scope,
            "out_of_scope": self.out_of_scope,
            "top1_topic_accuracy": round(self.ratio(self.top1, self.in_scope), 4),
            "top3_topic_accuracy": round(self.ratio(self.top3, self.in_scope), 4),
            "answered_precision": round(
                self.ratio(self.answered_correct, self.answered_correct + self.answered_wrong), 4
            ),
            "in_scope_declined": round(self.ratio(self.in_scope_declined, self.in_scope), 4),
            "out_of_scope_declined": round(
                self.ratio(self.out_of_scope_declined, self.out_of_scope), 4
            ),
            "confusions": [
                {"expected": e, "got": g, "count": n} for (e, g), n in self.confusions.most_common()
            ],
        }


def read_eval_file(path: Path) -> list[EvalItem]:
    """Read a JSONL evaluation file; raise ValueError naming the bad line."""
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            text, topic = record["text"], record.get("topic")
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path}:{number}: expected an object with text and topic") from None
        if not isinstance(text, str) or (topic is not None and not isinstance(topic, str)):
            raise ValueError(f"{path}:{number}: text must be a string, topic a string or null")
        items.append(EvalItem(text, topic))
    if not items:
        raise ValueError(f"{path}: no evaluation items")
    return items


def evaluate(matcher: Matcher, items: list[EvalItem]) -> EvalReport:
    """Run every item through the matcher exactly as the bot would."""
    report = EvalReport()
    for item in items:
        result = matcher.match(item.text)
        topics = [c.entry.topic for c in result.candidates]
        if item.topic is None:
            report.out_of_scope += 1
            if not result.answered:
                report.out_of_scope_declined += 1
            else:
                report.wrongly_answered_out_of_scope.append(item.text)
            continue
        report.in_scope += 1
        if topics and topics[0] == item.topic:
            report.top1 += 1
        elif topics:
            report.confusions[(item.topic, topics[0])] += 1
        if item.topic in topics[:3]:
            report.top3 += 1
        if not result.answered:
            report.in_scope_declined += 1
        elif topics[0] == item.topic:
            report.answered_correct += 1
        else:
            report.answered_wrong += 1
    return report


def render_report(report: EvalReport) -> str:
    """The report as a short table for a terminal."""
    figures = report.as_dict()
    lines = [
        f"in-scope questions       {report.in_scope}",
        f"out-of-scope messages    {report.out_of_scope}",
        f"top-1 topic accuracy     {figures['top1_topic_accuracy']:.1%}",
        f"top-3 topic accuracy     {figures['top3_topic_accuracy']:.1%}",
        f"precision when answering {figures['answered_precision']:.1%}",
        f"in-scope declined        {figures['in_scope_declined']:.1%}",
        f"out-of-scope declined    {figures['out_of_scope_declined']:.1%}",
    ]
    if report.confusions:
        lines.append("confusions (expected -> got):")
        lines += [f"  {n:>3}  {e} -> {g}" for (e, g), n in report.confusions.most_common(15)]
    if report.wrongly_answered_out_of_scope:
        lines.append("out-of-scope messages answered anyway:")
        lines += [f"  {t[:60]}" for t in report.wrongly_answered_out_of_scope[:10]]
    return "\n".join(lines)
