"""The channel-agnostic shapes of what comes in and what goes out of the engine.

Every channel (web, terminal, Telegram, WeChat) translates its own wire format into an
`Incoming` and renders `Reply` objects back; nothing else crosses the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Button:
    """A choice offered to the user; pressing it sends `action` back to the engine."""

    label: str
    action: str

    def to_dict(self) -> dict[str, str]:
        """The JSON form used by `/api/chat`."""
        return {"label": self.label, "action": self.action}


@dataclass(frozen=True)
class Reply:
    """One message to the user, with optional buttons."""

    text: str
    buttons: tuple[Button, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used by `/api/chat`."""
        return {"text": self.text, "buttons": [button.to_dict() for button in self.buttons]}


@dataclass(frozen=True)
class Incoming:
    """A user's message or button press on some channel."""

    channel: str
    user_id: str
    text: str | None = None
    action: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
