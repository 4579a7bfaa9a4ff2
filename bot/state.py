"""Per-user dialogue state, kept in the database behind a two-function interface.

A restart, or a second worker answering the next message, must continue the same
conversation; so the engine loads the state at the start of every message and saves it in
the same transaction as whatever the message changed.  Callers own the transaction.

Every message costs these two statements, so they are prebuilt statements (one SELECT,
one INSERT ... ON CONFLICT DO UPDATE) run by `bot.transactions`, rather than ORM loads
and flushes: the ORM's machinery cost more than the database itself here.  On
PostgreSQL the SELECT locks the row (FOR UPDATE), so two messages of one user handled by
two workers at once run one after the other instead of one overwriting the other's state;
SQLite's write lock (BEGIN IMMEDIATE, `bot.db`) already serialises them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select, text

from bot.models import Conversation, utcnow
from bot.transactions import Transaction

# Built once with bound parameters, so SQLAlchemy's compiled cache serves every message.
# The upsert is textual because SQLAlchemy does not cache its ON CONFLICT constructs (each
# call would be compiled anew, which costs more than running it); this one statement is
# valid on both SQLite (3.24+) and PostgreSQL.
_LOAD = (
    select(Conversation.state)
    .where(Conversation.channel == bindparam("channel"),
           Conversation.user_id == bindparam("user_id"))
    .with_for_update()
)
_SAVE = text(
    "INSERT INTO conversations (channel, user_id, state, version, updated_at)"
    " VALUES (:channel, :user_id, :state, 1, :now)"
    " ON CONFLICT (channel, user_id) DO UPDATE SET state = excluded.state,"
    " updated_at = excluded.updated_at, version = conversations.version + 1"
).bindparams(
    bindparam("state", type_=Conversation.__table__.c.state.type),
    bindparam("now", type_=Conversation.__table__.c.updated_at.type),
)


async def load_state(tx: Transaction, channel: str, user_id: str) -> dict[str, Any]:
    """The saved state of one user on one channel, or an empty state for a new user."""
    row = await tx.first(_LOAD, {"channel": channel, "user_id": user_id})
    return dict(row[0]) if row is not None and row[0] is not None else {}


async def save_state(tx: Transaction, channel: str, user_id: str, state: dict[str, Any]) -> None:
    """Store the state; the caller's transaction makes it durable."""
    await tx.run(_SAVE, {"channel": channel, "user_id": user_id, "state": state, "now": utcnow()})
