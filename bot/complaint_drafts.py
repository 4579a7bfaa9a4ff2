"""Complaint drafts in the database: loaded, changed and written back within one turn.

A draft is read and rewritten on every message of the complaint dialogue (about a fifth of
all messages), so it is a plain value with prebuilt statements (`bot.transactions`), not
an ORM object.  The dialogue changes it with `update` and `discard`; what changed is
written when the turn's transaction commits, the way the ORM's unit of work would, so a
turn that fails half-way leaves the stored draft as it was.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, text

from bot.models import ComplaintDraft, utcnow
from bot.transactions import Transaction

_TABLE = ComplaintDraft.__table__
_LOAD = select(ComplaintDraft.draft_key, ComplaintDraft.data, ComplaintDraft.created_at,
               ComplaintDraft.updated_at).where(
    ComplaintDraft.channel == bindparam("channel"),
    ComplaintDraft.user_id == bindparam("user_id"))
# Textual for the same reason as bot.state's upsert: valid on SQLite and PostgreSQL, and
# cached (SQLAlchemy compiles its ON CONFLICT constructs anew on every call).
_SAVE = text(
    "INSERT INTO complaint_drafts (channel, user_id, draft_key, data, created_at, updated_at)"
    " VALUES (:channel, :user_id, :draft_key, :data, :created_at, :updated_at)"
    " ON CONFLICT (channel, user_id) DO UPDATE SET draft_key = excluded.draft_key,"
    " data = excluded.data, updated_at = excluded.updated_at"
).bindparams(
    bindparam("data", type_=_TABLE.c.data.type),
    bindparam("created_at", type_=_TABLE.c.created_at.type),
    bindparam("updated_at", type_=_TABLE.c.updated_at.type),
)
_DELETE = delete(ComplaintDraft).where(ComplaintDraft.channel == bindparam("channel"),
                                       ComplaintDraft.user_id == bindparam("user_id"))


@dataclass(eq=False)
class Draft:
    """One user's complaint in progress on one channel."""

    channel: str
    user_id: str
    draft_key: str
    data: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    stored: bool = False
    changed: bool = False
    discarded: bool = False

    def update(self, data: dict[str, Any]) -> None:
        """Replace the form data (and mark the draft touched now)."""
        self.data = dict(data)
        self.updated_at = utcnow()
        self.changed = True

    def discard(self) -> None:
        """Delete the draft when the turn commits (cancelled, refused or filed)."""
        self.discarded = True


async def load_draft(tx: Transaction, channel: str, user_id: str) -> Draft | None:
    """The user's draft (the same object again within one turn), or None."""
    key = ("draft", channel, user_id)
    if key in tx.cache:
        draft = tx.cache[key]
        return None if draft is None or draft.discarded else draft
    row = await tx.first(_LOAD, {"channel": channel, "user_id": user_id})
    draft = None
    if row is not None:
        draft = Draft(channel, user_id, row[0], dict(row[1] or {}), row[2], row[3], stored=True)
        tx.before_commit(lambda: _write(tx, draft))
    tx.cache[key] = draft
    return draft


def new_draft(tx: Transaction, channel: str, user_id: str) -> Draft:
    """A fresh, empty draft with its own key (the key makes confirmation idempotent)."""
    now = utcnow()
    draft = Draft(channel, user_id, secrets.token_hex(8), {"values": {}, "order": []},
                  now, now, changed=True)
    tx.cache[("draft", channel, user_id)] = draft
    tx.before_commit(lambda: _write(tx, draft))
    return draft


async def _write(tx: Transaction, draft: Draft) -> None:
    if draft.discarded:
        if draft.stored:
            await tx.run(_DELETE, {"channel": draft.channel, "user_id": draft.user_id})
        return
    if draft.changed:
        await tx.run(_SAVE, {
            "channel": draft.channel, "user_id": draft.user_id, "draft_key": draft.draft_key,
            "data": draft.data, "created_at": draft.created_at,
            "updated_at": draft.updated_at})
