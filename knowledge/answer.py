"""The `xiaobao ask` result object, shared by the command line and tests.

Its fields are a public contract (`interfaces.md`): `topic` is null exactly when the bot
would decline and show its fallback instead of an answer.
"""

from __future__ import annotations

from typing import Any

from knowledge.matcher import Matcher


def ask_result(matcher: Matcher, text: str) -> dict[str, Any]:
    """Match one question and describe the outcome as the `ask` JSON object."""
    result = matcher.match(text)
    entry = result.entry
    return {
        "query": text,
        "topic": entry.topic if entry else None,
        "entry_id": entry.id if entry else None,
        "title": entry.title if entry else None,
        "score": round(result.confidence, 4),
        "answer": entry.answer if entry else None,
        "suggestions": [
            {
                "entry_id": c.entry.id,
                "topic": c.entry.topic,
                "title": c.entry.title,
                "score": round(c.similarity, 4),
            }
            for c in result.candidates
        ],
    }


def render_ask(result: dict[str, Any]) -> str:
    """The `ask` object as readable text for a person at a terminal."""
    if result["topic"] is None:
        lines = [f"(declined, confidence {result['score']:.2f})"]
        lines += [f"  maybe: {s['title']} [{s['entry_id']}, {s['score']:.2f}]"
                  for s in result["suggestions"]]
        return "\n".join(lines)
    return (f"[{result['topic']} / {result['entry_id']}, confidence {result['score']:.2f}]\n"
            f"{result['title']}\n\n{result['answer']}")
