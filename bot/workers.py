"""Several worker processes on one port: the supervisor behind `xiaobao serve --workers N`.

One Python process uses one core; a province's traffic needs more.  The supervisor (the
parent process) starts N copies of `xiaobao serve` in worker mode; each listens on the
same address with SO_REUSEPORT, so the kernel spreads connections over them, and all of
them share one PostgreSQL database (conversation state, deduplication keys and the outbox
live there, so any worker can take any message).  The parent:

* is the process of the pid file, so `kb reload` (SIGHUP) reaches it and it forwards the
  signal to every worker;
* forwards SIGTERM and SIGINT, waits for the workers to finish what they hold, and kills
  any that has not stopped after `STOP_TIMEOUT_SECONDS`;
* starts a worker again when it dies (a crash, the OOM killer, `kill -9`), with a growing
  delay while it keeps dying young, and gives up — stopping the others, exit status 1 —
  after `MAX_QUICK_DEATHS` young deaths in a row (a port in use, a broken configuration).

Workers run in their own process group, so a terminal's Ctrl+C reaches them once, through
the parent, and each exits by itself if the parent disappears (`exit_with_parent`).
What must run once (schedulers, Telegram polling) is decided among the workers by
`bot.leadership`, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from aiohttp import web

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 30.0
TICK_SECONDS = 0.2
YOUNG_SECONDS = 10.0  # a worker dying younger than this counts towards giving up
MAX_QUICK_DEATHS = 5
MAX_RESTART_DELAY_SECONDS = 8.0
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class Worker:
    """One worker slot: its number, its current process and its run of young deaths."""

    number: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float = 0.0
    young_deaths: int = 0


@dataclass
class Supervisor:
    """Starts, watches, restarts and stops the worker processes."""

    command: Sequence[str]
    count: int
    environ: Mapping[str, str]
    workers: list[Worker] = field(default_factory=list)
    stop_signal: int | None = None

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT (exit status 0) or a worker keeps dying (1)."""
        previous = {signum: signal.signal(signum, self._on_signal) for signum in FORWARDED}
        try:
            self.workers = [Worker(number) for number in range(1, self.count + 1)]
            for worker in self.workers:
                self._start(worker)
            while self.stop_signal is None:
                if not self._watch():
                    self.stop_signal = signal.SIGTERM
                    self._stop()
                    return 1
                time.sleep(TICK_SECONDS)
            self._stop()
            return 0
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """SIGHUP goes on to every worker; SIGTERM and SIGINT stop the supervisor."""
        if signum == signal.SIGHUP:
            log.info("forwarding SIGHUP (knowledge reload) to %d worker(s)", len(self.alive()))
            self._send(signal.SIGHUP)
        elif self.stop_signal is None:
            self.stop_signal = signum

    def alive(self) -> list[subprocess.Popen[bytes]]:
        """The worker processes still running."""
        return [w.process for w in self.workers
                if w.process is not None and w.process.poll() is None]

    def _send(self, signum: int) -> None:
        for process in self.alive():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)

    def _start(self, worker: Worker) -> None:
        worker.process = subprocess.Popen(
            [*self.command, "--worker", str(worker.number)],
            env=dict(self.environ), process_group=0)
        worker.started_at = time.monotonic()
        log.info("worker %d started (pid %d)", worker.number, worker.process.pid)

    def _watch(self) -> bool:
        """Restart dead workers when due; False when one keeps dying young."""
        now = time.monotonic()
        for worker in self.workers:
            process = worker.process
            if process is not None and process.poll() is not None:
                worker.process = None
                young = now - worker.started_at < YOUNG_SECONDS
                worker.young_deaths = worker.young_deaths + 1 if young else 0
                if worker.young_deaths >= MAX_QUICK_DEATHS:
                    log.error("worker %d died %d times within %.0f s of starting; stopping",
                              worker.number, worker.young_deaths, YOUNG_SECONDS)
                    return False
                delay = min(0.5 * 2 ** worker.young_deaths, MAX_RESTART_DELAY_SECONDS)
                worker.restart_at = now + delay
                log.warning("worker %d (pid %d) exited with %s; starting it again in %.1f s",
                            worker.number, process.pid, _describe(process.returncode), delay)
            if worker.process is None and now >= worker.restart_at:
                self._start(worker)
        return True

    def _stop(self) -> None:
        """Pass the stop signal on, wait for the workers, kill what is left."""
        signum = self.stop_signal or signal.SIGTERM
        log.info("stopping %d worker(s) (%s)", len(self.alive()), signal.Signals(signum).name)
        self._send(signum)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while self.alive() and time.monotonic() < deadline:
            time.sleep(TICK_SECONDS)
        for process in self.alive():
            log.warning("worker pid %d did not stop in %.0f s; killing it", process.pid,
                        STOP_TIMEOUT_SECONDS)
            process.kill()
            process.wait()


def _describe(returncode: int) -> str:
    if returncode < 0:
        return signal.Signals(-returncode).name
    return f"status {returncode}"


def supervise(command: Sequence[str], count: int, pid_file: Path,
              environ: Mapping[str, str]) -> int:
    """Run `count` workers of `command` under a supervisor whose pid is in `pid_file`."""
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(str(os.getpid()))
    try:
        return Supervisor(command, count, environ).run()
    finally:
        pid_file.unlink(missing_ok=True)


def exit_with_parent(app: web.Application, parent_pid: int, interval: float = 1.0) -> None:
    """Make a worker stop by itself (SIGTERM) if its supervisor disappears."""

    async def watch() -> None:
        while os.getppid() == parent_pid:
            await asyncio.sleep(interval)
        log.warning("the supervisor (pid %d) is gone; this worker stops", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    async def orphan_guard_ctx(app: web.Application) -> AsyncIterator[None]:
        """Watch the parent for as long as the worker runs."""
        task = asyncio.create_task(watch(), name="orphan-guard")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(orphan_guard_ctx)
