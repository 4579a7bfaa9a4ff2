"""The measured process of `benchmarks instructions`: engine turns, run under callgrind.

    python -m benchmarks.instructions_worker prepare
    valgrind --tool=callgrind --instr-atstart=no ... python -m benchmarks.instructions_worker \
        turns MESSAGES

`prepare` builds the service once without valgrind, so the fitted indexes are in the cache
(fitting them under valgrind would take many minutes).  `turns` opens the service on a
SQLite file in its working directory (the parent's scratch), switches callgrind's
instrumentation on (`callgrind_control`, the process's own pid), warms every kind of turn
up, then for each kind zeroes the counters, runs its messages through `Engine.handle` and
dumps the counters with the label `kind:messages`; the parent reads the dumps.  Start-up,
imports and loading the indexes run uninstrumented and are never counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from benchmarks.load_client import COMPLAINT_STEPS, STORY, complaint_step
from bot.config import load_config
from bot.fitted import knowledge_source
from bot.messages import Incoming, Reply
from bot.services import Services, open_services
from knowledge.index import KnowledgeIndex

ROOT = Path(__file__).resolve().parent.parent
WARMUP_MESSAGES = 12


def _control(*options: str) -> None:
    """Tell callgrind, which runs this very process, to do something now."""
    subprocess.run(["callgrind_control", *options, str(os.getpid())], check=True,
                   capture_output=True)


def _texts(name: str, label: str | None = None) -> list[str]:
    lines = [json.loads(line) for line in (ROOT / "evaluation" / name).read_text(
        encoding="utf-8").splitlines() if line.strip()]
    return [line["text"] for line in lines if label is None or line.get("label") == label]


async def _open_service() -> Services:
    """The service on a SQLite file in the working directory (the parent's scratch)."""
    environ = {**os.environ, "XIAOBAO_DATABASE_URL": f"sqlite:///{Path.cwd() / 'bench.db'}"}
    config = load_config(environ=environ)
    return await open_services(config, KnowledgeIndex.build(knowledge_source(config)))


async def _turns(messages: int) -> None:
    services = await _open_service()
    handle = services.chat.handle
    questions, scams = _texts("kb_eval.jsonl"), _texts("scam_eval.jsonl", "scam")
    visitors = iter(range(10**9))

    async def question(count: int) -> int:
        for n in range(count):
            await handle(Incoming("web", f"q{next(visitors)}", text=questions[n * 7 % len(
                questions)]))
        return count

    async def scam_check(count: int) -> int:  # the button, then the pasted text
        pairs = (count + 1) // 2
        for n in range(pairs):
            user = f"s{next(visitors)}"
            await handle(Incoming("web", user, action="check"))
            await handle(Incoming("web", user, text=scams[n * 5 % len(scams)]))
        return 2 * pairs

    async def complaint(count: int) -> int:  # whole dialogues, as the load generator's
        sent = 0
        while sent < count:
            number = next(visitors)
            sent += await _complaint(handle, f"c{number}", number)
        return sent

    kinds: dict[str, Callable[[int], Awaitable[int]]] = {
        "question": question, "scam check": scam_check, "complaint": complaint}
    _control("--instr=on")
    for run in kinds.values():
        await run(WARMUP_MESSAGES)
    for name, run in kinds.items():
        _control("--zero")
        sent = await run(messages)
        _control(f"--dump={name}:{sent}")
    await services.close()


async def _complaint(handle: Callable[[Incoming], Awaitable[list[Reply]]],
                     user: str, number: int) -> int:
    """One whole complaint, story to confirmation, as the load generator files it; the
    messages it took."""
    replies = await handle(Incoming("web", user, text="我要投诉"))
    replies = await handle(Incoming("web", user, text=STORY))
    sent = 2
    for step in COMPLAINT_STEPS:
        answer = complaint_step(step, [reply.to_dict() for reply in replies], number)
        if answer is None:
            raise RuntimeError(f"the complaint dialogue offered no button for {step!r}")
        kind, value = answer
        replies = await handle(Incoming("web", user, **{kind: value}))
        sent += 1
    if not any("BB-" in reply.text for reply in replies):
        raise RuntimeError("the complaint was not confirmed")
    return sent


def main(argv: Sequence[str] | None = None) -> int:
    """`prepare` or `turns MESSAGES` (see the module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["prepare"]:
        async def prepare() -> None:
            await (await _open_service()).close()
        asyncio.run(prepare())
        return 0
    if args[:1] == ["turns"] and len(args) == 2:
        asyncio.run(_turns(int(args[1])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
