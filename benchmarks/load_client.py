"""The load generator of `benchmarks load`: a separate process that drives a running service.

    python -m benchmarks.load_client PLAN_JSON     # prints one JSON line of results

A fixed number of aiohttp client coroutines each play one visitor after another, as fast
as the service answers (a closed loop), spreading requests round-robin over the target
addresses.  Two mixes:

- `mixed`: web visitors on /api/chat asking two questions, checking a suspicious text
  (the "check" button, then the text) or filing a whole complaint through the dialogue's
  buttons; and WeChat followers asking two questions through signed plain-mode requests.
  Each visitor has its own user id and its own X-Forwarded-For address (the service runs
  with `limits.trust_forwarded_for`, as behind the documented proxy), so the default rate
  limits apply as they would to real visitors;
- `wechat`: WeChat followers only, two questions each (the peer comparison with WeRoBot).

Only requests that finish inside the measuring window count; everything before it is
warm-up.  A request is an error when it fails, answers anything but 200, or (in a
dialogue) lacks the button the next step presses.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "gh_0123456789ab"
STORY = "上个月在工行办信用卡，说好免年费，结果被扣了300块年费，打客服也没人给个说法"
# The steps of a whole complaint after the story: press a button whose label contains the
# text, or send the text itself ("text:" prefix).
COMPLAINT_STEPS = ("对，是这家", "最近一个月内", "退款", "同意", "text:张桂兰", "text:PHONE",
                   "跳过", "为我自己", "确认提交")
MIX = (("question", 0.50), ("scam", 0.20), ("complaint", 0.05), ("wechat", 0.25))


@dataclass(frozen=True)
class Plan:
    """What to run: where, which mix, how many coroutines, for how long."""

    targets: tuple[str, ...]
    mix: str = "mixed"
    concurrency: int = 32
    warmup_seconds: float = 5.0
    duration_seconds: float = 30.0
    wechat_path: str = "/wechat"
    token: str = "bench-token"
    seed: int = 1

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """The plan the orchestrator passed on the command line."""
        raw = json.loads(text)
        raw["targets"] = tuple(raw["targets"])
        return cls(**raw)


@dataclass
class Tally:
    """Latencies and errors of one kind of message inside the measuring window."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


class Generator:
    """The visitors, the round-robin over targets and the measuring window."""

    def __init__(self, plan: Plan, http: aiohttp.ClientSession) -> None:
        self.plan = plan
        self.http = http
        self.random = random.Random(plan.seed)
        self.questions = _texts(ROOT / "evaluation" / "kb_eval.jsonl")
        self.scams = [line["text"] for line in _lines(ROOT / "evaluation" / "scam_eval.jsonl")
                      if line.get("label") == "scam"]
        self.targets = itertools.cycle(plan.targets)
        self.visitors = itertools.count(1)
        self.msg_ids = itertools.count(6_000_000_000_000_000_000 + plan.seed * 10**12)
        self.tallies: dict[str, Tally] = {}
        self.start = 0.0
        self.window = (0.0, 0.0)
        self.stop_at = 0.0

    # -- one request ---------------------------------------------------------------------
    def _count(self, kind: str, began: float, ended: float, error: str | None) -> None:
        if not self.window[0] <= ended <= self.window[1]:
            return
        tally = self.tallies.setdefault(kind, Tally())
        if error is None:
            tally.latencies.append(ended - began)
        else:
            tally.errors += 1
            tally.statuses[error] = tally.statuses.get(error, 0) + 1

    async def chat(self, kind: str, user: int, body: dict[str, str]) -> list[dict[str, Any]]:
        """One /api/chat message; the replies (empty on error)."""
        payload = {"user": f"bench-{self.plan.seed}-{user}", **body}
        headers = {"X-Forwarded-For": f"198.18.{user // 250 % 250}.{user % 250 + 1}"}
        began = time.perf_counter()
        try:
            async with self.http.post(f"{next(self.targets)}/api/chat", json=payload,
                                      headers=headers) as response:
                data = await response.json() if response.status == 200 else None
                status = response.status
        except (TimeoutError, aiohttp.ClientError, ValueError) as error:
            self._count(kind, began, time.perf_counter(), type(error).__name__)
            return []
        ended = time.perf_counter()
        if status != 200 or not isinstance(data, dict):
            self._count(kind, began, ended, str(status))
            return []
        self._count(kind, began, ended, None)
        return list(data.get("replies", []))

    async def wechat(self, kind: str, user: int, text: str) -> bool:
        """One signed plain-mode WeChat text message; True when answered with 200."""
        timestamp, nonce = str(int(time.time())), str(self.random.randrange(10**9))
        signature = hashlib.sha1("".join(sorted((self.plan.token, timestamp, nonce)))
                                 .encode()).hexdigest()
        body = (f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
                f"<FromUserName><![CDATA[oBench{self.plan.seed:04d}{user:018d}]]></FromUserName>"
                f"<CreateTime>{timestamp}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
                f"<Content><![CDATA[{text}]]></Content><MsgId>{next(self.msg_ids)}</MsgId>"
                "</xml>").encode()
        began = time.perf_counter()
        try:
            async with self.http.post(
                    f"{next(self.targets)}{self.plan.wechat_path}", data=body,
                    params={"signature": signature, "timestamp": timestamp, "nonce": nonce},
                    headers={"Content-Type": "text/xml"}) as response:
                reply = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as error:
            self._count(kind, began, time.perf_counter(), type(error).__name__)
            return False
        ended = time.perf_counter()
        if status != 200 or not reply.lstrip().startswith(b"<xml>"):
            self._count(kind, began, ended, str(status) if status != 200 else "no-xml")
            return False
        self._count(kind, began, ended, None)
        return True

    # -- visitors ------------------------------------------------------------------------
    async def visit(self) -> None:
        """One visitor of the mix, start to end."""
        user = next(self.visitors)
        if self.plan.mix == "wechat":
            script = "wechat"
        else:
            names, weights = zip(*MIX, strict=True)
            script = self.random.choices(names, weights)[0]
        if script == "question":
            for _ in range(2):
                await self.chat("chat-question", user,
                                {"text": self.random.choice(self.questions)})
        elif script == "scam":
            if await self.chat("chat-scam", user, {"action": "check"}):
                await self.chat("chat-scam", user, {"text": self.random.choice(self.scams)})
        elif script == "complaint":
            await self.complaint(user)
        else:
            for _ in range(2):
                if not await self.wechat("wechat-question", user,
                                         self.random.choice(self.questions)):
                    break

    async def complaint(self, user: int) -> None:
        """A whole complaint: the story, every button and answer, then confirmation."""
        replies = await self.chat("chat-complaint", user, {"text": "我要投诉"})
        if replies:
            replies = await self.chat("chat-complaint", user, {"text": STORY})
        for step in COMPLAINT_STEPS:
            if not replies:
                return
            if step.startswith("text:"):
                text = step[5:].replace("PHONE", f"138{user % 10**8:08d}")
                replies = await self.chat("chat-complaint", user, {"text": text})
                continue
            action = next((button["action"] for reply in replies
                           for button in reply.get("buttons", []) if step in button["label"]),
                          None)
            if action is None:
                self._count("chat-complaint", 0.0, time.perf_counter(), "missing-button")
                return
            replies = await self.chat("chat-complaint", user, {"action": action})
        if replies and not any("BB-" in reply.get("text", "") for reply in replies):
            self._count("chat-complaint", 0.0, time.perf_counter(), "not-confirmed")

    async def worker(self) -> None:
        while time.perf_counter() < self.stop_at:
            await self.visit()

    async def run(self) -> dict[str, Any]:
        """Run the plan; the figures as a JSON-ready dictionary."""
        plan = self.plan
        self.start = time.perf_counter()
        self.window = (self.start + plan.warmup_seconds,
                       self.start + plan.warmup_seconds + plan.duration_seconds)
        self.stop_at = self.window[1]
        await asyncio.gather(*(self.worker() for _ in range(plan.concurrency)))
        return summarise(self.tallies, plan.duration_seconds)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted values (0.0 for none)."""
    if not values:
        return 0.0
    rank = max(0, min(len(values) - 1, math.ceil(fraction * len(values)) - 1))
    return values[rank]


def summarise(tallies: dict[str, Tally], seconds: float) -> dict[str, Any]:
    """Per kind and overall: messages/s, median and p99 in ms, errors by cause."""
    def figures(latencies: list[float], errors: int, statuses: dict[str, int]) -> dict[str, Any]:
        ordered = sorted(latencies)
        return {"messages": len(ordered), "per_second": round(len(ordered) / seconds, 1),
                "median_ms": round(percentile(ordered, 0.5) * 1000, 2),
                "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
                "errors": errors, "error_causes": statuses}

    result: dict[str, Any] = {"kinds": {}}
    everything: list[float] = []
    errors, causes = 0, {}
    for kind, tally in sorted(tallies.items()):
        result["kinds"][kind] = figures(tally.latencies, tally.errors, tally.statuses)
        everything += tally.latencies
        errors += tally.errors
        for cause, count in tally.statuses.items():
            causes[cause] = causes.get(cause, 0) + count
    result["all"] = figures(everything, errors, causes)
    chat = [t for kind, t in tallies.items() if kind.startswith("chat-")]
    if chat:
        result["chat"] = figures([v for t in chat for v in t.latencies],
                                 sum(t.errors for t in chat), {})
    return result


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def _texts(path: Path) -> list[str]:
    return [line["text"] for line in _lines(path)]


async def _main(plan: Plan) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        return await Generator(plan, http).run()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the plan given as JSON and print the results as one JSON line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    print(json.dumps(asyncio.run(_main(Plan.from_json(args[0])))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
