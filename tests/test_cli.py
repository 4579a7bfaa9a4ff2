"""The `xiaobao` command line as outside tools call it: real processes, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ASK_FIELDS = {"query", "topic", "entry_id", "title", "score", "answer", "suggestions"}


def xiaobao(*args: str, stdin: str | None = None, env: dict | None = None, cwd: Path = REPO):
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        input=stdin.encode() if stdin is not None else None,
        capture_output=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_ask_json_follows_the_contract():
    done = xiaobao("ask", "--json", "银行卡被盗刷了怎么办")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == ASK_FIELDS
    assert result["topic"] == "card-fraud"
    assert result["answer"] and result["entry_id"] and result["title"]
    for suggestion in result["suggestions"]:
        assert set(suggestion) == {"entry_id", "topic", "title", "score"}


def test_ask_jsonl_keeps_order_and_declines_with_nulls():
    lines = ["安全账户", "明天天气怎么样", "", "😀", "退保黑产", "长" * 10000]
    done = xiaobao("ask", "--jsonl", stdin="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [r["query"][:5] for r in results] == [line[:5] for line in lines]
    assert results[0]["topic"] == "telecom-fraud"
    assert results[1]["topic"] is None and results[1]["answer"] is None
    assert results[2]["topic"] is None
    assert results[3]["topic"] is None
    assert results[4]["topic"] == "agent-surrender"


def test_binary_looking_stdin_does_not_crash():
    done = xiaobao("ask", "--jsonl", stdin="\x00\x01\x02\n\ufffd\ufffd\n")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.decode().splitlines()) == 2


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("ask",), {}),
        (("ask", "   "), {}),
        (("no-such-command",), {}),
        (("ask", "--json", "--jsonl", "x"), {}),
        (("ask", "安全账户"), {"XIAOBAO_HTTP_PORT": "eighty"}),
        (("kb", "eval", "/nonexistent/file.jsonl"), {}),
    ],
)
def test_bad_usage_exits_2_with_one_line_and_no_traceback(args, env):
    done = xiaobao(*args, env=env)
    assert done.returncode == 2
    err = done.stderr.decode().strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err


def test_db_upgrade_creates_the_sqlite_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'var' / 'x.db'}"
    done = xiaobao("db", "upgrade", env={"XIAOBAO_DATABASE_URL": url})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "var" / "x.db").exists()


def test_config_file_option_and_unknown_key(tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text("[http]\nprot = 1\n", encoding="utf-8")
    done = xiaobao("--config", str(bad), "db", "upgrade")
    assert done.returncode == 2
    assert "http.prot" in done.stderr.decode()



def test_what_start_up_built_is_kept_out_of_full_collections():
    import gc
    import weakref

    from bot.cli import freeze_long_lived

    class Node:
        pass

    long_lived = [[n] for n in range(20_000)]  # as the index's containers, alive for good
    garbage = Node()
    garbage.self = garbage  # type: ignore[attr-defined]  # a cycle left over from start-up
    gone = weakref.ref(garbage)
    del garbage
    try:
        freeze_long_lived()
        assert gc.get_freeze_count() >= len(long_lived)
        assert not any(obj is long_lived for obj in gc.get_objects(generation=2))
        assert gone() is None  # collected first, not frozen
    finally:
        gc.unfreeze()
