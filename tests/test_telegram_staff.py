"""Telegram for staff, end to end: link codes, notifications in linked chats, /queue.

The whole service runs (`create_app`) with the real python-telegram-bot client polling the
scripted Bot API stand-in of `tests/test_telegram.py` on 127.0.0.1, and the real
notification dispatcher.  Complaints are filed with `file_complaint`; all data is
fictitious.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import select, update

from bot import cli, db
from bot.app import create_app
from bot.config import build_config
from bot.models import Complaint, ConsumerMessage, LinkCode, Notification, QueueChannel, utcnow
from bot.notifications import links
from bot.services import SERVICES
from classifiers.institutions import Directory
from handlers.telegram_staff import LINK_REFUSED, LINK_USAGE, NOT_LINKED
from tests.test_notifications import PHONE, Complaints, FakeClock
from tests.test_telegram import CONSUMER, TOKEN, BotApi

GROUP = -1005550001
OTHER_GROUP = -1005550002
DASHBOARD = "https://xiaobao.example.org/staff"


def staff_config(database_url: str, bot_api: BotApi) -> Any:
    """The service with Telegram pointed at the stand-in and a quick dispatcher."""
    environ = {"XIAOBAO_TELEGRAM_TOKEN": TOKEN, "XIAOBAO_TELEGRAM_BASE_URL": bot_api.base_url}
    return build_config({"database": {"url": database_url},
                         "complaints": {"dashboard_url": DASHBOARD},
                         "telegram": {"poll_timeout": 1, "max_retries": 2},
                         "notifications": {"poll_seconds": 0.05}}, environ)


@pytest.fixture
async def bot_api(aiohttp_server) -> BotApi:
    api = BotApi()
    server = await aiohttp_server(api.application(), host="127.0.0.1")
    api.base_url = str(server.make_url("/bot"))
    return api


@pytest.fixture
async def service(bot_api, aiohttp_client, sqlite_url, knowledge_index):
    """The whole service polling the stand-in (which is closed last)."""
    client = await aiohttp_client(create_app(staff_config(sqlite_url, bot_api),
                                             knowledge_index))
    await bot_api.wait_for(lambda: bool(bot_api.called("getUpdates")))
    return client


@pytest.fixture
def filing(service) -> Complaints:
    return Complaints(service.app[SERVICES].sessions, Directory.load(), FakeClock(utcnow()))


async def issue(service: Any, queue_id: str, now: dt.datetime | None = None) -> str:
    async with service.app[SERVICES].sessions() as session, session.begin():
        return (await links.issue_code(session, queue_id, now)).code


def texts_to(bot_api: BotApi, chat: int) -> list[str]:
    return [m["text"] for m in bot_api.sent() if m["chat_id"] == chat]


async def reply_to(bot_api: BotApi, chat: int, count: int = 1) -> str:
    """Wait for the chat's `count`-th message and return it."""
    await bot_api.wait_for(lambda: len(texts_to(bot_api, chat)) >= count)
    return texts_to(bot_api, chat)[count - 1]


async def link(bot_api: BotApi, code: str, chat: int = GROUP, count: int = 1) -> str:
    bot_api.say(f"/link {code}", chat=chat, chat_type="supergroup")
    return await reply_to(bot_api, chat, count)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until the dispatcher has recorded what the test expects."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def channels(service: Any) -> list[QueueChannel]:
    async with service.app[SERVICES].sessions() as session:
        return list((await session.scalars(select(QueueChannel)
                                           .order_by(QueueChannel.id))).all())


# -- start-up and the command line ----------------------------------------------------------
async def test_staff_commands_are_registered_for_group_chats(service, bot_api):
    private, group = bot_api.called("setMyCommands")
    assert private.params["scope"] == {"type": "all_private_chats"}
    assert group.params["scope"] == {"type": "all_group_chats"}
    assert [c["command"] for c in group.params["commands"]] == ["link", "queue", "unlink"]
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in c["description"])
               for c in group.params["commands"])


def test_link_code_prints_a_one_time_code_and_refuses_unknown_queues(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    assert cli.main(["--config", str(config_file), "staff", "link-code", "icbc"]) == 0
    code, instructions = capsys.readouterr().out.splitlines()
    assert len(code) == links.CODE_CHARS and set(code) <= set(links.CODE_ALPHABET)
    assert f'"/link {code}"' in instructions and "icbc" in instructions
    [row] = asyncio.run(_link_codes(url))
    assert row.code == code and row.queue_id == "icbc" and row.used_at is None
    lifetime = row.expires_at - row.created_at
    assert lifetime == dt.timedelta(hours=24)

    assert cli.main(["--config", str(config_file), "staff", "link-code", "no-such-bank"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "no-such-bank" in error
    assert len(asyncio.run(_link_codes(url))) == 1


async def _link_codes(url: str) -> list[LinkCode]:
    engine = db.create_engine(url)
    try:
        async with db.create_sessionmaker(engine)() as session:
            return list((await session.scalars(select(LinkCode))).all())
    finally:
        await engine.dispose()


# -- linking --------------------------------------------------------------------------------
async def test_a_linked_group_gets_new_complaints_masked_with_a_dashboard_button(
    service, bot_api, filing
):
    code = await issue(service, "icbc")
    typed = f"{code[:4].lower()}-{code[4:].lower()}"  # as someone might type it
    answer = await link(bot_api, typed)
    assert answer.startswith("已关联：本群将收到「中国工商银行蚌埠分行」的投诉通知")
    [channel] = await channels(service)
    assert (channel.queue_id, channel.kind, channel.target, channel.active) == (
        "icbc", "telegram", str(GROUP), True)

    complaint = await filing.file(risk=("media",))
    notice = await reply_to(bot_api, GROUP, 2)
    assert notice.startswith(f"【新投诉】{complaint.tracking_no}")
    assert "联系电话：138****1234" in notice and PHONE not in notice
    assert "舆情风险：提到媒体或网络曝光" in notice and "（还剩 15 天）" in notice
    [sent] = [m for m in bot_api.sent() if m["text"] == notice]
    assert sent["reply_markup"] == {"inline_keyboard": [[{
        "text": "在后台打开", "url": f"{DASHBOARD}/complaints/{complaint.tracking_no}"}]]}

    async def delivered() -> bool:
        async with service.app[SERVICES].sessions() as session:
            statuses = dict((await session.execute(
                select(Notification.queue_id, Notification.status))).all())
        return statuses["icbc"] == "delivered"

    await eventually(delivered)
    await asyncio.sleep(0.3)
    assert len(texts_to(bot_api, GROUP)) == 2  # delivered once


async def test_wrong_expired_and_reused_codes_link_nothing(service, bot_api):
    assert await link(bot_api, "ZZZZ2222") == LINK_REFUSED[links.LinkOutcome.UNKNOWN]
    bot_api.say("/link", chat=GROUP, chat_type="supergroup")
    assert await reply_to(bot_api, GROUP, 2) == LINK_USAGE
    stale = await issue(service, "icbc", utcnow() - dt.timedelta(hours=25))
    assert await link(bot_api, stale, count=3) == LINK_REFUSED[links.LinkOutcome.EXPIRED]
    assert await channels(service) == []

    code = await issue(service, "icbc")
    assert (await link(bot_api, code, count=4)).startswith("已关联")
    assert await link(bot_api, code, chat=OTHER_GROUP) == LINK_REFUSED[links.LinkOutcome.USED]
    assert [c.target for c in await channels(service)] == [str(GROUP)]


async def test_linking_again_moves_the_chat_and_linking_twice_is_harmless(service, bot_api):
    await link(bot_api, await issue(service, "icbc"))
    moved = await link(bot_api, await issue(service, "abc"), count=2)
    assert "「中国农业银行蚌埠分行」" in moved and "已不再接收「中国工商银行蚌埠分行」" in moved
    again = await link(bot_api, await issue(service, "abc"), count=3)
    assert again == "本群已经关联「中国农业银行蚌埠分行」，无需重复关联。"
    assert [(c.queue_id, c.active) for c in await channels(service)] == [
        ("icbc", False), ("abc", True)]


async def test_a_private_chat_can_be_linked_too(service, bot_api):
    code = await issue(service, "assoc-bank")
    bot_api.say(f"/link {code}")
    assert (await reply_to(bot_api, CONSUMER)).startswith("已关联：本群将收到「蚌埠市银行业协会」")
    bot_api.say("/help")  # the consumer commands still work in the same chat
    assert (await reply_to(bot_api, CONSUMER, 2)).startswith("使用方法")


# -- /queue and /unlink ---------------------------------------------------------------------
async def test_queue_lists_the_linked_queues_open_complaints_only(service, bot_api, filing):
    first = await filing.file()
    risky = await filing.file(risk=("escalation",))
    closed = await filing.file()
    elsewhere = await filing.file("abc")
    async with service.app[SERVICES].sessions() as session, session.begin():
        await session.execute(update(Complaint).where(Complaint.id == closed.id)
                              .values(status="resolved"))
    await link(bot_api, await issue(service, "icbc"))
    bot_api.say("/queue", chat=GROUP, chat_type="supergroup")
    await bot_api.wait_for(lambda: any(t.startswith("「") for t in texts_to(bot_api, GROUP)))
    [listing] = [t for t in texts_to(bot_api, GROUP) if t.startswith("「")]
    lines = listing.splitlines()
    assert lines[0] == "「中国工商银行蚌埠分行」待办投诉 2 件（按处理时限排序）："
    assert lines[1] == f"1. {first.tracking_no} · 银行卡 · 还剩 15 天"
    assert lines[2] == f"2. {risky.tracking_no} · 银行卡 · 还剩 15 天 · ⚠舆情风险"
    assert lines[-1] == f"后台：{DASHBOARD}"
    assert elsewhere.tracking_no not in listing and closed.tracking_no not in listing
    assert PHONE not in listing and "138****1234" not in listing

    bot_api.say("/queue", chat=OTHER_GROUP, chat_type="group")
    assert await reply_to(bot_api, OTHER_GROUP) == NOT_LINKED


async def test_unlink_stops_the_notifications(service, bot_api, filing):
    await link(bot_api, await issue(service, "icbc"))
    bot_api.say("/unlink", chat=GROUP, chat_type="supergroup")
    assert await reply_to(bot_api, GROUP, 2) == (
        "已取消关联：本群不再接收「中国工商银行蚌埠分行」的投诉通知。")
    assert [c.active for c in await channels(service)] == [False]
    await filing.file()

    async def attempted() -> bool:
        async with service.app[SERVICES].sessions() as session:
            note = await session.scalar(select(Notification))
        return note is not None and note.last_error == "queue icbc has no active channel"

    await eventually(attempted)
    assert len(texts_to(bot_api, GROUP)) == 2
    bot_api.say("/unlink", chat=GROUP, chat_type="supergroup")
    assert await reply_to(bot_api, GROUP, 3) == "本群没有关联任何投诉队列。"


# -- staff replies to consumers -------------------------------------------------------------
async def test_a_staff_reply_reaches_the_telegram_consumer_at_once(service, bot_api, filing):
    complaint = await filing.file(channel="telegram", user_id=str(CONSUMER))
    text = f"关于您的投诉 {complaint.tracking_no}，处理机构回复：\n已为您退还年费。"
    async with service.app[SERVICES].sessions() as session, session.begin():
        session.add(ConsumerMessage(complaint_id=complaint.id, channel="telegram",
                                    user_id=str(CONSUMER), text=text))
    assert await reply_to(bot_api, CONSUMER) == text

    async def delivered() -> bool:
        async with service.app[SERVICES].sessions() as session:
            message = await session.scalar(select(ConsumerMessage))
        return message is not None and message.delivered_at is not None

    await eventually(delivered)
    await asyncio.sleep(0.3)
    assert texts_to(bot_api, CONSUMER) == [text]
