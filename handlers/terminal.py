"""Terminal channel: `xiaobao chat`, the same engine in a console.

Buttons are shown as numbered choices; typing the number presses the button.  Useful for
staff training, demos and trying out knowledge-base edits without a browser.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bot.engine import Engine
from bot.messages import Button, Incoming, Reply

CHANNEL = "terminal"
QUIT_WORDS = frozenset({"q", "quit", "exit", "退出程序"})


def render(replies: list[Reply]) -> tuple[str, list[Button]]:
    """Replies as console text, with every button numbered across the replies."""
    lines: list[str] = []
    buttons: list[Button] = []
    for reply in replies:
        lines.append(reply.text)
        for button in reply.buttons:
            buttons.append(button)
            lines.append(f"  [{len(buttons)}] {button.label}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n", buttons


def to_incoming(line: str, buttons: list[Button], user_id: str) -> Incoming:
    """A typed line as a button press (when it is a shown number) or as text."""
    choice = line.strip()
    if choice.isdigit() and 1 <= int(choice) <= len(buttons):
        return Incoming(channel=CHANNEL, user_id=user_id, action=buttons[int(choice) - 1].action)
    return Incoming(channel=CHANNEL, user_id=user_id, text=line)


async def run_chat(
    engine: Engine,
    user_id: str,
    read: Callable[[str], str] = input,
    write: Callable[[str], object] = print,
) -> None:
    """Converse until end of input or a quit word."""
    text, buttons = render(await engine.handle(Incoming(CHANNEL, user_id, action="start")))
    write(text)
    write("（输入数字选择按钮，输入 q 退出）")
    while True:
        try:
            line = await asyncio.to_thread(read, "您> ")
        except (EOFError, KeyboardInterrupt):
            write("")
            return
        if line.strip().lower() in QUIT_WORDS:
            return
        if not line.strip():
            continue
        text, buttons = render(await engine.handle(to_incoming(line, buttons, user_id)))
        write(text)
