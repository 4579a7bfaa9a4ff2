"""Per-user dialogue state, kept in the database behind a two-function interface.

A restart, or a second worker answering the next message, must continue the same
conversation; so the engine loads the state at the start of every message and saves it in
the same transaction as whatever the message changed.  Callers own the transaction.

Every message costs two statements, so they are prebuilt statements run by
`bot.transactions`, rather than ORM loads and flushes: the ORM's machinery cost more than
the database itself here.  There are two ways to run a turn:

- optimistically (`read_state`, `save_state_if_unchanged`): the state is read without a
  lock and written back only if its version is still the one read.  On PostgreSQL a
  question turn is then two round trips, each statement on its own, instead of four
  (BEGIN, SELECT ... FOR UPDATE, the write, COMMIT).  A turn that finds the version
  changed (the same user's other message, answered meanwhile by another worker) has
  written nothing that stays: the engine runs it again the locked way.
- locked (`load_state`, `save_state`): on PostgreSQL the SELECT locks the row (FOR
  UPDATE), so two messages of one user handled by two workers at once run one after the
  other instead of one overwriting the other's state.

On SQLite both ways are the same: the write lock (BEGIN IMMEDIATE, `bot.db`) already
serialises the turns, so a version never changes under one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import TextClause, bindparam, select, text

from bot.models import Conversation, utcnow
from bot.transactions import Transaction


# Built once with bound parameters, so SQLAlchemy's compiled cache serves every message.
# The writes are textual because SQLAlchemy does not cache its ON CONFLICT constructs (each
# call would be compiled anew, which costs more than running it); each statement is valid
# on both SQLite (3.24+) and PostgreSQL.
def _where_user(columns: list[Any]) -> Any:
    return select(*columns).where(Conversation.channel == bindparam("channel"),
                                  Conversation.user_id == bindparam("user_id"))


def _state_write(sql: str) -> TextClause:
    """A textual write whose :state and :now are converted as the ORM converts them."""
    return text(sql).bindparams(
        bindparam("state", type_=Conversation.__table__.c.state.type),
        bindparam("now", type_=Conversation.__table__.c.updated_at.type),
    )


_INSERT = ("INSERT INTO conversations (channel, user_id, state, version, updated_at)"
           " VALUES (:channel, :user_id, :state, 1, :now)")
_LOAD = _where_user([Conversation.state]).with_for_update()
_SAVE = _state_write(
    _INSERT + " ON CONFLICT (channel, user_id) DO UPDATE SET state = excluded.state,"
    " updated_at = excluded.updated_at, version = conversations.version + 1")
_PEEK = _where_user([Conversation.state, Conversation.version])
_UPDATE_IF_UNCHANGED = _state_write(
    "UPDATE conversations SET state = :state, updated_at = :now, version = version + 1"
    " WHERE channel = :channel AND user_id = :user_id AND version = :version")
_CREATE_IF_ABSENT = _state_write(_INSERT + " ON CONFLICT (channel, user_id) DO NOTHING")


async def read_state(tx: Transaction, channel: str,
                     user_id: str) -> tuple[dict[str, Any], int | None]:
    """The user's state and its version (None for a new user), read without a lock."""
    row = await tx.read_first(_PEEK, {"channel": channel, "user_id": user_id})
    if row is None:
        return {}, None
    return (dict(row[0]) if row[0] is not None else {}), int(row[1])


async def save_state_if_unchanged(tx: Transaction, channel: str, user_id: str,
                                  state: dict[str, Any], version: int | None) -> bool:
    """Store the state unless it changed since `read_state` gave `version`; False if it did.

    This is the turn's last statement (`Transaction.run_last`): on PostgreSQL a turn that
    wrote nothing else commits with it, in one round trip.
    """
    values = {"channel": channel, "user_id": user_id, "state": state, "now": utcnow()}
    if version is None:
        return await tx.run_last(_CREATE_IF_ABSENT, values) == 1
    return await tx.run_last(_UPDATE_IF_UNCHANGED, {**values, "version": version}) == 1


async def load_state(tx: Transaction, channel: str, user_id: str) -> dict[str, Any]:
    """The saved state of one user on one channel, or an empty state for a new user."""
    row = await tx.first(_LOAD, {"channel": channel, "user_id": user_id})
    return dict(row[0]) if row is not None and row[0] is not None else {}


async def save_state(tx: Transaction, channel: str, user_id: str, state: dict[str, Any]) -> None:
    """Store the state; the caller's transaction makes it durable."""
    await tx.run(_SAVE, {"channel": channel, "user_id": user_id, "state": state, "now": utcnow()})
