"""The log guard (`tests/log_guard.py`): its scanner, and a whole pytest session it fails."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from tests.log_guard import LogGuard, find_personal_numbers, is_own, looks_personal, mask

PROJECT = Path(__file__).resolve().parent.parent


def record(name: str, level: int, message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, args, None)


def test_the_scanner_finds_whole_mobile_and_id_numbers():
    assert find_personal_numbers("电话13812345678，请回电") == [("mobile number", "138******78")]
    assert find_personal_numbers("id=11010519491231002X") == [("ID number", "110*************2X")]
    assert find_personal_numbers("身份证 110105194912310021") == [
        ("ID number", "110*************21")]


def test_the_scanner_ignores_masked_numbers_and_longer_runs_of_digits():
    assert find_personal_numbers("电话 138****5678，证件 110105********0021") == []
    assert find_personal_numbers("MsgId 6900000000000001380 at 1732000000000 ms") == []
    assert find_personal_numbers("12812345678 is no mobile number") == []


def test_generated_test_data_can_be_kept_from_looking_personal():
    assert looks_personal("page=13012345630") and looks_personal("13012345630")
    assert not looks_personal("page=2147483647") and not looks_personal("-9999999999999")


def test_digits_inside_a_hex_signature_are_not_a_phone_number():
    signed = "POST /wechat?msg_signature=9f3a17612345666be2c0&timestamp=1764300000 HTTP/1.1"
    assert find_personal_numbers(signed) == []
    assert find_personal_numbers("mobile=17612345666&x=1") == [("mobile number", "176******66")]


def test_own_loggers_count_at_every_level_and_others_from_info():
    guard = LogGuard()
    guard.scan(record("bot.engine", logging.DEBUG, "user wrote %s", "13812345678"))
    guard.scan(record("sqlalchemy.engine", logging.DEBUG, "params %s", "13912345678"))
    guard.scan(record("aiohttp.access", logging.INFO, "GET /?p=13712345678"))
    assert guard.total == 2
    assert [(f.logger, f.level, f.masked) for f in guard.findings] == [
        ("bot.engine", "DEBUG", "138******78"), ("aiohttp.access", "INFO", "137******78")]
    assert is_own("handlers.web") and is_own("bot") and not is_own("botocore")
    assert mask("13812345678") == "138******78"


def test_a_traceback_is_scanned_too():
    guard = LogGuard()
    number = "1381234" + "5678"  # not in the traceback's source line
    try:
        raise ValueError(f"bad number {number}")
    except ValueError:
        failure = logging.LogRecord("handlers.web", logging.ERROR, __file__, 1, "failed", (),
                                    sys.exc_info())
    guard.scan(failure)
    assert guard.total == 1


def test_a_session_that_logs_a_phone_number_fails_with_a_masked_report(tmp_path):
    (tmp_path / "test_leaky.py").write_text(
        "import logging\n"
        "def test_leaks():\n"
        "    logging.getLogger('bot.leaky').debug('caller %s', '1381234' + '5678')\n"
        "def test_masked():\n"
        "    logging.getLogger('bot.leaky').info('caller 138****5678')\n",
        encoding="utf-8")
    environment = {**os.environ, "PYTHONPATH": str(PROJECT)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.log_guard", "-p", "no:cacheprovider",
         "-q", str(tmp_path)],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stdout
    assert "2 passed" in run.stdout
    assert "test_leaky.py::test_leaks: bot.leaky DEBUG logged a mobile number (138******78)" \
        in run.stdout
    assert "log guard: FAILED, 1 unmasked" in run.stdout
    assert "13812345678" not in run.stdout + run.stderr

