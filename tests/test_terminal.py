"""The terminal channel: numbered buttons, the same engine, end of input."""

from __future__ import annotations

from bot.messages import Button, Reply
from handlers.terminal import render, run_chat, to_incoming


def test_buttons_are_numbered_across_replies():
    text, buttons = render([Reply("a", (Button("一", "x"),)), Reply("b", (Button("二", "y"),))])
    assert "[1] 一" in text and "[2] 二" in text
    assert [b.action for b in buttons] == ["x", "y"]


def test_a_shown_number_presses_the_button_other_text_is_text():
    buttons = [Button("一", "x")]
    assert to_incoming("1", buttons, "u").action == "x"
    assert to_incoming("2", buttons, "u").text == "2"
    assert to_incoming("安全账户", buttons, "u").text == "安全账户"


async def test_a_conversation_through_the_terminal(services):
    typed = iter(["1", "银行卡被盗刷了怎么办", "q"])
    shown: list[str] = []
    await run_chat(services.chat, "t1", read=lambda _prompt: next(typed), write=shown.append)
    transcript = "\n".join(shown)
    assert "您好" in transcript
    assert "请选择您想了解的方面" in transcript  # button 1 is the topic menu
    assert "【" in transcript


async def test_end_of_input_ends_the_chat(services):
    def closed(_prompt):
        raise EOFError

    shown: list[str] = []
    await run_chat(services.chat, "t2", read=closed, write=shown.append)
    assert shown
