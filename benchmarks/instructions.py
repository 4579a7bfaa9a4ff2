"""Instructions per message, counted by callgrind: figures that a noisy host cannot move.

    python -m benchmarks instructions                 # about 1.5 minutes
    python -m benchmarks instructions --messages 40   # quicker, a little less steady

Wall-clock figures on the shared 2-core VMs move by 20% from one run to the next and by 2x
from one session's host to another's (`benchmarks load`), so a change that saves 3% of a
message's work cannot be seen in them.  Valgrind's callgrind counts the instructions a
process executes, whatever else the machine is doing: the same code and inputs give the
same count to within about 1%.  Instructions are not time (string instructions such as
`rep stosb` count once per byte, cache misses not at all), so this benchmark tells whether
a change made a message cheaper, and `load` how fast the service is.

Two parts, each in processes of their own under `valgrind --tool=callgrind` with
instrumentation off until the measured part begins (start-up and imports are not counted):

1. **Engine turns** (`benchmarks.instructions_worker`): a question, a scam check (the
   "check" button, then a pasted scam text) and a whole complaint dialogue, each kind
   `--messages` times through `Engine.handle` on a scratch SQLite file; no HTTP.
2. **The whole worker, over HTTP**: `xiaobao serve` on SQLite, sent questions on
   `/api/chat` and then signed plain-mode WeChat questions, one at a time, by the load
   generator's code; and the WeRoBot echo robot of `benchmarks load` (its default session
   store), sent the same WeChat questions.  The ratio of the two WeChat figures is
   printed; the background loops of xiaobao (outbox dispatcher, deadline scheduler) are
   set to wake hourly, so only messages are counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import load
from benchmarks.load_client import Generator, Plan

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 600.0  # a server's start-up under valgrind takes a minute or two
WARMUP_VISITS = 10
VALGRIND = ("valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no")


# -- callgrind's output -------------------------------------------------------------------
def read_dumps(files: Sequence[Path]) -> dict[str, float]:
    """Instructions per message of every dump labelled `kind:messages`.

    A dump file holds `desc: Trigger: dump LABEL` and `summary: INSTRUCTIONS` (the
    counters since they were last zeroed); dumps without such a label (the final one at
    exit) are ignored.
    """
    per_message: dict[str, float] = {}
    for path in files:
        label, total = None, None
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("desc: Trigger: dump "):
                label = line.removeprefix("desc: Trigger: dump ").strip()
            elif line.startswith("summary: "):
                total = int(line.split()[1])
        if label and total is not None and ":" in label:
            kind, _, messages = label.rpartition(":")
            if messages.isdigit() and int(messages) > 0:
                per_message[kind] = total / int(messages)
    return per_message


def _control(pid: int, *options: str) -> None:
    subprocess.run(["callgrind_control", *options, str(pid)], check=True,
                   capture_output=True)


# -- part 1: engine turns -------------------------------------------------------------------
def engine_turns(scratch: Path, messages: int, environ: dict[str, str]) -> dict[str, float]:
    """Instructions per engine turn of each kind (see the module docstring)."""
    worker = [sys.executable, "-m", "benchmarks.instructions_worker"]
    cwd = scratch / "engine"  # no config.toml there: the defaults, as `xiaobao serve` below
    cwd.mkdir(parents=True)
    environ = {**environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([*worker, "prepare"], cwd=cwd, env=environ, check=True)
    out = cwd / "callgrind.out"
    done = subprocess.run([*VALGRIND, f"--callgrind-out-file={out}", *worker, "turns",
                           str(messages)], cwd=cwd, env=environ, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"engine turns under callgrind failed:\n{done.stderr[-3000:]}")
    return read_dumps(sorted(cwd.glob("callgrind.out.*")))


# -- part 2: the whole worker, over HTTP ----------------------------------------------------
class _Counted(Generator):
    """The load generator's visitors, a fixed number of them, one at a time."""

    def __init__(self, plan: Plan, visits: int) -> None:
        super().__init__(plan)
        self.visits = visits

    async def play(self) -> None:
        for _ in range(self.visits):
            await self.visit()

    def answered(self) -> int:
        errors = sum(tally.errors for tally in self.tallies.values())
        if errors:
            raise RuntimeError(f"{errors} messages failed under callgrind")
        return sum(len(tally.latencies) for tally in self.tallies.values())


def _send(url: str, mix: str, visits: int, seed: int) -> int:
    plan = Plan(targets=(url,), mix=mix, concurrency=1, warmup_seconds=0.0,
                duration_seconds=10.0**6, token=load.TOKEN, seed=seed)
    generator = _Counted(plan, visits)
    asyncio.run(generator.run())
    return generator.answered()


def over_http(name: str, command: list[str], cwd: Path, environ: dict[str, str],
              port: int, health: str, visits: int, mixes: Sequence[str]) -> dict[str, float]:
    """Instructions per message of each load-generator mix, for one server started under
    callgrind (each mix counted on its own, after a warm-up of all of them)."""
    out = cwd / "callgrind.out"
    cwd.mkdir(parents=True)
    log_path = cwd / f"{name}.log"
    with log_path.open("wb") as output:
        server = subprocess.Popen([*VALGRIND, f"--callgrind-out-file={out}", *command],
                                  cwd=cwd, env=environ, stdout=output,
                                  stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not _healthy(health):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start under callgrind:\n"
                                   f"{log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(1.0)
        url = f"http://127.0.0.1:{port}"
        _control(server.pid, "--instr=on")
        for mix in mixes:
            _send(url, mix, WARMUP_VISITS, seed=7)
        for mix in mixes:
            _control(server.pid, "--zero")
            sent = _send(url, mix, visits, seed=1)
            _control(server.pid, f"--dump={mix}:{sent}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    figures = read_dumps(sorted(cwd.glob("callgrind.out.*")))
    if set(figures) != set(mixes):
        raise RuntimeError(f"{name}: callgrind wrote dumps of {sorted(figures)}, "
                           f"not of {sorted(mixes)}")
    return figures


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status < 500
    except OSError:
        return False


# -- the run --------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both parts; the figures as a JSON-ready dictionary."""
    scratch = Path(tempfile.mkdtemp(prefix="xiaobao-instructions-"))
    try:
        port = load.free_port()
        environ = load.xiaobao_environ(f"sqlite:///{scratch / 'service.db'}", port)
        environ.update({"XIAOBAO_NOTIFICATIONS_POLL_SECONDS": "3600",
                        "XIAOBAO_DEADLINES_INTERVAL_SECONDS": "3600"})
        load.log(f"engine turns under callgrind, {args.messages} messages of each kind")
        engine = engine_turns(scratch, args.messages, environ)
        visits = max(1, args.messages // 2)  # a visitor asks two questions
        load.log(f"xiaobao serve under callgrind, {2 * visits} questions on /api/chat "
                 "and on WeChat")
        ours = over_http("xiaobao", [str(load.BIN / "xiaobao"), "serve"],
                         scratch / "xiaobao", environ, port,
                         f"http://127.0.0.1:{port}/healthz", visits, ("question", "wechat"))
        peer_port = load.free_port()
        load.log(f"WeRoBot echo under callgrind, {2 * visits} WeChat questions")
        peer = over_http("werobot", [sys.executable, "-m", "benchmarks.werobot_echo",
                                     "--port", str(peer_port), "--token", load.TOKEN],
                         scratch / "werobot", {**os.environ, "PYTHONPATH": str(ROOT)},
                         peer_port, f"http://127.0.0.1:{peer_port}/?{load.signed_check()}",
                         visits, ("wechat",))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"engine_turns": engine,
            "over_http": {"xiaobao_chat_question": ours["question"],
                          "xiaobao_wechat_question": ours["wechat"],
                          "werobot_wechat_question": peer["wechat"]},
            "messages": args.messages}


def report(result: dict[str, Any]) -> str:
    """The table printed at the end."""
    lines = ["", "| what | instructions per message |", "|---|---:|"]
    for kind, count in result["engine_turns"].items():
        lines.append(f"| engine turn: {kind} | {count / 1e6:.3f} M |")
    http = result["over_http"]
    ours, peer = http["xiaobao_wechat_question"], http["werobot_wechat_question"]
    lines += [f"| question on /api/chat, over HTTP: xiaobao serve | "
              f"{http['xiaobao_chat_question'] / 1e6:.3f} M |",
              f"| WeChat question, over HTTP: xiaobao serve | {ours / 1e6:.3f} M |",
              f"| WeChat question, over HTTP: WeRoBot echo | {peer / 1e6:.3f} M |",
              "", f"xiaobao / WeRoBot echo, instructions per WeChat question: "
              f"{ours / peer:.2f}x (xiaobao also matches the question against the knowledge "
              "base and keeps the conversation; the echo only echoes)"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the instruction-count benchmark, print the table and write the JSON report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks instructions",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=60,
                        help="measured messages of each kind (default 60)")
    parser.add_argument("--output", type=Path,
                        default=ROOT / "var" / "bench" / "instructions.json")
    args = parser.parse_args(argv)
    if args.messages < 2:
        parser.error("--messages must be at least 2")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (callgrind) is not installed: apt-get install valgrind",
              file=sys.stderr)
        return 2
    began = time.time()
    result = run(args)
    result["machine"] = load.machine()
    load.publish(result, began, args.output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
