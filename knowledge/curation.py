"""What curators should add next: the questions the bot could not answer.

The engine logs every declined question (personal numbers masked, no user id); this
groups them by their normalised text so the most frequent gaps come first.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.models import UnansweredQuestion


async def most_unanswered(session: AsyncSession, limit: int = 30) -> list[dict[str, Any]]:
    """The most frequent unanswered questions, with an example text and best candidate."""
    count = func.count(UnansweredQuestion.id).label("count")
    latest = func.max(UnansweredQuestion.id).label("latest")
    groups = (
        await session.execute(
            select(UnansweredQuestion.normalized, count, latest)
            .group_by(UnansweredQuestion.normalized)
            .order_by(count.desc(), latest.desc())
            .limit(limit)
        )
    ).all()
    rows = []
    for normalized, total, latest_id in groups:
        example = await session.get(UnansweredQuestion, latest_id)
        best = example.candidates[0]["entry_id"] if example and example.candidates else None
        rows.append({"text": example.text if example else normalized, "count": int(total),
                     "best": best, "normalized": normalized})
    return rows
