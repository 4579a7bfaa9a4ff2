"""Knowledge-base operations on a running service: reload without dropping a request,
keep the old index on bad data, and the curators' list of unanswered questions."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from knowledge.base import DEFAULT_DATA_DIR

REPO = Path(__file__).resolve().parents[1]
NEW_ENTRY = """
- id: card-fraud-zz-reload-probe
  topic: card-fraud
  title: 换卡以后旧卡怎么处理（测试条目）
  questions:
    - 旧的磁条卡剪角作废要注意什么
    - 换了芯片卡以后旧磁条卡怎么销毁
    - 旧银行卡剪掉芯片就安全了吗
    - 磁条卡换芯片卡后旧卡还有风险吗
    - 旧卡不用了怎么彻底作废
  answer: |
    换了新卡以后，旧卡请交回网点或自己剪断芯片和磁条后再丢弃，不要随手扔掉，也不要把旧卡借给别人。
    如果旧卡上还有余额或绑定的自动扣款，请先转出并解除绑定，再到网点或手机银行办理销户，避免被不法分子利用。
    有疑问时拨打银行卡背面的官方客服电话咨询。
  next_steps:
    - 到网点办理旧卡销户
  sources: ["《中华人民共和国反电信网络诈骗法》（2022年）"]
  reviewed: 2026-11-28
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def service(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(DEFAULT_DATA_DIR, data)
    port = _free_port()
    env = {**os.environ, "XIAOBAO_HTTP_PORT": str(port),
           "XIAOBAO_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
           "XIAOBAO_KNOWLEDGE_DATA_DIR": str(data),
           "XIAOBAO_KNOWLEDGE_CACHE_DIR": str(REPO / "var" / "cache")}
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve"], cwd=tmp_path,
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if process.poll() is not None:
                log.close()
                output = (tmp_path / "serve.log").read_text("utf-8", "replace")
                raise AssertionError(output) from None
            time.sleep(0.2)
    yield {"url": url, "data": data, "process": process, "cwd": tmp_path, "env": env}
    process.send_signal(signal.SIGINT)
    process.wait(timeout=30)
    log.close()


async def _ask(session: aiohttp.ClientSession, url: str, text: str) -> str:
    async with session.post(f"{url}/api/chat", json={"user": "reloader", "text": text}) as r:
        assert r.status == 200
        return "\n".join(reply["text"] for reply in (await r.json())["replies"])


async def _wait_for(session, url, text, expected, timeout=60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        answer = await _ask(session, url, text)
        if expected in answer or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.5)


async def test_reload_swaps_the_index_without_dropping_requests(service):
    url, data = service["url"], service["data"]
    question = "换了芯片卡以后旧磁条卡怎么销毁"
    async with aiohttp.ClientSession() as session:
        assert "测试条目" not in await _ask(session, url, question)
        with (data / "card-fraud.yaml").open("a", encoding="utf-8") as out:
            out.write(NEW_ENTRY)
        reload = subprocess.run(
            [sys.executable, "-m", "bot.cli", "kb", "reload"], cwd=service["cwd"],
            env=service["env"], capture_output=True, timeout=120)
        assert reload.returncode == 0, reload.stderr
        # Requests keep being answered while the new index is built and swapped in.
        during = await asyncio.gather(*(_ask(session, url, "安全账户") for _ in range(20)))
        assert all("安全账户" in answer for answer in during)
        answer = await _wait_for(session, url, question, "测试条目")
        assert "测试条目" in answer


async def test_bad_data_is_refused_and_the_old_index_keeps_answering(service):
    url, data = service["url"], service["data"]
    (data / "card-fraud.yaml").write_text("- id: [broken\n", encoding="utf-8")
    reload = subprocess.run([sys.executable, "-m", "bot.cli", "kb", "reload"],
                            cwd=service["cwd"], env=service["env"], capture_output=True,
                            timeout=120)
    assert reload.returncode == 2
    assert f"{data / 'card-fraud.yaml'}:" in reload.stderr.decode()
    service["process"].send_signal(signal.SIGHUP)  # even a forced reload keeps the index
    await asyncio.sleep(3)
    async with aiohttp.ClientSession() as session:
        assert "【" in await _ask(session, url, "银行卡被盗刷了怎么办")


async def test_unanswered_questions_are_listed_for_curators(service):
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            await _ask(session, service["url"], "你们能帮我查一下黄金回收价格吗")
        await _ask(session, service["url"], "今天天气好吗 我的电话13812345678")
    listing = subprocess.run([sys.executable, "-m", "bot.cli", "kb", "unanswered", "--json"],
                             cwd=service["cwd"], env=service["env"], capture_output=True,
                             timeout=120)
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    assert rows[0]["count"] == 2 and "黄金回收" in rows[0]["text"]
    assert "13812345678" not in listing.stdout.decode()


def test_kb_eval_prints_the_figures(tmp_path):
    sample = tmp_path / "eval.jsonl"
    sample.write_text(
        "\n".join(json.dumps(item, ensure_ascii=False) for item in (
            {"text": "安全账户是真的吗", "topic": "telecom-fraud"},
            {"text": "退保黑产", "topic": "agent-surrender"},
            {"text": "明天下雨吗", "topic": None},
        )), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "bot.cli", "kb", "eval", str(sample),
                           "--json"], cwd=REPO, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["in_scope"] == 2 and report["out_of_scope"] == 1
    assert report["top1_topic_accuracy"] == 1.0 and report["out_of_scope_declined"] == 1.0
