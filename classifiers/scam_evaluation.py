"""Measuring the scam checker on a labelled file it was never trained or tuned on.

Recall counts a scam as caught when the verdict is `scam` or `suspicious`; the
false-positive rate is the share of legitimate messages given either verdict.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from classifiers.scam import LabelledMessage, ScamChecker


@dataclass
class ScamReport:
    """Counts behind the scam-checker figures."""

    scams: int = 0
    caught: int = 0
    legitimate: int = 0
    flagged_legitimate: int = 0
    typed: int = 0
    type_right: int = 0
    table: Counter[tuple[str, str]] = field(default_factory=Counter)
    type_confusions: Counter[tuple[str, str]] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready numbers."""
        return {
            "scams": self.scams,
            "legitimate": self.legitimate,
            "recall": round(self.caught / self.scams, 4) if self.scams else 0.0,
            "false_positive_rate": (
                round(self.flagged_legitimate / self.legitimate, 4) if self.legitimate else 0.0
            ),
            "type_accuracy": round(self.type_right / self.typed, 4) if self.typed else 0.0,
            "confusion": [{"label": label, "verdict": verdict, "count": n}
                          for (label, verdict), n in sorted(self.table.items())],
            "type_confusions": [{"expected": e, "got": g, "count": n}
                                for (e, g), n in self.type_confusions.most_common()],
        }


def evaluate(checker: ScamChecker, messages: list[LabelledMessage]) -> ScamReport:
    """Run every message through the checker as a consumer would."""
    report = ScamReport()
    for message in messages:
        verdict = checker.check(message.text)
        report.table[(message.label, verdict.verdict)] += 1
        flagged = verdict.verdict != "safe"
        if message.label == "safe":
            report.legitimate += 1
            report.flagged_legitimate += flagged
            continue
        report.scams += 1
        report.caught += flagged
        if flagged and message.scam_type:
            report.typed += 1
            if verdict.scam_type == message.scam_type:
                report.type_right += 1
            else:
                report.type_confusions[(message.scam_type, verdict.scam_type or "-")] += 1
    return report


def render_report(report: ScamReport) -> str:
    """The report as a short table for a terminal."""
    figures = report.as_dict()
    lines = [
        f"scam messages            {report.scams}",
        f"legitimate messages      {report.legitimate}",
        f"recall (scam+suspicious) {figures['recall']:.1%}",
        f"false-positive rate      {figures['false_positive_rate']:.1%}",
        f"type right (when caught) {figures['type_accuracy']:.1%}",
        "",
        f"{'label':<8}{'scam':>8}{'suspicious':>12}{'safe':>8}",
    ]
    for label in ("scam", "safe"):
        counts = [report.table[(label, v)] for v in ("scam", "suspicious", "safe")]
        lines.append(f"{label:<8}{counts[0]:>8}{counts[1]:>12}{counts[2]:>8}")
    if report.type_confusions:
        lines.append("type confusions (expected -> got):")
        lines += [f"  {n:>3}  {e} -> {g}" for (e, g), n in report.type_confusions.most_common(10)]
    return "\n".join(lines)
