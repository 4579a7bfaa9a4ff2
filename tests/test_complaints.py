"""Complaint intake through the real web channel: the whole guided dialogue, triage,
routing, status and withdrawal — and nothing a consumer confirmed is ever lost."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.app import create_app
from bot.complaint_drafts import DRAFT_KEY
from bot.complaint_records import parse_tracking_no
from bot.config import build_config
from bot.models import Complaint, ComplaintEvent, Conversation, Notification, utcnow
from bot.services import open_services

STORY = "上个月在工行办信用卡，说好免年费，结果被扣了300块年费，打客服也没人给个说法"
PHONE = "13800001234"  # fictitious


class Chat:
    """A consumer talking to /api/chat."""

    def __init__(self, client, user: str = "consumer-1") -> None:
        self.client = client
        self.user = user
        self.last: list[dict] = []

    async def send(self, text: str | None = None, action: str | None = None) -> str:
        body = {"user": self.user, **({"text": text} if text is not None else {"action": action})}
        response = await self.client.post("/api/chat", json=body)
        assert response.status == 200, await response.text()
        self.last = (await response.json())["replies"]
        return "\n".join(reply["text"] for reply in self.last)

    def actions(self) -> list[str]:
        return [b["action"] for reply in self.last for b in reply["buttons"]]

    async def press(self, label_part: str) -> str:
        for reply in self.last:
            for button in reply["buttons"]:
                if label_part in button["label"]:
                    return await self.send(action=button["action"])
        raise AssertionError(f"no button with {label_part!r} in {self.last}")

    async def file_until_consent(self, story: str = STORY, when: str = "最近一个月内") -> str:
        """Story, institution, date and wish: up to the question about personal data."""
        await self.send("我要投诉")
        await self.send(story)
        await self.press("对，是这家")
        await self.press(when)
        return await self.press("退款")

    async def file_until_summary(self, story: str = STORY) -> str:
        await self.file_until_consent(story)
        await self.press("同意")
        await self.send("张桂兰")
        await self.send(PHONE)
        await self.press("跳过")
        return await self.press("为我自己")


@pytest.fixture
async def client(aiohttp_client, config, knowledge_index):
    return await aiohttp_client(create_app(config, knowledge_index))


async def _drafts(client) -> list[dict]:
    """Every complaint draft held in a conversation state."""
    from bot.services import SERVICES

    async with client.app[SERVICES].sessions() as session:
        states = (await session.scalars(select(Conversation.state))).all()
    return [state[DRAFT_KEY] for state in states if DRAFT_KEY in state]


async def _age_drafts(client, age: timedelta) -> None:
    """Make every draft look untouched for `age`."""
    from bot.services import SERVICES

    async with client.app[SERVICES].sessions() as session, session.begin():
        for row in (await session.scalars(select(Conversation))).all():
            if DRAFT_KEY in row.state:
                draft = dict(row.state[DRAFT_KEY])
                draft["updated_at"] = (utcnow() - age).isoformat(timespec="microseconds")
                row.state = {**row.state, DRAFT_KEY: draft}


async def _complaints(client) -> list[Complaint]:
    from bot.services import SERVICES

    async with client.app[SERVICES].sessions() as session:
        return list((await session.scalars(select(Complaint))).all())


async def _rows(client, model) -> list:
    from bot.services import SERVICES

    async with client.app[SERVICES].sessions() as session:
        return list((await session.scalars(select(model))).all())


async def test_a_whole_complaint_lands_in_the_institutions_queue_with_a_deadline(client):
    chat = Chat(client)
    summary = await chat.file_until_summary()
    assert "中国工商银行蚌埠分行" in summary and "138****1234" in summary
    assert PHONE not in summary
    done = await chat.press("确认提交")
    tracking_no = parse_tracking_no(done)
    assert tracking_no and tracking_no.startswith("BB-")
    [complaint] = await _complaints(client)
    assert complaint.tracking_no == tracking_no
    assert complaint.queue_id == "icbc" and complaint.institution_id == "icbc"
    assert complaint.sector == "bank" and complaint.business == "bank-card"
    assert complaint.phone == PHONE and complaint.story == STORY
    assert complaint.deadline_at - complaint.received_at == timedelta(days=15)
    kinds = [e.kind for e in await _rows(client, ComplaintEvent)]
    assert kinds[:2] == ["received", "routed"]
    [note] = await _rows(client, Notification)
    assert note.queue_id == "icbc" and note.kind == "new-complaint"
    assert note.payload["phone"] == "138****1234" and PHONE not in str(note.payload)
    assert await _drafts(client) == []


async def test_back_edit_and_a_question_in_between(client):
    chat = Chat(client)
    await chat.send("我要投诉")
    await chat.send(STORY)
    await chat.press("对，是这家")
    answered = await chat.send("投诉以后机构多长时间内要给答复？")
    assert "15" in answered and "我们接着填投诉" in answered
    back = await chat.press("返回上一步")
    assert "对吗" in back  # the institution question again
    await chat.press("对，是这家")
    await chat.press("今天")
    await chat.press("道歉")
    await chat.press("同意")
    await chat.send("李四")
    await chat.send("13900001111")
    await chat.press("跳过")
    await chat.press("替家人或朋友")
    edited = await chat.send("修改 手机号")
    assert "手机号码" in edited
    summary = await chat.send(PHONE)
    assert "138****1234" in summary and "代理他人" in summary
    await chat.press("确认提交")
    [complaint] = await _complaints(client)
    assert complaint.phone == PHONE and complaint.relationship == "proxy"


async def test_cancel_deletes_the_draft(client):
    chat = Chat(client)
    await chat.file_until_summary()
    cancelled = await chat.send("取消")
    assert "已取消" in cancelled
    assert await _drafts(client) == []
    assert await _complaints(client) == []


async def test_no_consent_stores_nothing_and_says_where_else_to_complain(client):
    chat = Chat(client)
    await chat.file_until_consent(when="今天")
    refused = await chat.press("不同意")
    assert "12378" in refused and "95588" in refused
    assert await _drafts(client) == []
    assert await _complaints(client) == []


async def test_invalid_phone_and_id_numbers_are_explained_and_asked_again(client):
    chat = Chat(client)
    await chat.file_until_consent(when="今天")
    await chat.press("同意")
    await chat.send("王五")
    assert "11位" in await chat.send("1380000")
    await chat.send(PHONE)
    assert "校验不通过" in await chat.send("110105199001011235")
    assert "18位" in await chat.send("12345")
    valid = _valid_id("11010519900101123")
    assert "为自己投诉" in await chat.send(valid)
    summary = await chat.press("为我自己")
    assert f"{valid[:6]}********{valid[-4:]}" in summary


def _valid_id(first17: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(d) * w for d, w in zip(first17, weights, strict=True))
    return first17 + "10X98765432"[total % 11]


async def test_the_same_story_from_several_consumers_is_flagged_as_possibly_agent_led(client):
    for user in ("consumer-1", "consumer-2", "consumer-3"):
        chat = Chat(client, user)
        await chat.file_until_summary()
        await chat.press("确认提交")
    first, second, third = sorted(await _complaints(client), key=lambda c: c.id)
    assert not any("几乎一样" in reason for reason in first.agent_reasons)
    assert "与近期1件投诉的内容几乎一样" in second.agent_reasons
    assert "与近期2件投诉的内容几乎一样" in third.agent_reasons
    assert third.agent_led


async def test_confirming_twice_creates_one_record(client):
    chat = Chat(client)
    await chat.file_until_summary()
    first = await chat.press("确认提交")
    again = await chat.send(action="cx:confirm")
    assert "已经提交过了" in again
    assert parse_tracking_no(first) == parse_tracking_no(again)
    assert len(await _complaints(client)) == 1


async def test_a_double_click_racing_itself_creates_one_record(client):
    chat = Chat(client)
    await chat.file_until_summary()
    results = await asyncio.gather(*(chat.send(action="cx:confirm") for _ in range(3)))
    numbers = {parse_tracking_no(text) for text in results}
    assert len(numbers) == 1 and None not in numbers
    assert len(await _complaints(client)) == 1


async def test_a_restart_mid_dialogue_resumes_the_same_draft(config, knowledge_index,
                                                             aiohttp_client):
    first = await aiohttp_client(create_app(config, knowledge_index))
    chat = Chat(first, user="restart-user")
    await chat.send("我要投诉")
    await chat.send(STORY)
    await chat.press("对，是这家")
    await first.close()
    second = await aiohttp_client(create_app(config, knowledge_index))
    chat.client = second
    resumed = await chat.press("今天") if chat.last else ""
    assert "怎么解决" in resumed  # the next question of the same draft


async def test_an_idle_draft_is_offered_for_resumption(client):

    chat = Chat(client)
    await chat.send("我要投诉")
    await chat.send(STORY)
    await _age_drafts(client, timedelta(minutes=45))
    offer = await chat.send("最近一周")
    assert "还没填完的投诉" in offer
    resumed = await chat.press("接着填")
    assert "对吗" in resumed


async def test_drafts_of_users_gone_quiet_are_purged_after_seven_days(
        aiohttp_client, database_url, knowledge_index):
    config = build_config({"database": {"url": database_url}}, environ={})
    services = await open_services(config, knowledge_index)
    client = await aiohttp_client(create_app(config, knowledge_index))
    await Chat(client, "old").file_until_consent()
    await _age_drafts(client, timedelta(days=8))
    await Chat(client, "recent").file_until_consent()
    await client.close()
    async with services.sessions() as session:
        before = await session.get(Conversation, ("web", "old"))
        version = before.version
    await services.close()
    reopened = await open_services(config, knowledge_index)  # start-up purges
    async with reopened.sessions() as session:
        old = await session.get(Conversation, ("web", "old"))
        recent = await session.get(Conversation, ("web", "recent"))
    await reopened.close()
    assert DRAFT_KEY not in old.state and old.state["turns"] == 5  # the rest stays
    assert old.version == version + 1  # a turn that read it before must not write it back
    assert recent.state[DRAFT_KEY]["data"]["values"]["wish"]


async def test_an_expired_draft_is_dropped_at_the_next_message_whatever_it_is(client):
    chat = Chat(client)
    await chat.file_until_consent()
    await chat.send("菜单")  # leaves the dialogue; the draft stays for later
    await _age_drafts(client, timedelta(days=8))
    await chat.send("信用卡年费能退吗？")
    assert await _drafts(client) == []
    resumed = await chat.send("我要投诉")
    assert "还没填完" not in resumed


async def test_a_story_of_5000_characters_is_kept_whole(client):
    story = ("我在建行存的钱被转走了，" * 500)[:5000]
    chat = Chat(client)
    await chat.file_until_summary(story=story)
    await chat.press("确认提交")
    [complaint] = await _complaints(client)
    assert complaint.story == story and len(story) == 5000


async def test_a_complaint_naming_no_institution_goes_to_the_association(client):
    chat = Chat(client)
    await chat.send("我要投诉")
    await chat.send("有个业务员上门推销理财，说保本高收益，钱交了现在找不到人了")
    asked = chat.actions()
    assert "cx:set:institution:assoc-bank" in asked
    await chat.press("不清楚是哪家银行")
    await chat.press("一个月以前")
    await chat.press("退款")
    await chat.press("同意")
    await chat.send("赵六")
    await chat.send(PHONE)
    await chat.press("跳过")
    await chat.press("为我自己")
    await chat.press("确认提交")
    [complaint] = await _complaints(client)
    assert complaint.institution_id is None and complaint.queue_id == "assoc-bank"


async def test_an_ambiguous_name_is_resolved_from_the_story_or_asked(client):
    chat = Chat(client)
    await chat.send("我要投诉")
    await chat.send("保险公司拖着不给理赔，已经三个月了")
    await chat.send("平安")
    assert {"cx:set:institution:pingan-life", "cx:set:institution:pingan-pc"} <= set(
        chat.actions())
    other = Chat(client, user="consumer-2")
    await other.send("我要投诉")
    await other.send("车被追尾了，车险理赔拖了三个月还没赔")
    await other.press("不是，换一家") if "不是，换一家" in str(other.last) else None
    after = await other.send("平安")
    assert "什么时候发生" in after


async def test_risky_complaints_also_alert_the_association_as_urgent(client):
    chat = Chat(client)
    await chat.file_until_summary(
        story="工行乱扣我年费，投诉了三次都没人管，再不处理我就找记者曝光，还要去金融监管局")
    await chat.press("确认提交")
    [complaint] = await _complaints(client)
    assert complaint.risk and {"media", "escalation"} <= set(complaint.risk_reasons)
    notes = {(n.queue_id, n.kind) for n in await _rows(client, Notification)}
    assert notes == {("icbc", "new-complaint"), ("assoc-bank", "urgent-risk")}


async def test_status_is_shown_only_to_the_filer_or_after_phone_verification(client):
    chat = Chat(client)
    await chat.file_until_summary()
    tracking_no = parse_tracking_no(await chat.press("确认提交"))
    mine = await chat.send(f"查进度 {tracking_no}")
    assert "已受理" in mine and "处理时限" in mine
    stranger = Chat(client, user="someone-else")
    asked = await stranger.send(f"查进度 {tracking_no.lower().replace('-', '')}")
    assert "后四位" in asked and "已受理" not in asked
    assert "不对" in await stranger.send("0000")
    shown = await stranger.send("1234")
    assert tracking_no in shown and "已受理" in shown


async def test_three_wrong_tries_end_the_verification(client):
    chat = Chat(client)
    await chat.file_until_summary()
    tracking_no = parse_tracking_no(await chat.press("确认提交"))
    stranger = Chat(client, user="guesser")
    await stranger.send(f"查进度 {tracking_no}")
    for guess in ("1111", "2222"):
        await stranger.send(guess)
    assert "核对没有通过" in await stranger.send("3333")
    assert "已受理" not in await stranger.send("1234")


async def test_withdrawal_is_recorded_not_deleted(client):
    chat = Chat(client)
    await chat.file_until_summary()
    tracking_no = parse_tracking_no(await chat.press("确认提交"))
    await chat.send(action=f"status:{tracking_no}")
    await chat.press("撤回投诉")
    done = await chat.press("确定撤回")
    assert "已撤回" in done
    [complaint] = await _complaints(client)
    assert complaint.status == "withdrawn"
    assert "withdrawn" in [e.kind for e in await _rows(client, ComplaintEvent)]
    stranger = Chat(client, user="other")
    denied = await stranger.send(action=f"withdraw-yes:{tracking_no}")
    assert "只有投诉人本人" in denied


async def test_personal_data_never_reaches_the_logs(client, caplog):
    caplog.set_level(logging.INFO)
    for ours in ("bot", "handlers", "knowledge", "classifiers", "sqlalchemy"):
        caplog.set_level(logging.DEBUG, logger=ours)
    chat = Chat(client)
    await chat.file_until_summary()
    await chat.press("确认提交")
    assert PHONE not in caplog.text and "张桂兰" not in caplog.text


async def test_the_whole_dialogue_works_in_the_terminal(services):
    from handlers.terminal import run_chat

    lines = iter(["我要投诉", STORY, "1", "今天", "退款", "同意", "张桂兰", PHONE, "跳过",
                  "本人", "1", "q"])
    shown: list[str] = []
    await run_chat(services.chat, "term-user", read=lambda _p: next(lines), write=shown.append)
    transcript = "\n".join(shown)
    assert "投诉已提交" in transcript and parse_tracking_no(transcript)


@pytest.fixture
async def client_on_each_database(aiohttp_client, database_url, knowledge_index):
    config = build_config({"database": {"url": database_url}}, environ={})
    return await aiohttp_client(create_app(config, knowledge_index))


async def test_a_staff_reply_is_shown_at_the_consumers_next_message(client_on_each_database):
    """The turn that shows it also marks it delivered, in the same transaction as the
    user's state (on PostgreSQL an ORM session joins the turn's transaction)."""
    from bot.models import ConsumerMessage
    from bot.services import SERVICES

    client = client_on_each_database
    chat = Chat(client)
    await chat.file_until_summary()
    tracking_no = parse_tracking_no(await chat.press("确认提交"))
    [complaint] = await _complaints(client)
    async with client.app[SERVICES].sessions() as session, session.begin():
        session.add(ConsumerMessage(complaint_id=complaint.id, channel="web",
                                    user_id=chat.user, text="您好，年费已为您退回。"))
    first = await chat.send("你好")
    assert "年费已为您退回" in first and tracking_no in first
    again = await chat.send("你好")
    assert "年费已为您退回" not in again  # shown once
