"""Pytest plugin: no log record of the whole suite may carry a phone or ID number unmasked.

Registered from `tests/conftest.py`.  For the whole session a handler on the root logger
sees every record of the project's own loggers at every level (they are opened to DEBUG
while the suite runs) and third-party records at INFO and above (the root logger is opened
to INFO).  Each record's message, arguments included, and its traceback are scanned for a
mainland mobile number (1[3-9] and nine digits) or an 18-character resident ID number, as
whole numbers (not part of a longer run of digits or letters, such as a hex signature).
If any is found the session fails at the end with a summary naming the test, the logger
and the level; the number itself is shown masked, so the report does not leak what it found.

Records emitted in subprocesses the tests start (`xiaobao` commands, the browser) are not
seen here; those outputs are checked by the tests that read them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import pytest

OWN_LOGGERS = ("bot", "handlers", "knowledge", "classifiers", "benchmarks", "xiaobao")
THIRD_PARTY_LEVEL = logging.INFO
# An ID number has its holder's birth date at positions 7-14 (GB 11643); requiring it
# keeps random nonces and message ids in request logs from passing for ID numbers.
# Both must stand alone: digits inside a hexadecimal signature or a token (letters or digits
# either side) are not somebody's number, and the access log of a signed request is full of them.
PERSONAL_NUMBER = re.compile(
    r"(?<![0-9A-Za-z])(?:(?P<mobile>1[3-9][0-9]{9})|"
    r"(?P<id>[0-9]{6}(?:19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]))"
    r"(?![0-9A-Za-z])"
)
MAX_KEPT = 20


def mask(number: str) -> str:
    """A found number as the report may show it: first 3 and last 2 characters."""
    return number[:3] + "*" * (len(number) - 5) + number[-2:]


def find_personal_numbers(text: str) -> list[tuple[str, str]]:
    """Every unmasked mobile or ID number in `text`, as (kind, masked number)."""
    return [("mobile number" if found.group("mobile") else "ID number", mask(found.group(0)))
            for found in PERSONAL_NUMBER.finditer(text)]


def looks_personal(text: str) -> bool:
    """True when `text` holds what the guard reports.  Generated test data that ends up in
    a log (a query string in the access log, an update id) must not, or a fictitious
    value that happens to have a phone number's shape fails the run at random."""
    return PERSONAL_NUMBER.search(text) is not None


def is_own(logger_name: str) -> bool:
    """True for the project's loggers (scanned at every level)."""
    return any(logger_name == own or logger_name.startswith(own + ".") for own in OWN_LOGGERS)


@dataclass(frozen=True)
class Finding:
    """One record that carried a personal number, described without the number itself."""

    test: str
    logger: str
    level: str
    kind: str
    masked: str


@dataclass
class LogGuard:
    """Collects findings over a session; the handler and the hooks share one instance."""

    current_test: str = "(outside any test)"
    findings: list[Finding] = field(default_factory=list)
    total: int = 0
    scanned: int = 0

    def scan(self, record: logging.LogRecord) -> None:
        """Look for personal numbers in one record's message, arguments and traceback."""
        if not is_own(record.name) and record.levelno < THIRD_PARTY_LEVEL:
            return
        self.scanned += 1
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            text = f"{record.msg} {record.args}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + record.stack_info
        for kind, masked in find_personal_numbers(text):
            self.total += 1
            if len(self.findings) < MAX_KEPT:
                self.findings.append(Finding(self.current_test, record.name,
                                             record.levelname, kind, masked))


class _ScanHandler(logging.Handler):
    """Hands every record that reaches the root logger to the guard."""

    def __init__(self, guard: LogGuard) -> None:
        super().__init__(level=logging.DEBUG)
        self.guard = guard

    def emit(self, record: logging.LogRecord) -> None:
        self.guard.scan(record)


class LogGuardPlugin:
    """The pytest hooks: install the handler, follow the current test, judge at the end."""

    def __init__(self) -> None:
        self.guard = LogGuard()
        self.handler = _ScanHandler(self.guard)
        self._levels: dict[str, int] = {}

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Open the loggers and attach the scanner before the first test."""
        root = logging.getLogger()
        self._levels[""] = root.level
        if root.level == logging.NOTSET or root.level > THIRD_PARTY_LEVEL:
            root.setLevel(THIRD_PARTY_LEVEL)
        for name in OWN_LOGGERS:
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            logger.setLevel(logging.DEBUG)
        root.addHandler(self.handler)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        """Remember which test is running, so findings name it."""
        self.guard.current_test = nodeid

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Detach, restore the loggers, and fail the session if anything was found."""
        logging.getLogger().removeHandler(self.handler)
        for name, level in self._levels.items():
            logging.getLogger(name or None).setLevel(level)
        if self.guard.total and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """Name every record that carried a personal number (masked), or say none did."""
        guard = self.guard
        if not guard.total:
            terminalreporter.write_line(
                f"log guard: {guard.scanned} log records scanned, no phone or ID number")
            return
        terminalreporter.section("log guard: personal numbers in the logs", red=True)
        for finding in guard.findings:
            terminalreporter.write_line(
                f"{finding.test}: {finding.logger} {finding.level} logged a {finding.kind} "
                f"({finding.masked})", red=True)
        if guard.total > len(guard.findings):
            terminalreporter.write_line(f"... and {guard.total - len(guard.findings)} more")
        terminalreporter.write_line(
            f"log guard: FAILED, {guard.total} unmasked phone/ID numbers in "
            f"{guard.scanned} scanned log records; mask them before logging "
            "(bot.privacy) or do not log them", red=True, bold=True)


def pytest_configure(config: pytest.Config) -> None:
    """Register the guard once per session."""
    config.pluginmanager.register(LogGuardPlugin(), "xiaobao-log-guard")
