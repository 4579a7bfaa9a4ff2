"""The instruction-count benchmark reads callgrind's dumps by their labels, and only those."""

from __future__ import annotations

from pathlib import Path

from benchmarks.instructions import read_dumps, report


def dump(path: Path, label: str | None, summary: int) -> Path:
    trigger = f"desc: Trigger: dump {label}" if label else "desc: Trigger: Program termination"
    path.write_text(f"version: 1\ncreator: callgrind-3.19.0\ncmd: python\npart: 1\n{trigger}\n"
                    f"events: Ir\nsummary: {summary}\ntotals: {summary + 999}\n")
    return path


def test_each_labelled_dump_gives_instructions_per_message(tmp_path):
    files = [dump(tmp_path / "out.1", "question:60", 102_000_000),
             dump(tmp_path / "out.2", "scam check:120", 168_000_000),
             dump(tmp_path / "out.3", None, 5_000_000_000)]  # at exit: not a measurement
    assert read_dumps(files) == {"question": 1_700_000.0, "scam check": 1_400_000.0}


def test_a_dump_without_a_message_count_is_ignored(tmp_path):
    assert read_dumps([dump(tmp_path / "out.1", "warm-up", 10),
                       dump(tmp_path / "out.2", "question:0", 10)]) == {}


def test_the_report_gives_the_ratio_to_the_echo_robot():
    text = report({"engine_turns": {"question": 1_713_000.0},
                   "over_http": {"xiaobao_chat_question": 2_300_000.0,
                                 "xiaobao_wechat_question": 2_783_000.0,
                                 "werobot_wechat_question": 1_152_000.0}})
    assert "| engine turn: question | 1.713 M |" in text
    assert "| question on /api/chat, over HTTP: xiaobao serve | 2.300 M |" in text
    assert "instructions per WeChat question: 2.42x" in text
