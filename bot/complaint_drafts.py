"""Complaint drafts, kept in the user's conversation state.

A draft is read and rewritten on every message of the complaint dialogue (about a fifth of
all messages), so it lives in the state that every turn loads and saves anyway
(`bot.state`): a dialogue step then costs the same two statements as a question, where a
row of its own cost four more round trips on PostgreSQL (benchmarks/README.md,
"Runs of 21:33–22:46").  It is stored only if the turn's state is, so a turn that
fails half-way leaves the stored draft as it was, and a crash or a restart at any step
resumes the same draft, on any worker.

A draft holds personal data that nobody has filed yet, so it does not outlive
`complaints.draft_expiry_days`: an expired draft is dropped at the user's next message
(`drop_expired`, called on every turn), and `purge_expired` deletes the drafts of users
who went quiet.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.models import Conversation, as_utc, utcnow

DRAFT_KEY = "draft"  # the draft's place in the conversation state


@dataclass(eq=False)
class Draft:
    """One user's complaint in progress, as held in their state (`state[DRAFT_KEY]`)."""

    state: dict[str, Any]
    draft_key: str  # makes confirmation idempotent: one complaint per draft
    data: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    def update(self, data: dict[str, Any]) -> None:
        """Replace the form data (and mark the draft touched now)."""
        self.data = dict(data)
        self.updated_at = utcnow()
        self.state[DRAFT_KEY] = {"key": self.draft_key, "data": self.data,
                                 "created_at": _stamp(self.created_at),
                                 "updated_at": _stamp(self.updated_at)}

    def discard(self) -> None:
        """Delete the draft with the turn's state (cancelled, refused or filed)."""
        if self.state.get(DRAFT_KEY, {}).get("key") == self.draft_key:
            self.state.pop(DRAFT_KEY)


def _stamp(moment: datetime) -> str:
    """Fixed-width UTC text, so that stamps compare as text (`purge_expired`)."""
    return as_utc(moment).astimezone(UTC).isoformat(timespec="microseconds")


def load_draft(state: dict[str, Any]) -> Draft | None:
    """The user's draft in this state, or None."""
    held = state.get(DRAFT_KEY)
    if not isinstance(held, dict):
        return None
    return Draft(state, str(held["key"]), dict(held["data"]),
                 as_utc(datetime.fromisoformat(held["created_at"])),
                 as_utc(datetime.fromisoformat(held["updated_at"])))


def new_draft(state: dict[str, Any]) -> Draft:
    """A fresh, empty draft with its own key, replacing any draft in the state."""
    now = utcnow()
    draft = Draft(state, secrets.token_hex(8), {}, now, now)
    draft.update({"values": {}, "order": []})
    return draft


def is_expired(draft: Draft, expiry_days: int, now: datetime | None = None) -> bool:
    """True for a draft nobody touched for `expiry_days`."""
    return draft.updated_at < (now or utcnow()) - timedelta(days=expiry_days)


def drop_expired(state: dict[str, Any], expiry_days: int) -> None:
    """Forget an expired draft, even in a turn that has nothing to do with complaints."""
    draft = load_draft(state)
    if draft is not None and is_expired(draft, expiry_days):
        draft.discard()


async def purge_expired(session: AsyncSession, expiry_days: int,
                        now: datetime | None = None) -> int:
    """Delete the expired drafts of users who have not written since; how many.

    The version moves on, so a turn that read the state before the purge runs again
    instead of writing the draft back.
    """
    cutoff = _stamp((now or utcnow()) - timedelta(days=expiry_days))
    rows = await session.scalars(
        select(Conversation)
        .where(Conversation.state[(DRAFT_KEY, "updated_at")].as_string() < cutoff)
        .with_for_update())
    purged = 0
    for conversation in rows:
        state = dict(conversation.state)
        if state.pop(DRAFT_KEY, None) is not None:
            conversation.state = state
            conversation.version += 1
            purged += 1
    return purged
