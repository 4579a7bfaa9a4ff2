"""The notification outbox end to end: real databases, real senders, local stand-ins.

Complaints are filed with `bot.complaint_records.file_complaint`, which writes the outbox
rows; the dispatcher then delivers them to stand-ins on 127.0.0.1 — a WeCom group robot
(an aiohttp server that records posts and can be told to fail), the Telegram Bot API
stand-in of `tests/test_telegram.py` driven by the real python-telegram-bot client, and an
SMTP server (`aiosmtpd`).  Most tests drive `Dispatcher.run_once` under a fake clock, so
retries and backoff are exact and instant; the claim logic runs on SQLite and on
PostgreSQL.  All data is fictitious.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import itertools
import random
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder

from bot import cli, db
from bot.complaint_records import Submission, file_complaint, withdraw
from bot.config import ConfigError, NotificationsConfig, build_config
from bot.models import (
    Complaint,
    ConsumerMessage,
    Notification,
    NotificationAttempt,
    QueueChannel,
    as_utc,
    utcnow,
)
from bot.notifications import outbox
from bot.notifications.channels import (
    DeliveryError,
    SmtpMail,
    TelegramChat,
    WecomRobot,
    message_id,
    wecom_key,
)
from bot.notifications.dispatcher import Dispatcher
from bot.notifications.queues import sync_static_channels
from bot.notifications.render import Labels, render
from bot.notifications.service import telegram_push
from classifiers.institutions import Directory
from tests.test_telegram import TOKEN, BotApi

PHONE = "13800001234"  # fictitious
ID_NUMBER = "34030219800101123X"  # fictitious
STORY = "上个月在工行办信用卡，说好免年费，结果被扣了300块年费，客服电话13800001234也打不通"
DASHBOARD = "https://xiaobao.example.org/staff"
ROBOT_KEY = "robot-key-0001-icbc"
OTHER_ROBOT_KEY = "robot-key-0002-abc"
MAILBOX = "complaints@icbc.example.com"
STAFF_CHAT = -1005550001
START = dt.datetime(2026, 11, 2, 1, 0, tzinfo=dt.UTC)


# -- stand-ins ------------------------------------------------------------------------------
@dataclass
class RobotPost:
    """One post a WeCom robot accepted."""

    key: str
    content: str


@dataclass
class WecomApi:
    """A local stand-in for WeCom's group-robot webhook."""

    base_url: str = ""
    posts: list[RobotPost] = field(default_factory=list)
    requests: int = 0
    delay: float = 0.0
    _answers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/cgi-bin/webhook/send", self._send)
        return app

    def fail_next(self, times: int, status: int = 500) -> None:
        """The next posts fail with an HTTP error."""
        self._answers += [(status, {"errcode": -1, "errmsg": "system error"})] * times

    def rate_limit_next(self, times: int) -> None:
        """The next posts are refused with errcode 45009 (over 20 a minute)."""
        self._answers += [(200, {"errcode": 45009, "errmsg": "api freq out of limit, "
                                 f"hint: [{ROBOT_KEY}]"})] * times

    async def _send(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.json()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self._answers:
            status, answer = self._answers.pop(0)
            return web.json_response(answer, status=status)
        assert body["msgtype"] == "markdown"
        self.posts.append(RobotPost(request.query["key"], body["markdown"]["content"]))
        return web.json_response({"errcode": 0, "errmsg": "ok"})


@dataclass
class MailServer:
    """An aiosmtpd handler that keeps what it is sent, and can refuse for a while."""

    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        if self.refusals:
            return self.refusals.pop(0)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 OK"

    def authenticate(self, server: SMTP, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"s3cret-pass"
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 235 or 535


class FakeClock:
    """The dispatcher's clock, moved by hand."""

    def __init__(self, start: dt.datetime = START) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
async def wecom(aiohttp_server) -> WecomApi:
    api = WecomApi()
    server = await aiohttp_server(api.application(), host="127.0.0.1")
    api.base_url = str(server.make_url(""))
    return api


async def start_mail_server(handler: MailServer, **options: Any) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="mail.example.org", **options), "127.0.0.1", 0)
    handler.port = server.sockets[0].getsockname()[1]
    return server


@pytest.fixture
async def mail() -> AsyncIterator[MailServer]:
    handler = MailServer()
    server = await start_mail_server(handler)
    yield handler
    server.close()
    await server.wait_closed()


@pytest.fixture
async def bot_api(aiohttp_server) -> BotApi:
    api = BotApi()
    server = await aiohttp_server(api.application(), host="127.0.0.1")
    api.base_url = str(server.make_url("/bot"))
    return api


async def telegram_application(bot_api: BotApi, max_retries: int = 0) -> Application:
    application = (ApplicationBuilder().token(TOKEN).base_url(bot_api.base_url)
                   .rate_limiter(AIORateLimiter(max_retries=max_retries)).updater(None).build())
    await application.initialize()
    return application


@pytest.fixture
async def telegram(bot_api) -> AsyncIterator[Application]:
    application = await telegram_application(bot_api)
    yield application
    await application.shutdown()


# -- data -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def directory() -> Directory:
    return Directory.load()


@pytest.fixture(scope="module")
def labels(directory) -> Labels:
    return Labels.load(directory)


async def open_database(url: str) -> Any:
    await db.upgrade(url)
    return db.create_engine(url)


@pytest.fixture
async def sessions(sqlite_url) -> AsyncIterator[Any]:
    engine = await open_database(sqlite_url)
    yield db.create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def any_sessions(database_url) -> AsyncIterator[Any]:
    """Sessions on SQLite and (when available) PostgreSQL: for the claim logic."""
    engine = await open_database(database_url)
    yield db.create_sessionmaker(engine)
    await engine.dispose()


class Complaints:
    """Files fictitious complaints the way the dialogue does."""

    def __init__(self, sessions: Any, directory: Directory, clock: FakeClock) -> None:
        self.sessions = sessions
        self.directory = directory
        self.clock = clock
        self.rng = random.Random(2611)
        self.numbers = itertools.count(1)

    async def file(self, queue_id: str = "icbc", *, risk: tuple[str, ...] = (),
                   channel: str = "web", user_id: str = "consumer-1") -> Complaint:
        queue = self.directory.get(queue_id)
        assert queue is not None
        number = next(self.numbers)
        submission = Submission(
            channel=channel, user_id=user_id, confirmation_key=f"test:{number}", queue=queue,
            institution=None if queue.is_association else queue,
            sector="bank" if queue.is_association else queue.sector,
            business="bank-card", cause="fees", story=f"{STORY}（第{number}件）",
            occurred="上个月", wish="退还年费", name="张测试", phone=PHONE, id_number=ID_NUMBER,
            relationship="self", consent_at=self.clock(), risk_reasons=risk, agent_reasons=(),
        )
        async with self.sessions() as session, session.begin():
            return await file_complaint(session, submission, self.directory, "BB", DASHBOARD,
                                        self.rng, now=self.clock())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def complaints(sessions, directory, clock) -> Complaints:
    return Complaints(sessions, directory, clock)


async def add_channel(sessions: Any, kind: str, target: str, queue_id: str = "icbc",
                      active: bool = True) -> int:
    async with sessions() as session, session.begin():
        channel = QueueChannel(queue_id=queue_id, kind=kind, target=target, active=active)
        session.add(channel)
        await session.flush()
        return channel.id


def robot_url(key: str = ROBOT_KEY) -> str:
    return f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={key}"


def settings(wecom: WecomApi | None = None, mail: MailServer | None = None,
             **overrides: Any) -> NotificationsConfig:
    values: dict[str, Any] = {
        "poll_seconds": 0.05, "max_attempts": 5, "backoff_base_seconds": 10.0,
        "backoff_max_seconds": 300.0, "send_timeout_seconds": 5.0,
        "smtp_host": "127.0.0.1", "smtp_starttls": False, "smtp_from": "xiaobao@example.org",
    }
    if wecom is not None:
        values["wecom_base_url"] = wecom.base_url
    if mail is not None:
        values["smtp_port"] = mail.port
    return NotificationsConfig(**{**values, **overrides})


def make_dispatcher(sessions: Any, config: NotificationsConfig, labels: Labels,
                    clock: FakeClock, wecom_http: Any = None,
                    telegram: Application | None = None, **options: Any) -> Dispatcher:
    senders: dict[str, Any] = {
        "email": SmtpMail(host=config.smtp_host, port=config.smtp_port,
                          sender=config.smtp_from, starttls=config.smtp_starttls,
                          timeout=config.send_timeout_seconds),
    }
    if wecom_http is not None:
        senders["wecom"] = WecomRobot(wecom_http, config.wecom_base_url,
                                      config.send_timeout_seconds)
    if telegram is not None:
        senders["telegram"] = TelegramChat(telegram.bot)
    return Dispatcher(sessions, config, senders, labels, clock=clock, rng=random.Random(7),
                      **options)


@pytest.fixture
async def http() -> AsyncIterator[Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        yield session


async def rows(sessions: Any, model: Any, *criteria: Any) -> list[Any]:
    async with sessions() as session:
        return list((await session.scalars(select(model).where(*criteria)
                                           .order_by(model.id))).all())


async def drain(dispatcher: Dispatcher, clock: FakeClock, rounds: int = 40,
                step: float = 30.0) -> None:
    """Run rounds, moving the clock on between them, until nothing is left to deliver."""
    for _ in range(rounds):
        await dispatcher.run_once()
        async with dispatcher.sessions() as session:
            left = await session.scalar(select(func.count(Notification.id)).where(
                Notification.status.in_([outbox.PENDING, outbox.SENDING])))
        if not left:
            return
        clock.advance(step)
    raise AssertionError("notifications still undelivered")


def telegram_texts(bot_api: BotApi, chat: int = STAFF_CHAT) -> list[str]:
    return [m["text"] for m in bot_api.sent() if m["chat_id"] == chat]


# -- delivery to every kind of channel ------------------------------------------------------
async def test_a_new_complaint_reaches_wecom_telegram_and_email_masked_and_linked(
    sessions, complaints, labels, clock, wecom, mail, bot_api, telegram, http
):
    await add_channel(sessions, "wecom", robot_url())
    await add_channel(sessions, "telegram", str(STAFF_CHAT))
    await add_channel(sessions, "email", MAILBOX)
    complaint = await complaints.file(risk=("media",))
    dispatcher = make_dispatcher(sessions, settings(wecom, mail), labels, clock, http, telegram)

    assert await dispatcher.run_once() == 2  # and the urgent copy for the association

    [note] = await rows(sessions, Notification, Notification.queue_id == "icbc")
    assert note.status == outbox.DELIVERED and note.attempts == 1
    attempts = await rows(sessions, NotificationAttempt,
                          NotificationAttempt.notification_id == note.id)
    assert len(attempts) == 3 and all(a.ok for a in attempts)
    link = f"{DASHBOARD}/complaints/{complaint.tracking_no}"
    # WeCom: markdown with the reference line and a link.
    [post] = wecom.posts
    assert post.key == ROBOT_KEY
    assert f"**【新投诉】{complaint.tracking_no}**" in post.content
    assert "中国工商银行蚌埠分行" in post.content and "银行卡" in post.content
    assert "提到媒体或网络曝光" in post.content and "138＊＊＊＊1234" in post.content
    assert f"[在后台打开]({link})" in post.content
    assert f"通知编号：complaint:{complaint.id}:new" in post.content
    # Telegram: plain text and an inline URL button to the dashboard.
    [message] = [m for m in bot_api.sent() if m["chat_id"] == STAFF_CHAT]
    assert message["text"].startswith(f"【新投诉】{complaint.tracking_no}")
    assert "联系电话：138****1234" in message["text"] and "收费与定价" in message["text"]
    assert message["reply_markup"] == {"inline_keyboard": [[{"text": "在后台打开",
                                                             "url": link}]]}
    # E-mail: the idempotency key as Message-ID and as a header.
    [sent] = mail.messages
    assert sent["To"] == MAILBOX and sent["From"] == "xiaobao@example.org"
    assert sent["Subject"] == f"【新投诉】{complaint.tracking_no} 中国工商银行蚌埠分行"
    assert sent["X-Xiaobao-Notification"] == f"complaint:{complaint.id}:new"
    assert sent["Message-ID"] == message_id(f"complaint:{complaint.id}:new", MAILBOX,
                                            "xiaobao@example.org")
    body = sent.get_content()
    assert link in body and "138****1234" in body
    # Nothing delivered anywhere carries the phone, the ID number or the story.
    for text in (post.content, message["text"], body, sent["Subject"]):
        assert PHONE not in text and ID_NUMBER not in text and "免年费" not in text


async def test_the_urgent_copy_goes_to_the_association_queue(
    sessions, complaints, labels, clock, wecom, http
):
    await add_channel(sessions, "wecom", robot_url(), queue_id="icbc")
    await add_channel(sessions, "wecom", robot_url(OTHER_ROBOT_KEY), queue_id="assoc-bank")
    complaint = await complaints.file(risk=("gathering",))
    await make_dispatcher(sessions, settings(wecom), labels, clock, http).run_once()
    by_key = {post.key: post.content for post in wecom.posts}
    assert f"【新投诉】{complaint.tracking_no}" in by_key[ROBOT_KEY]
    assert f"【紧急：有舆情风险的投诉】{complaint.tracking_no}" in by_key[OTHER_ROBOT_KEY]
    assert "提到聚集、集体维权或上访" in by_key[OTHER_ROBOT_KEY]


async def test_a_withdrawal_notice_is_delivered_too(sessions, complaints, labels, clock,
                                                    wecom, http):
    await add_channel(sessions, "wecom", robot_url())
    complaint = await complaints.file()
    async with sessions() as session, session.begin():
        await withdraw(session, await session.get(Complaint, complaint.id), "consumer",
                       clock())
    await make_dispatcher(sessions, settings(wecom), labels, clock, http).run_once()
    assert [p.content.splitlines()[0] for p in wecom.posts] == [
        f"**【新投诉】{complaint.tracking_no}**", f"**【投诉已撤回】{complaint.tracking_no}**"]


# -- failures, retries, exactly once ---------------------------------------------------------
async def test_a_stand_in_failing_for_a_while_gets_everything_once_it_recovers(
    any_sessions, directory, labels, clock, wecom, mail, bot_api, telegram, http
):
    sessions = any_sessions
    await add_channel(sessions, "wecom", robot_url())
    await add_channel(sessions, "telegram", str(STAFF_CHAT))
    await add_channel(sessions, "email", MAILBOX)
    filing = Complaints(sessions, directory, clock)
    filed = [await filing.file() for _ in range(3)]
    wecom.fail_next(7)
    mail.refusals += ["451 4.3.0 Try again later"] * 2
    dispatcher = make_dispatcher(sessions, settings(wecom, mail), labels, clock, http,
                                 telegram)

    await dispatcher.run_once()
    notes = await rows(sessions, Notification)
    assert [n.status for n in notes] == [outbox.PENDING] * 3
    assert all(n.next_attempt_at is not None for n in notes)
    await drain(dispatcher, clock)

    references = [f"complaint:{c.id}:new" for c in filed]
    posted = Counter(line.split("：")[1].removesuffix("</font>")
                     for p in wecom.posts for line in p.content.splitlines()
                     if "通知编号" in line)
    assert posted == Counter(references)
    assert wecom.requests == 7 + 3
    assert sorted(m["X-Xiaobao-Notification"] for m in mail.messages) == sorted(references)
    assert len(telegram_texts(bot_api)) == 3  # sent in the first round, never again
    notes = await rows(sessions, Notification)
    assert all(n.status == outbox.DELIVERED and n.last_error is None for n in notes)
    ok = await rows(sessions, NotificationAttempt, NotificationAttempt.ok.is_(True))
    assert len(ok) == 9
    failed = await rows(sessions, NotificationAttempt, NotificationAttempt.ok.is_(False))
    assert Counter(a.error for a in failed) == {"WeCom HTTP 500": 7, "SMTP 451": 2}


async def test_retries_back_off_exponentially_with_jitter(sessions, complaints, labels,
                                                          clock, wecom, http):
    await add_channel(sessions, "wecom", robot_url())
    await complaints.file()
    wecom.fail_next(4)
    dispatcher = make_dispatcher(sessions, settings(wecom, backoff_base_seconds=10.0,
                                                    backoff_max_seconds=50.0),
                                 labels, clock, http)
    delays = []
    for _ in range(4):
        await dispatcher.run_once()
        [note] = await rows(sessions, Notification)
        delay = (as_utc(note.next_attempt_at) - clock()).total_seconds()
        delays.append(delay)
        clock.advance(delay)
    for attempt, delay in enumerate(delays, 1):
        full = min(50.0, 10.0 * 2 ** (attempt - 1))
        assert full / 2 <= delay <= full
    await dispatcher.run_once()
    [note] = await rows(sessions, Notification)
    assert note.status == outbox.DELIVERED and note.attempts == 5 and len(wecom.posts) == 1


async def test_wecom_45009_waits_a_minute_and_posts_once(sessions, complaints, labels, clock,
                                                         wecom, http):
    await add_channel(sessions, "wecom", robot_url())
    await complaints.file()
    wecom.rate_limit_next(1)
    dispatcher = make_dispatcher(sessions, settings(wecom, backoff_base_seconds=2.0),
                                 labels, clock, http)
    await dispatcher.run_once()
    [note] = await rows(sessions, Notification)
    assert note.status == outbox.PENDING and note.last_error == "WeCom errcode 45009 (rate limited)"
    assert as_utc(note.next_attempt_at) >= clock() + dt.timedelta(seconds=60)
    assert ROBOT_KEY not in note.last_error
    clock.advance(30)
    await dispatcher.run_once()
    assert wecom.requests == 1 and not wecom.posts
    clock.advance(31)
    await dispatcher.run_once()
    assert len(wecom.posts) == 1
    [note] = await rows(sessions, Notification)
    assert note.status == outbox.DELIVERED


async def test_a_robot_gets_at_most_its_per_minute_limit(sessions, complaints, labels, clock,
                                                         wecom, mail, http):
    await add_channel(sessions, "wecom", robot_url())
    await add_channel(sessions, "email", MAILBOX)
    # A second queue posting to the same robot shares its budget.
    await add_channel(sessions, "wecom", ROBOT_KEY, queue_id="abc")
    for _ in range(4):
        await complaints.file()
    await complaints.file("abc")
    dispatcher = make_dispatcher(sessions, settings(wecom, mail, wecom_per_minute=3),
                                 labels, clock, http)
    await dispatcher.run_once()
    assert len(wecom.posts) == 3 and len(mail.messages) == 4
    waiting = await rows(sessions, Notification, Notification.status == outbox.PENDING)
    assert len(waiting) == 2
    # Waiting for the robot's budget is no failure; a row that only waited used no attempt.
    assert [(n.queue_id, n.attempts, n.last_error) for n in waiting] == [
        ("icbc", 1, None), ("abc", 0, None)]
    assert all(as_utc(n.next_attempt_at) == clock() + dt.timedelta(minutes=1)
               for n in waiting)
    clock.advance(59)
    await dispatcher.run_once()
    assert len(wecom.posts) == 3
    clock.advance(1)
    await dispatcher.run_once()
    assert len(wecom.posts) == 5 and len(mail.messages) == 4
    assert {n.status for n in await rows(sessions, Notification)} == {outbox.DELIVERED}


@pytest.mark.filterwarnings("ignore:.*attribute `retry_after` will be")
async def test_telegram_429_is_waited_out_by_the_rate_limiter(sessions, complaints, labels,
                                                              clock, bot_api):
    application = await telegram_application(bot_api, max_retries=2)
    try:
        await add_channel(sessions, "telegram", str(STAFF_CHAT))
        await complaints.file()
        bot_api.refuse_next("sendMessage", 429, "Too Many Requests: retry after 1",
                            retry_after=1)
        await make_dispatcher(sessions, settings(), labels, clock,
                              telegram=application).run_once()
    finally:
        await application.shutdown()
    refused, accepted = bot_api.called("sendMessage")
    assert (refused.status, accepted.status) == (429, 200)
    assert accepted.at - refused.at >= 1.0
    [note] = await rows(sessions, Notification)
    assert note.status == outbox.DELIVERED and note.attempts == 1


async def test_telegram_429_beyond_the_limiter_delays_the_retry_by_retry_after(
    sessions, complaints, labels, clock, bot_api, telegram, wecom, http
):
    await add_channel(sessions, "telegram", str(STAFF_CHAT))
    await add_channel(sessions, "wecom", robot_url())
    await complaints.file()
    bot_api.refuse_next("sendMessage", 429, "Too Many Requests: retry after 120",
                        retry_after=120)
    dispatcher = make_dispatcher(sessions, settings(wecom, backoff_base_seconds=1.0),
                                 labels, clock, http, telegram)
    with pytest.warns(Warning, match="retry_after"):  # python-telegram-bot's own warning
        await dispatcher.run_once()
    [note] = await rows(sessions, Notification)
    assert note.status == outbox.PENDING and note.last_error == "Telegram 429"
    assert as_utc(note.next_attempt_at) >= clock() + dt.timedelta(seconds=120)
    clock.advance(119)
    await dispatcher.run_once()
    assert len(bot_api.called("sendMessage")) == 1
    clock.advance(2)
    await dispatcher.run_once()
    assert len(telegram_texts(bot_api)) == 1 and len(wecom.posts) == 1


async def test_dead_after_max_attempts_then_retry_dead_delivers_once(
    sessions, sqlite_url, complaints, labels, clock, wecom, mail, http, capsys
):
    await add_channel(sessions, "wecom", robot_url())
    await add_channel(sessions, "email", MAILBOX)
    complaint = await complaints.file()
    wecom.fail_next(3)
    dispatcher = make_dispatcher(sessions, settings(wecom, mail, max_attempts=3), labels,
                                 clock, http)
    await drain_until(dispatcher, clock, outbox.DEAD)
    [note] = await rows(sessions, Notification)
    assert note.status == outbox.DEAD and note.attempts == 3
    assert note.last_error == "WeCom HTTP 500"

    config_file = Path(sqlite_url.removeprefix("sqlite:///")).with_name("config.toml")
    config_file.write_text(f'[database]\nurl = "{sqlite_url}"\n', encoding="utf-8")
    assert await asyncio.to_thread(cli.main, ["--config", str(config_file), "notifications",
                                              "status"]) == 0
    shown = capsys.readouterr().out
    assert "dead 1" in shown and "delivered 0" in shown
    assert (f"#{note.id} new-complaint queue icbc {complaint.tracking_no} after 3 attempts: "
            "WeCom HTTP 500") in shown
    assert PHONE not in shown and "138****1234" not in shown and ROBOT_KEY not in shown
    assert await asyncio.to_thread(cli.main, ["--config", str(config_file), "notifications",
                                              "retry-dead"]) == 0
    assert "1 dead notification(s) queued again" in capsys.readouterr().out
    [note] = await rows(sessions, Notification)
    assert note.status == outbox.PENDING and note.attempts == 0

    clock.now = utcnow() + dt.timedelta(seconds=1)  # retry-dead makes rows due "now"
    await dispatcher.run_once()
    [note] = await rows(sessions, Notification)
    assert note.status == outbox.DELIVERED
    assert len(wecom.posts) == 1 and len(mail.messages) == 1  # e-mail was never re-sent


async def drain_until(dispatcher: Dispatcher, clock: FakeClock, status: str) -> None:
    for _ in range(20):
        await dispatcher.run_once()
        async with dispatcher.sessions() as session:
            if await session.scalar(select(func.count(Notification.id))
                                    .where(Notification.status == status)):
                return
        clock.advance(400)
    raise AssertionError(f"no notification became {status}")


async def test_a_queue_without_channels_retries_until_one_is_added(sessions, complaints,
                                                                   labels, clock, wecom, http):
    await complaints.file()
    dispatcher = make_dispatcher(sessions, settings(wecom), labels, clock, http)
    await dispatcher.run_once()
    [note] = await rows(sessions, Notification)
    assert note.status == outbox.PENDING and note.last_error == "queue icbc has no active channel"
    [attempt] = await rows(sessions, NotificationAttempt)
    assert attempt.queue_channel_id is None and not attempt.ok
    await add_channel(sessions, "wecom", robot_url())
    await drain(dispatcher, clock)
    assert len(wecom.posts) == 1


async def test_paused_channels_are_skipped_and_duplicates_post_once(
    sessions, complaints, labels, clock, wecom, mail, http
):
    await add_channel(sessions, "wecom", robot_url())
    await add_channel(sessions, "wecom", ROBOT_KEY)  # the same robot, by its bare key
    await add_channel(sessions, "email", MAILBOX.upper())
    await add_channel(sessions, "email", MAILBOX)
    await add_channel(sessions, "email", "paused@icbc.example.com", active=False)
    await complaints.file()
    await make_dispatcher(sessions, settings(wecom, mail), labels, clock, http).run_once()
    assert len(wecom.posts) == 1
    assert [m["To"] for m in mail.messages] == [MAILBOX.upper()]


async def test_a_channel_kind_that_is_off_is_recorded_and_retried(sessions, complaints,
                                                                  labels, clock):
    await add_channel(sessions, "telegram", str(STAFF_CHAT))
    await complaints.file()
    await make_dispatcher(sessions, settings(), labels, clock).run_once()
    [note] = await rows(sessions, Notification)
    assert note.status == outbox.PENDING
    assert note.last_error == "telegram channel is off in this service"


# -- claims ---------------------------------------------------------------------------------
async def test_two_dispatchers_racing_send_each_row_exactly_once(
    database_url, directory, labels, clock, wecom, http
):
    engines = [await open_database(database_url), db.create_engine(database_url)]
    try:
        first, second = (db.create_sessionmaker(engine) for engine in engines)
        await add_channel(first, "wecom", robot_url())
        filing = Complaints(first, directory, clock)
        filed = [await filing.file() for _ in range(24)]
        wecom.delay = 0.005  # let the two workers interleave
        config = settings(wecom, wecom_per_minute=1000)
        workers = [make_dispatcher(s, config, labels, clock, http, batch_size=3)
                   for s in (first, second)]

        async def work(dispatcher: Dispatcher) -> int:
            return sum([await dispatcher.run_once() for _ in range(20)])

        claimed = await asyncio.gather(*(work(w) for w in workers))
        assert sum(claimed) == 24 and min(claimed) > 0  # both took part
        references = Counter(line for p in wecom.posts for line in p.content.splitlines()
                             if "通知编号" in line)
        assert len(wecom.posts) == 24 and wecom.requests == 24
        assert set(references.values()) == {1}
        assert {r.status for r in await rows(first, Notification)} == {outbox.DELIVERED}
        assert len(filed) == 24
    finally:
        for engine in engines:
            await engine.dispose()


async def test_an_expired_lease_returns_the_row_and_the_old_worker_changes_nothing(
    any_sessions, directory, labels, clock, wecom, http
):
    sessions = any_sessions
    await add_channel(sessions, "wecom", robot_url())
    await Complaints(sessions, directory, clock).file()
    config = settings(wecom, lease_seconds=60.0)
    async with sessions() as session, session.begin():
        [stale] = await outbox.claim_due(session, clock(), outbox.after(clock(), 60), 10)
    dispatcher = make_dispatcher(sessions, config, labels, clock, http)
    assert await dispatcher.run_once() == 0  # held by the (stopped) first worker
    clock.advance(61)
    assert await dispatcher.run_once() == 1
    assert len(wecom.posts) == 1
    async with sessions() as session, session.begin():
        assert not await outbox.mark_dead(session, stale, 9, clock(), "too late")
    [note] = await rows(sessions, Notification)
    assert note.status == outbox.DELIVERED and note.last_error is None


async def test_claims_take_due_rows_only_oldest_first(any_sessions, directory, clock):
    sessions = any_sessions
    filing = Complaints(sessions, directory, clock)
    early = await filing.file()
    clock.advance(10)
    late = await filing.file()
    async with sessions() as session, session.begin():
        claims = await outbox.claim_due(session, clock() - dt.timedelta(seconds=5),
                                        outbox.after(clock(), 60), 10)
    assert [c.payload["tracking_no"] for c in claims] == [early.tracking_no]
    async with sessions() as session, session.begin():
        again = await outbox.claim_due(session, clock(), outbox.after(clock(), 60), 10)
    assert [c.payload["tracking_no"] for c in again] == [late.tracking_no]
    assert {r.status for r in await rows(sessions, Notification)} == {outbox.SENDING}


async def test_stopping_the_dispatcher_hands_back_the_row_it_held(sessions, complaints,
                                                                  labels, wecom, http):
    await add_channel(sessions, "wecom", robot_url())
    await complaints.file()
    wecom.delay = 2.0
    dispatcher = make_dispatcher(sessions, settings(wecom), labels, utcnow, http)
    task = asyncio.create_task(dispatcher.run())
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [note] = await rows(sessions, Notification)
    assert note.status == outbox.PENDING
    assert as_utc(note.next_attempt_at) <= utcnow()


# -- staff replies to consumers -------------------------------------------------------------
async def test_staff_replies_are_pushed_to_telegram_consumers_in_order(
    sessions, complaints, labels, clock, bot_api, telegram
):
    consumer = 700123456
    on_telegram = await complaints.file(channel="telegram", user_id=str(consumer))
    on_web = await complaints.file(channel="web", user_id="web-user")
    async with sessions() as session, session.begin():
        session.add_all([
            ConsumerMessage(complaint_id=on_telegram.id, channel="telegram",
                            user_id=str(consumer), text="第一条回复"),
            ConsumerMessage(complaint_id=on_telegram.id, channel="telegram",
                            user_id=str(consumer), text="第二条回复"),
            ConsumerMessage(complaint_id=on_web.id, channel="web", user_id="web-user",
                            text="网页用户的回复"),
        ])
    dispatcher = make_dispatcher(sessions, settings(), labels, clock, telegram=telegram,
                                 consumer_push={"telegram": telegram_push(telegram)})
    bot_api.refuse_next("sendMessage", 403, "Forbidden: bot was blocked by the user")
    await dispatcher.run_once()
    # The first failed, so the second waits for it: order is kept.
    assert telegram_texts(bot_api, consumer) == []
    assert all(m.delivered_at is None for m in await rows(sessions, ConsumerMessage))
    await dispatcher.run_once()
    assert telegram_texts(bot_api, consumer) == []  # backing off
    clock.advance(60)
    await dispatcher.run_once()
    assert telegram_texts(bot_api, consumer) == ["第一条回复", "第二条回复"]
    delivered = {m.text: m.delivered_at for m in await rows(sessions, ConsumerMessage)}
    assert delivered["第一条回复"] and delivered["第二条回复"]
    assert delivered["网页用户的回复"] is None  # the engine shows it at the next message
    await dispatcher.run_once()
    assert len(telegram_texts(bot_api, consumer)) == 2


async def test_a_slow_push_on_sqlite_does_not_hold_up_the_consumers_chat(
    sessions, complaints, labels, clock
):
    """SQLite has one connection per worker: a push must not keep it across the network."""
    filed = await complaints.file(channel="telegram", user_id="700123457")
    async with sessions() as session, session.begin():
        session.add(ConsumerMessage(complaint_id=filed.id, channel="telegram",
                                    user_id="700123457", text="机构的回复"))
    sent: list[str] = []
    on_its_way = asyncio.Event()

    async def slow_push(user_id: str, text: str) -> None:
        on_its_way.set()
        await asyncio.sleep(2.0)
        sent.append(text)

    dispatcher = make_dispatcher(sessions, settings(), labels, clock,
                                 consumer_push={"telegram": slow_push})
    pushing = asyncio.create_task(dispatcher.run_once())
    await asyncio.wait_for(on_its_way.wait(), 10)
    started = time.monotonic()
    async with sessions() as session, session.begin():  # what a chat turn does
        await session.execute(select(ConsumerMessage.id))
    assert time.monotonic() - started < 1.0
    await pushing
    assert sent == ["机构的回复"]
    [message] = await rows(sessions, ConsumerMessage)
    assert message.delivered_at is not None


# -- rendering and channels -----------------------------------------------------------------
def test_rendering_masks_even_a_careless_payload(labels):
    payload = {"tracking_no": "BB-2611-7K3Q", "institution": "中国工商银行蚌埠分行",
               "business": "loan", "cause": "debt-collection", "risk": True,
               "risk_reasons": ["distress", "new-code"], "agent_led": True,
               "phone": "13912345678", "story": STORY, "name": "张测试",
               "reason": f"客户身份证{ID_NUMBER}，电话 139 1234 5678",
               "deadline": "2026-11-17T01:00:00+00:00", "link": f"{DASHBOARD}/complaints/x"}
    notice = render("transferred", payload, "complaint:1:transfer:5", labels, START)
    for text in (notice.text(), notice.markdown(), notice.email_body(), notice.subject()):
        assert "13912345678" not in text and "139 1234 5678" not in text
        assert ID_NUMBER not in text and "免年费" not in text and "张测试" not in text
    text = notice.text()
    assert text.splitlines()[0] == "【转来的投诉】BB-2611-7K3Q"
    assert "业务：贷款" in text and "原因：债务催收" in text
    assert "舆情风险：流露出轻生或极度绝望的情绪；new-code" in text
    assert "疑似代理维权：是" in text and "联系电话：139****5678" in text
    assert "处理时限：2026年11月17日前（还剩 15 天）" in text
    assert "转交理由：客户身份证340302********123X，电话 139****5678" in text
    assert notice.markdown().endswith(
        '<font color="comment">通知编号：complaint:1:transfer:5</font>')


def test_rendering_unknown_kinds_and_missing_fields(labels):
    notice = render("something-new", {"tracking_no": "BB-2611-7K3Q", "link": "javascript:x"},
                    "k", labels, START)
    assert notice.text() == "【投诉动态】BB-2611-7K3Q" and notice.link is None
    overdue = render("overdue", {"tracking_no": "T", "deadline": "2026-10-30T16:30:00+00:00"},
                     "k", labels, START)
    assert "（已超期 2 天）" in overdue.text()


def test_wecom_keys_come_from_the_address_or_stand_alone():
    assert wecom_key(robot_url()) == ROBOT_KEY
    assert wecom_key(ROBOT_KEY) == ROBOT_KEY
    assert wecom_key("https://qyapi.weixin.qq.com/cgi-bin/webhook/send") is None
    assert wecom_key("short") is None


async def test_email_over_starttls_with_login(tmp_path, labels):
    server_context, client_context = tls_contexts(tmp_path)
    handler = MailServer()
    server = await start_mail_server(handler, tls_context=server_context,
                                     require_starttls=True, authenticator=handler.authenticate)
    try:
        mailer = SmtpMail(host="127.0.0.1", port=handler.port, sender="xiaobao@example.org",
                          starttls=True, timeout=5, username="xiaobao",
                          password="s3cret-pass", tls_context=client_context)
        notice = render("new-complaint", {"tracking_no": "BB-2611-7K3Q"}, "complaint:9:new",
                        labels, START)
        await mailer.send(MAILBOX, notice)
        wrong = SmtpMail(host="127.0.0.1", port=handler.port, sender="xiaobao@example.org",
                         starttls=True, timeout=5, username="xiaobao", password="wrong",
                         tls_context=client_context)
        with pytest.raises(DeliveryError, match="SMTP 535") as refused:
            await wrong.send(MAILBOX, notice)
        assert "wrong" not in refused.value.reason
        plain = SmtpMail(host="127.0.0.1", port=handler.port, sender="xiaobao@example.org",
                         starttls=False, timeout=5)
        with pytest.raises(DeliveryError, match="SMTP"):
            await plain.send(MAILBOX, notice)
    finally:
        server.close()
        await server.wait_closed()
    assert handler.logins == ["xiaobao"]
    [sent] = handler.messages
    assert sent["Message-ID"] == message_id("complaint:9:new", MAILBOX, "xiaobao@example.org")


def tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: the server's context and a client's."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


async def test_telegram_groups_that_became_supergroups_are_followed(
    sessions, complaints, labels, clock, bot_api, telegram
):
    channel_id = await add_channel(sessions, "telegram", "-4001")
    await complaints.file()
    bot_api.refuse_next("sendMessage", 400, "Bad Request: group chat was upgraded to a "
                        "supergroup chat", migrate_to_chat_id=STAFF_CHAT)
    dispatcher = make_dispatcher(sessions, settings(), labels, clock, telegram=telegram)
    await dispatcher.run_once()
    [channel] = await rows(sessions, QueueChannel)
    assert channel.id == channel_id and channel.target == str(STAFF_CHAT)
    await dispatcher.run_once()
    assert len(telegram_texts(bot_api)) == 1


async def test_a_dashboard_link_telegram_refuses_is_sent_as_text_only(
    sessions, complaints, labels, clock, bot_api, telegram
):
    await add_channel(sessions, "telegram", str(STAFF_CHAT))
    complaint = await complaints.file()
    bot_api.refuse_next("sendMessage", 400, "Bad Request: inline keyboard button URL "
                        "'http://127.0.0.1:8080/staff/complaints/x' is invalid: Wrong HTTP URL")
    await make_dispatcher(sessions, settings(), labels, clock, telegram=telegram).run_once()
    [refused, accepted] = bot_api.called("sendMessage")
    assert refused.status == 400 and "reply_markup" not in accepted.params
    assert f"在后台打开：{DASHBOARD}/complaints/{complaint.tracking_no}" in (
        accepted.params["text"])
    [note] = await rows(sessions, Notification)
    assert note.status == outbox.DELIVERED


# -- configuration and start-up -------------------------------------------------------------
def test_static_channels_parse_and_bad_ones_name_the_key():
    config = build_config({"notifications": {
        "smtp_host": "smtp.example.org", "smtp_from": "xiaobao@example.org",
        "channels": [f"icbc=wecom:{robot_url()}", "icbc=email:" + MAILBOX,
                     "assoc-bank=telegram:-1001234567890", "abc=telegram:@abc_staff"]}}, {})
    assert config.notifications.queue_channels() == (
        ("icbc", "wecom", robot_url()), ("icbc", "email", MAILBOX),
        ("assoc-bank", "telegram", "-1001234567890"), ("abc", "telegram", "@abc_staff"))
    for bad in ("icbc", "icbc=fax:123", "=email:a@b.cn", "icbc=email:not-an-address",
                "icbc=wecom:https://example.org/no-key", "icbc=telegram:group"):
        with pytest.raises(ConfigError) as raised:
            build_config({"notifications": {"channels": [bad], "smtp_host": "h",
                                            "smtp_from": "x@example.org"}}, {})
        assert "notifications.channels" in str(raised.value)
        assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("document", "environ", "names"),
    [
        ({"notifications": {"smtp_password": "x"}}, {}, "XIAOBAO_NOTIFICATIONS_SMTP_PASSWORD"),
        ({"notifications": {"channels": ["icbc=email:a@example.org"]}}, {},
         "notifications.smtp_host"),
        ({"notifications": {"poll_seconds": 0}}, {}, "notifications.poll_seconds"),
        ({"notifications": {"max_attempts": 0}}, {}, "notifications.max_attempts"),
        ({"notifications": {"backoff_max_seconds": 1.0}}, {},
         "notifications.backoff_max_seconds"),
        ({"notifications": {"lease_seconds": 20.0}}, {}, "notifications.lease_seconds"),
        ({"notifications": {"wecom_base_url": "qyapi.weixin.qq.com"}}, {},
         "notifications.wecom_base_url"),
        ({}, {"XIAOBAO_NOTIFICATIONS_SMTP_PORT": "0"}, "notifications.smtp_port"),
        ({}, {"XIAOBAO_NOTIFICATIONS_ENABLED": "perhaps"}, "XIAOBAO_NOTIFICATIONS_ENABLED"),
    ],
)
def test_bad_notification_settings_are_one_line_naming_the_key(document, environ, names):
    with pytest.raises(ConfigError) as raised:
        build_config(document, environ)
    assert names in str(raised.value) and "\n" not in str(raised.value)


def test_the_smtp_password_comes_from_the_environment_and_stays_out_of_repr():
    config = build_config({}, {"XIAOBAO_NOTIFICATIONS_SMTP_PASSWORD": "s3cret-pass",
                               "XIAOBAO_NOTIFICATIONS_CHANNELS":
                                   f"icbc=wecom:{robot_url()},abc=telegram:-1001"})
    assert config.notifications.smtp_password == "s3cret-pass"
    assert "s3cret-pass" not in repr(config)
    assert [kind for _, kind, _ in config.notifications.queue_channels()] == ["wecom",
                                                                              "telegram"]


async def test_static_channels_are_synced_once_and_others_stay(sessions, clock):
    dashboard = await add_channel(sessions, "email", "boss@icbc.example.com")
    paused = await add_channel(sessions, "wecom", robot_url(OTHER_ROBOT_KEY), "abc",
                               active=False)
    specs = [("icbc", "wecom", robot_url()), ("icbc", "email", MAILBOX),
             ("abc", "wecom", robot_url(OTHER_ROBOT_KEY))]
    for expected in (2, 0):
        async with sessions() as session, session.begin():
            assert await sync_static_channels(session, specs, clock()) == expected
    channels = {c.id: c for c in await rows(sessions, QueueChannel)}
    assert len(channels) == 4
    assert channels[dashboard].active and not channels[paused].active


async def test_the_service_runs_the_dispatcher_with_static_channels(
    aiohttp_client, sqlite_url, knowledge_index, directory, wecom, mail
):
    from bot.app import create_app
    from bot.services import SERVICES

    config = build_config({
        "database": {"url": sqlite_url},
        "notifications": {"poll_seconds": 0.05, "wecom_base_url": wecom.base_url,
                          "smtp_host": "127.0.0.1", "smtp_port": mail.port,
                          "smtp_starttls": False, "smtp_from": "xiaobao@example.org",
                          "channels": [f"icbc=wecom:{robot_url()}", f"icbc=email:{MAILBOX}"]},
    }, {})
    client = await aiohttp_client(create_app(config, knowledge_index))
    services = client.app[SERVICES]
    complaint = await Complaints(services.sessions, directory, FakeClock(utcnow())).file()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not (wecom.posts and mail.messages) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert f"【新投诉】{complaint.tracking_no}" in wecom.posts[0].content
    assert mail.messages[0]["X-Xiaobao-Notification"] == f"complaint:{complaint.id}:new"
    await asyncio.sleep(0.2)
    assert len(wecom.posts) == 1 and len(mail.messages) == 1


async def test_the_dispatcher_can_be_turned_off(aiohttp_client, sqlite_url, knowledge_index):
    from bot.app import create_app
    from bot.notifications.service import DISPATCHER

    config = build_config({"database": {"url": sqlite_url},
                           "notifications": {"enabled": False}}, {})
    client = await aiohttp_client(create_app(config, knowledge_index))
    assert DISPATCHER not in client.app
