"""`xiaobao serve --workers N`: the supervisor forwards SIGHUP, restarts a dead worker and
stops them all; SQLite refuses more than one worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bot.cli import main

FAKE_WORKER = """
import os, signal, sys, time
out, number = sys.argv[1], sys.argv[-1]
def note(what):
    with open(out, "a") as log:
        log.write(f"{what} {number} {os.getpid()}\\n")
signal.signal(signal.SIGHUP, lambda *_: note("hup"))
signal.signal(signal.SIGTERM, lambda *_: (note("term"), sys.exit(0)))
note("start")
while True:
    time.sleep(0.05)
"""


def _wait(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _lines(path: Path, what: str) -> list[tuple[str, int]]:
    text = path.read_text() if path.exists() else ""
    return [(number, int(pid)) for kind, number, pid in
            (line.split() for line in text.splitlines()) if kind == what]


def test_more_than_one_worker_on_sqlite_is_refused_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("XIAOBAO_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    assert main(["serve", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "PostgreSQL" in err and "single writer" in err
    assert not (tmp_path / "x.db").exists()  # refused before touching anything


def test_zero_workers_is_a_usage_error(capsys):
    assert main(["serve", "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_the_supervisor_forwards_sighup_restarts_the_dead_and_stops_all(tmp_path):
    script, out, pid_file = tmp_path / "worker.py", tmp_path / "events", tmp_path / "x.pid"
    script.write_text(FAKE_WORKER)
    supervisor = subprocess.Popen([
        sys.executable, "-c",
        "import sys; from pathlib import Path; from bot.workers import supervise; "
        f"sys.exit(supervise([sys.executable, {str(script)!r}, {str(out)!r}], 2, "
        f"Path({str(pid_file)!r}), dict(__import__('os').environ)))"])
    try:
        _wait(lambda: len(_lines(out, "start")) == 2)
        assert pid_file.read_text() == str(supervisor.pid)
        assert sorted(number for number, _ in _lines(out, "start")) == ["1", "2"]

        os.kill(supervisor.pid, signal.SIGHUP)  # what `xiaobao kb reload` sends
        _wait(lambda: len(_lines(out, "hup")) == 2)

        [(_, victim)] = [entry for entry in _lines(out, "start") if entry[0] == "1"]
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: len(_lines(out, "start")) == 3)
        assert _lines(out, "start")[-1][0] == "1"

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(10) == 0
        assert len(_lines(out, "term")) == 2
        assert not pid_file.exists()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
