"""The WeChat endpoint over real HTTP, signed exactly as WeChat's servers sign requests.

Signatures and safe-mode encryption on the test side are written out by hand here
(`hashlib`, and AES-256-CBC straight from `cryptography`'s primitives), independently of
`handlers.wechat_protocol`.  WeChat's server API is a local stand-in on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot import texts
from bot.app import create_app
from bot.cli import main as cli_main
from bot.config import Config, ConfigError, build_config
from bot.engine import Delivery
from bot.messages import Incoming, Reply
from bot.models import Conversation, SharedSecretCache, utcnow
from bot.services import SERVICES, open_services
from handlers import wechat_store as store
from handlers.wechat import (
    NO_MORE_PAGES,
    STILL_WORKING,
    SUCCESS,
    VOICE_UNCLEAR,
    WECHAT,
    trouble,
)
from handlers.wechat_api import WechatApi, http_session, publish_menu, token_cache_name
from handlers.wechat_protocol import MORE_HINT, menu_definition
from tests.log_guard import looks_personal

TOKEN = "xiaobao-test-token"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APP_ID = "wx1234567890abcdef"
APP_SECRET = "test-app-secret"
ACCOUNT = "gh_0123456789ab"
USER = "oAbCdEfGhIjKlMnOpQrStUvWxYz0"
SAFE_ENV = {"XIAOBAO_WECHAT_TOKEN": TOKEN, "XIAOBAO_WECHAT_APP_ID": APP_ID,
            "XIAOBAO_WECHAT_AES_KEY": AES_KEY}
QUESTION = "银行卡被盗刷了怎么办"


# -- WeChat's side, written out by hand ----------------------------------------------------
def sign(*values: str) -> str:
    """SHA-1 of the sorted values, as WeChat documents it."""
    return hashlib.sha1("".join(sorted(values)).encode("utf-8")).hexdigest()


def _aes() -> Cipher[modes.CBC]:
    key = base64.b64decode(AES_KEY + "=")
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def seal(xml: bytes, prefix: bytes = b"R" * 16) -> str:
    """Encrypt as WeChat does: random(16) + length(4, big-endian) + xml + app id, PKCS#7/32."""
    plain = prefix + len(xml).to_bytes(4, "big") + xml + APP_ID.encode()
    pad = 32 - len(plain) % 32
    encryptor = _aes().encryptor()
    sealed = encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()
    return base64.b64encode(sealed).decode()


def unseal(text: str) -> bytes:
    """Decrypt a safe-mode reply and check it names our app id."""
    decryptor = _aes().decryptor()
    plain = decryptor.update(base64.b64decode(text)) + decryptor.finalize()
    plain = plain[:-plain[-1]]
    length = int.from_bytes(plain[16:20], "big")
    assert plain[20 + length:] == APP_ID.encode()
    return plain[20:20 + length]


def signed_query(timestamp: str | None = None, nonce: str = "1357924680",
                 token: str = TOKEN, **extra: str) -> dict[str, str]:
    """The query string WeChat puts on every request to the server address."""
    timestamp = str(int(time.time())) if timestamp is None else timestamp
    return {"signature": sign(token, timestamp, nonce), "timestamp": timestamp,
            "nonce": nonce, **extra}


def message_xml(fields: dict[str, str]) -> bytes:
    """A message as WeChat sends it: strings in CDATA, numbers bare."""
    parts = []
    for name, value in fields.items():
        bare = name in {"CreateTime", "MsgId", "MsgID"}
        parts.append(f"<{name}>{value if bare else f'<![CDATA[{value}]]>'}</{name}>")
    return ("<xml>" + "".join(parts) + "</xml>").encode("utf-8")


def fields_of(xml: str | bytes) -> dict[str, str]:
    """The fields of one of our replies (trusted output, so the standard parser is fine)."""
    return {child.tag: child.text or "" for child in ET.fromstring(xml)}


@dataclass
class WechatServer:
    """Plays WeChat's message servers against the app under test."""

    client: Any
    user: str = USER
    safe: bool = False
    ids: itertools.count = field(default_factory=lambda: itertools.count(6_900_000_000_000_000))

    def fields(self, msg_type: str, **extra: str) -> dict[str, str]:
        base = {"ToUserName": ACCOUNT, "FromUserName": self.user,
                "CreateTime": str(int(time.time())), "MsgType": msg_type}
        if msg_type != "event":
            extra.setdefault("MsgId", str(next(self.ids)))
        return {**base, **extra}

    async def post(self, fields: dict[str, str], safe: bool | None = None) -> Any:
        safe = self.safe if safe is None else safe
        body = message_xml(fields)
        if not safe:
            return await self.client.post("/wechat", params=signed_query(), data=body,
                                          headers={"Content-Type": "text/xml"})
        query = signed_query(encrypt_type="aes")
        encrypted = seal(body)
        query["msg_signature"] = sign(TOKEN, query["timestamp"], query["nonce"], encrypted)
        envelope = message_xml({"ToUserName": ACCOUNT, "Encrypt": encrypted})
        return await self.client.post("/wechat", params=query, data=envelope)

    async def reply(self, fields: dict[str, str], safe: bool | None = None) -> str:
        """The text of the passive reply (decrypted in safe mode); "success" when none."""
        response = await self.post(fields, safe)
        assert response.status == 200, await response.text()
        body = await response.text()
        if body == "success":
            return body
        reply = fields_of(body)
        if "Encrypt" in reply:
            assert reply["MsgSignature"] == sign(TOKEN, reply["TimeStamp"], reply["Nonce"],
                                                 reply["Encrypt"])
            reply = fields_of(unseal(reply["Encrypt"]))
        assert reply["ToUserName"] == fields["FromUserName"]
        assert reply["FromUserName"] == ACCOUNT
        assert reply["MsgType"] == "text"
        return reply["Content"]

    async def text(self, content: str, **extra: str) -> str:
        return await self.reply(self.fields("text", Content=content, **extra))

    async def event(self, event: str, **extra: str) -> str:
        return await self.reply(self.fields("event", Event=event, **extra))


# -- WeChat's API, a local stand-in --------------------------------------------------------
@dataclass
class StandInApi:
    """Records what the service sends to WeChat's API; refuses tokens on request."""

    tokens_issued: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    raw_bodies: list[bytes] = field(default_factory=list)
    menus: list[dict[str, Any]] = field(default_factory=list)
    refused_tokens: set[str] = field(default_factory=set)
    used_tokens: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cgi-bin/token", self.token)
        app.router.add_post("/cgi-bin/message/custom/send", self.custom_send)
        app.router.add_post("/cgi-bin/menu/create", self.menu_create)
        return app

    async def token(self, request: web.Request) -> web.Response:
        query = request.query
        if (query.get("grant_type"), query.get("appid"), query.get("secret")) != (
                "client_credential", APP_ID, APP_SECRET):
            return web.json_response({"errcode": 40013, "errmsg": "invalid appid"})
        self.tokens_issued += 1
        return web.json_response({"access_token": f"TOKEN-{self.tokens_issued}",
                                  "expires_in": 7200})

    async def _authorised(self, request: web.Request) -> dict[str, Any] | None:
        token = request.query.get("access_token", "")
        self.used_tokens.append(token)
        if not token.startswith("TOKEN-") or token in self.refused_tokens:
            return None
        raw = await request.read()
        self.raw_bodies.append(raw)
        return json.loads(raw.decode("utf-8"))

    async def custom_send(self, request: web.Request) -> web.Response:
        body = await self._authorised(request)
        if body is None:
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
        self.sent.append(body)
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def menu_create(self, request: web.Request) -> web.Response:
        body = await self._authorised(request)
        if body is None:
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
        self.menus.append(body)
        return web.json_response({"errcode": 0, "errmsg": "ok"})


# -- fixtures ------------------------------------------------------------------------------
def wechat_config(sqlite_url: str, environ: dict[str, str], **wechat: Any) -> Config:
    """A test configuration with the WeChat channel on."""
    return build_config({"database": {"url": sqlite_url}, "wechat": wechat}, environ=environ)


@pytest.fixture
def make_client(aiohttp_client, knowledge_index) -> Callable[..., Any]:
    """Start the service's own application for a configuration; return (client, app)."""

    async def start(config: Config) -> tuple[Any, web.Application]:
        app = create_app(config, knowledge_index)
        return await aiohttp_client(app), app

    return start


@pytest.fixture
async def plain(make_client, sqlite_url) -> WechatServer:
    """A plain-mode account (token only)."""
    client, _ = await make_client(wechat_config(
        sqlite_url, {"XIAOBAO_WECHAT_TOKEN": TOKEN}, mode="plain"))
    return WechatServer(client)


@pytest.fixture
async def plain_on_each_database(make_client, database_url) -> tuple[WechatServer,
                                                                   web.Application]:
    """A plain-mode account on SQLite and on PostgreSQL, with its application."""
    client, app = await make_client(wechat_config(
        database_url, {"XIAOBAO_WECHAT_TOKEN": TOKEN}, mode="plain"))
    return WechatServer(client), app


@pytest.fixture
async def compatible(make_client, sqlite_url) -> WechatServer:
    """A compatible-mode account with the safe-mode keys."""
    client, _ = await make_client(wechat_config(sqlite_url, SAFE_ENV))
    return WechatServer(client)


@pytest.fixture
async def standin(aiohttp_server) -> tuple[StandInApi, str]:
    """WeChat's API on 127.0.0.1, and its base URL."""
    api = StandInApi()
    server = await aiohttp_server(api.app(), host="127.0.0.1")
    return api, str(server.make_url("")).rstrip("/")


async def count(app: web.Application, model: type, *where: Any) -> int:
    async with app[SERVICES].sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


def answer_slowly(app: web.Application, seconds: float = 0.05) -> None:
    """Every answer takes `seconds` longer (a busy worker), to overrun a tiny reply budget."""
    engine = app[SERVICES].chat
    answer = engine.handle_delivery

    async def slowly(incoming: Incoming, delivery: Delivery | None) -> list[Reply] | None:
        await asyncio.sleep(seconds)
        return await answer(incoming, delivery)

    engine.handle_delivery = slowly  # type: ignore[method-assign]


async def saved_state(app: web.Application, user: str = USER) -> dict[str, Any]:
    async with app[SERVICES].sessions() as session:
        row = await session.get(Conversation, ("wechat", user))
    return dict(row.state) if row is not None else {}


async def engine_turns(app: web.Application, user: str = USER) -> int:
    return int((await saved_state(app, user)).get("turns", 0))


async def remembered(app: web.Application, user: str = USER) -> dict[str, Any]:
    """The channel's memory in the follower's state: messages answered, unread pages."""
    return dict((await saved_state(app, user)).get(store.MEMORY_KEY) or {})


# -- URL verification ----------------------------------------------------------------------
async def test_url_verification_echoes_echostr(plain):
    response = await plain.client.get("/wechat", params=signed_query(echostr="8723452398"))
    assert response.status == 200
    assert await response.text() == "8723452398"


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"echostr": "1"},
        signed_query(token="wrong-token", echostr="1"),
        {**signed_query(echostr="1"), "signature": "0" * 40},
        {**signed_query(echostr="1"), "nonce": "other"},
        signed_query(timestamp=str(int(time.time()) - 600), echostr="1"),
    ],
)
async def test_bad_url_verification_is_403_and_echoes_nothing(plain, query):
    response = await plain.client.get("/wechat", params=query)
    assert response.status == 403
    assert await response.text() != "1"


async def test_safe_url_verification_decrypts_echostr(compatible):
    echostr = seal(b"echo-4711")
    query = signed_query(echostr=echostr)
    query["msg_signature"] = sign(TOKEN, query["timestamp"], query["nonce"], echostr)
    response = await compatible.client.get("/wechat", params=query)
    assert response.status == 200 and await response.text() == "echo-4711"
    query["msg_signature"] = sign(TOKEN, query["timestamp"], query["nonce"], "other")
    assert (await compatible.client.get("/wechat", params=query)).status == 403


async def test_channel_is_off_without_a_token(make_client, config):
    client, _ = await make_client(config)
    assert (await client.get("/wechat", params=signed_query(echostr="1"))).status == 404


# -- messages ------------------------------------------------------------------------------
async def test_a_question_gets_the_knowledge_answer(plain):
    answer = await plain.text(QUESTION)
    assert "【" in answer and "挂失" in answer
    assert "回复 1 " in answer


async def test_a_question_in_safe_mode(compatible):
    compatible.safe = True
    answer = await compatible.text(QUESTION)
    assert "【" in answer and "挂失" in answer


async def test_compatible_mode_answers_each_request_in_its_own_mode(compatible):
    response = await compatible.post(compatible.fields("text", Content="你好"), safe=False)
    assert "Encrypt" not in fields_of(await response.text())
    response = await compatible.post(compatible.fields("text", Content="你好"), safe=True)
    assert "Encrypt" in fields_of(await response.text())


async def test_safe_mode_refuses_plain_requests(make_client, sqlite_url):
    client, _ = await make_client(wechat_config(sqlite_url, SAFE_ENV, mode="safe"))
    server = WechatServer(client)
    assert (await server.post(server.fields("text", Content="你好"), safe=False)).status == 403
    assert "您好" in await server.reply(server.fields("text", Content="你好"), safe=True)


async def test_safe_requests_without_the_keys_are_refused(plain):
    response = await plain.post(plain.fields("text", Content="你好"), safe=True)
    assert response.status == 403


async def test_a_voice_message_is_answered_from_its_recognition(plain):
    answer = await plain.reply(plain.fields("voice", MediaId="m1", Format="amr",
                                            Recognition=QUESTION + "。"))
    assert "【" in answer and "挂失" in answer


async def test_a_voice_message_without_recognition_asks_to_type(plain):
    assert await plain.reply(plain.fields("voice", MediaId="m1", Format="amr")) == VOICE_UNCLEAR
    assert await plain.reply(
        plain.fields("voice", MediaId="m2", Format="amr", Recognition="")) == VOICE_UNCLEAR


@pytest.mark.parametrize(
    ("kind", "extra", "name"),
    [
        ("image", {"PicUrl": "http://127.0.0.1:9/p.jpg", "MediaId": "m"}, "图片"),
        ("video", {"MediaId": "m", "ThumbMediaId": "t"}, "视频"),
        ("shortvideo", {"MediaId": "m", "ThumbMediaId": "t"}, "小视频"),
        ("location", {"Location_X": "32.9", "Location_Y": "117.3", "Scale": "15",
                      "Label": "蚌埠"}, "位置"),
        ("link", {"Title": "t", "Description": "d", "Url": "http://127.0.0.1:9/"}, "链接"),
    ],
)
async def test_other_messages_get_a_polite_note_of_what_the_bot_can_do(plain, kind, extra,
                                                                        name):
    note = await plain.reply(plain.fields(kind, **extra))
    assert f"看不了{name}" in note and "诈骗" in note and "投诉" in note


async def test_subscribe_welcomes_with_the_numbered_menu(plain):
    welcome = await plain.event("subscribe", EventKey="")
    assert "您好" in welcome
    for number, button in enumerate(texts.MENU_BUTTONS, 1):
        assert f"回复 {number} {button.label}" in welcome


async def test_unsubscribe_and_view_get_success(plain):
    assert await plain.event("unsubscribe") == "success"
    assert await plain.event("VIEW", EventKey="https://example.org/") == "success"
    assert await plain.event("LOCATION", Latitude="1", Longitude="2") == "success"


async def test_menu_click_runs_the_engine_action(plain):
    assert "使用方法" in await plain.event("CLICK", EventKey="help")
    assert texts.topic_menu_intro() in await plain.event("CLICK", EventKey="topics")


async def test_a_whole_dialogue_by_numbered_replies(plain):
    welcome = await plain.event("subscribe")
    assert "回复 1 问一问金融知识" in welcome
    topics = await plain.text("1")
    assert topics.startswith(texts.topic_menu_intro())
    assert f"回复 1 {texts.TOPIC_GROUPS[0][1]}" in topics
    group = await plain.text("1")
    assert group.startswith(f"{texts.TOPIC_GROUPS[0][1]}：")
    entries = await plain.text("1")
    assert "您想了解" in entries
    answer = await plain.text("1")
    assert answer.startswith("【")
    back = answer.splitlines()[-1]
    assert back.endswith(texts.BACK_TO_MENU.label)
    menu = await plain.text(back.split()[1])
    assert "回复 3 我要投诉" in menu
    complaint = await plain.text("3")
    assert "投诉" in complaint


async def test_long_answers_come_in_pages_read_with_more(make_client, sqlite_url):
    client, app = await make_client(wechat_config(
        sqlite_url, {"XIAOBAO_WECHAT_TOKEN": TOKEN}, mode="plain"))
    app[WECHAT].page_bytes = 600
    server = WechatServer(client)
    pages = [await server.text(QUESTION)]
    assert len((await remembered(app))["pages"]) >= 2
    while pages[-1].endswith(MORE_HINT):
        pages.append(await server.text("更多"))
    assert "pages" not in await remembered(app)
    assert len(pages) >= 3
    assert all(len(page.encode("utf-8")) <= 600 for page in pages)
    assert pages[0].startswith("【") and "回复 1 " in pages[-1]
    assert await server.text("更多") == NO_MORE_PAGES
    assert await engine_turns(app) == 1


# -- the 5-second rule ---------------------------------------------------------------------
async def test_a_retried_msg_id_gets_the_same_reply_and_is_processed_once(
        plain_on_each_database):
    server, app = plain_on_each_database
    fields = server.fields("text", Content=QUESTION, MsgId="7000000000000000001")
    first = await server.reply(fields)
    again = await server.reply(fields)
    assert first == again and "【" in first
    assert await engine_turns(app) == 1
    [(key, reply, _)] = (await remembered(app))["answered"]
    assert key.endswith("7000000000000000001") and reply == first


async def test_concurrent_retries_wait_for_the_first_reply(plain_on_each_database):
    server, app = plain_on_each_database
    fields = server.fields("text", Content=QUESTION, MsgId="7000000000000000002")
    replies = await asyncio.gather(*(server.reply(fields) for _ in range(3)))
    assert len(set(replies)) == 1 and "【" in replies[0]
    assert await engine_turns(app) == 1


async def test_a_message_whose_turn_failed_is_answered_on_wechats_retry(
        plain_on_each_database, monkeypatch):
    """The claim commits with the turn: a turn that fails (or a worker killed mid-turn)
    leaves the message unclaimed, so the retry is answered instead of being dropped."""
    server, app = plain_on_each_database
    matcher = app[SERVICES].knowledge.matcher
    match, failures = matcher.match, [RuntimeError("disk full, say")]

    def fails_once(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return match(*args, **kwargs)

    monkeypatch.setattr(matcher, "match", fails_once)  # the index is shared by all tests
    fields = server.fields("text", Content=QUESTION, MsgId="7000000000000000003")
    assert await server.reply(fields) == trouble(app[SERVICES].config.chat.hotline)
    assert await saved_state(app) == {}  # nothing recorded: the retry is answered
    retried = await server.reply(fields)
    assert "【" in retried and "挂失" in retried
    assert await server.reply(fields) == retried  # and from then on, once only
    assert await engine_turns(app) == 1


async def test_only_recent_messages_are_remembered_and_replies_only_of_the_newest(
        plain_on_each_database):
    server, app = plain_on_each_database
    sent = [server.fields("text", Content="你好", MsgId=str(7100 + n)) for n in range(7)]
    for fields in sent:
        await server.reply(fields)
    answered = (await remembered(app))["answered"]
    assert [entry[0][-4:] for entry in answered] == [str(7100 + n) for n in range(6, -1, -1)]
    assert [entry[1] is not None for entry in answered] == [True] * store.REPLIES_KEPT + [
        False] * (7 - store.REPLIES_KEPT)
    # An older message is still recognised: its retry is not processed again.
    assert await server.reply(sent[0]) == SUCCESS
    assert await engine_turns(app) == 7

    async def age(seconds: float) -> None:
        async with app[SERVICES].sessions() as session, session.begin():
            row = await session.get(Conversation, ("wechat", USER))
            memory = dict(row.state[store.MEMORY_KEY])
            memory["answered"] = [[key, reply, at - seconds]
                                  for key, reply, at in memory["answered"]]
            row.state = {**row.state, store.MEMORY_KEY: memory}

    await age(store.ANSWERED_SECONDS)
    await server.text("谢谢")
    assert len((await remembered(app))["answered"]) == 1  # the older ones were dropped


async def test_what_silent_followers_left_is_swept_after_a_day_at_most_hourly(
        plain_on_each_database):
    server, app = plain_on_each_database
    app[WECHAT].page_bytes = 600
    for user in ("quiet-1", "quiet-2"):
        await server.reply(server.fields("text", FromUserName=user, Content=QUESTION))
        assert (await remembered(app, user))["pages"]

    async def fall_silent(user: str, age: timedelta) -> None:
        async with app[SERVICES].sessions() as session, session.begin():
            row = await session.get(Conversation, ("wechat", user))
            row.updated_at = utcnow() - age

    await fall_silent("quiet-1", store.RETENTION + timedelta(minutes=1))
    await fall_silent("quiet-2", store.RETENTION - timedelta(hours=1))
    app[WECHAT]._next_sweep = 0.0  # an hour after this worker's first message swept
    await server.text("你好")
    await app[WECHAT].drain()  # the sweep runs beside the answer
    assert await remembered(app, "quiet-1") == {}
    assert await engine_turns(app, "quiet-1") == 1  # the rest of the state stays
    assert (await remembered(app, "quiet-2"))["pages"]
    await fall_silent("quiet-2", store.RETENTION + timedelta(minutes=1))
    await server.text("谢谢")  # within the hour: no second sweep
    await app[WECHAT].drain()
    assert (await remembered(app, "quiet-2"))["pages"]
    app[WECHAT]._next_sweep = 0.0  # an hour later
    await server.text("菜单")
    await app[WECHAT].drain()
    assert await remembered(app, "quiet-2") == {}


async def test_the_sweep_rewrites_only_states_holding_memory_and_ends(
        plain_on_each_database, monkeypatch):
    """Batches smaller than the old followers: a state found but not rewritten would be
    found again by every batch, and the sweep would never end."""
    server, app = plain_on_each_database
    monkeypatch.setattr(store, "SWEEP_BATCH", 2)
    old = utcnow() - store.RETENTION - timedelta(hours=1)
    memory = {"answered": [["msg:1", "答复", 1.0]], "pages": ["下一段"]}
    async with app[SERVICES].sessions() as session, session.begin():
        for n in range(3):
            session.add(Conversation(channel="wechat", user_id=f"plain-{n}",
                                     state={"turns": 1}, version=1, updated_at=old))
            session.add(Conversation(channel="wechat", user_id=f"kept-{n}",
                                     state={"turns": 1, store.MEMORY_KEY: memory},
                                     version=1, updated_at=old))
    app[WECHAT]._next_sweep = 0.0
    await server.text("你好")
    await asyncio.wait_for(app[WECHAT].drain(), timeout=30)
    async with app[SERVICES].sessions() as session:
        rows = {row.user_id: row for row in (await session.scalars(select(Conversation))).all()}
    for n in range(3):
        assert rows[f"plain-{n}"].version == 1  # untouched
        assert rows[f"kept-{n}"].state == {"turns": 1} and rows[f"kept-{n}"].version == 2


async def test_a_failed_sweep_is_logged_and_answers_go_on(plain, monkeypatch, caplog):
    async def broken(*_args: Any) -> int:
        raise RuntimeError("disk full, say")

    monkeypatch.setattr(store, "forget_silent", broken)
    answer = await plain.text(QUESTION)  # this worker's first message starts a sweep
    await plain.client.app[WECHAT].drain()
    assert "【" in answer
    assert "sweeping silent followers' memory failed" in caplog.text
    assert "【" in await plain.text(QUESTION)


async def test_a_retried_event_is_processed_once(make_client, sqlite_url):
    client, app = await make_client(wechat_config(
        sqlite_url, {"XIAOBAO_WECHAT_TOKEN": TOKEN}, mode="plain"))
    server = WechatServer(client)
    fields = server.fields("event", Event="subscribe", CreateTime="1700000000")
    assert await server.reply(fields) == await server.reply(fields)
    assert await engine_turns(app) == 1


async def test_an_overrun_answer_is_delivered_through_the_api(make_client, sqlite_url,
                                                              standin):
    api, base_url = standin
    client, app = await make_client(wechat_config(
        sqlite_url, {**SAFE_ENV, "XIAOBAO_WECHAT_APP_SECRET": APP_SECRET},
        reply_budget_seconds=0.001, api_base_url=base_url))
    answer_slowly(app)
    server = WechatServer(client, safe=True)
    fields = server.fields("text", Content=QUESTION)
    assert await server.reply(fields) == "success"
    await app[WECHAT].drain()
    assert len(api.sent) == 1
    sent = api.sent[0]
    assert sent["touser"] == USER and sent["msgtype"] == "text"
    assert "【" in sent["text"]["content"] and "挂失" in sent["text"]["content"]
    assert "挂失".encode() in api.raw_bodies[0]  # UTF-8 JSON, not \\u escapes
    # A retry of the same message repeats "success" and sends nothing twice.
    assert await server.reply(fields) == "success"
    await app[WECHAT].drain()
    assert len(api.sent) == 1 and await engine_turns(app) == 1
    # A second late answer reuses the cached access token.
    assert await server.text("你好") == "success"
    await app[WECHAT].drain()
    assert len(api.sent) == 2 and api.tokens_issued == 1


async def test_an_overrun_answer_without_the_api_waits_for_more(make_client, sqlite_url):
    environ = {"XIAOBAO_WECHAT_TOKEN": TOKEN}
    slow, slow_app = await make_client(wechat_config(sqlite_url, environ, mode="plain",
                                                     reply_budget_seconds=0.001))
    answer_slowly(slow_app)
    assert await WechatServer(slow).text(QUESTION) == STILL_WORKING
    await slow_app[WECHAT].drain()
    # Another worker, on the same database, hands the answer out.
    other, _ = await make_client(wechat_config(sqlite_url, environ, mode="plain"))
    answer = await WechatServer(other, ids=itertools.count(7_100_000_000_000_000)).text("更多")
    assert answer.startswith("【") and "挂失" in answer


# -- the shared access token ---------------------------------------------------------------
def api_client(services, base_url: str, http) -> WechatApi:
    """A WeChat API client as one worker of the service would have it."""
    wechat = build_config({}, {**SAFE_ENV, "XIAOBAO_WECHAT_APP_SECRET": APP_SECRET,
                               "XIAOBAO_WECHAT_API_BASE_URL": base_url}).wechat
    return WechatApi(http, services.sessions, wechat)


async def _cache(services, value: str, expires_in: timedelta) -> None:
    async with services.sessions() as session, session.begin():
        session.add(SharedSecretCache(name=token_cache_name(APP_ID), value=value,
                                      expires_at=utcnow() + expires_in))


async def test_token_is_fetched_once_and_shared_by_all_workers(database_url, knowledge_index,
                                                               standin):
    api, base_url = standin
    config = build_config({"database": {"url": database_url}}, environ={})
    services = await open_services(config, knowledge_index)
    try:
        async with http_session() as http:
            workers = [api_client(services, base_url, http) for _ in range(4)]
            tokens = await asyncio.gather(*(worker.access_token() for worker in workers))
        assert set(tokens) == {"TOKEN-1"} and api.tokens_issued == 1
        async with services.sessions() as session:
            row = await session.get(SharedSecretCache, token_cache_name(APP_ID))
        assert row is not None and row.value == "TOKEN-1"
    finally:
        await services.close()


async def test_a_valid_cached_token_is_used_without_fetching(services, standin):
    api, base_url = standin
    await _cache(services, "TOKEN-cached", timedelta(hours=1))
    async with http_session() as http:
        await api_client(services, base_url, http).send_text(USER, "您好")
    assert api.tokens_issued == 0 and api.used_tokens == ["TOKEN-cached"]


async def test_a_token_about_to_expire_is_refreshed(services, standin):
    api, base_url = standin
    await _cache(services, "TOKEN-old", timedelta(minutes=2))
    async with http_session() as http:
        await api_client(services, base_url, http).send_text(USER, "您好")
    assert api.tokens_issued == 1 and api.used_tokens == ["TOKEN-1"]


async def test_a_refused_token_is_replaced_and_the_call_retried_once(services, standin):
    api, base_url = standin
    await _cache(services, "TOKEN-revoked", timedelta(hours=1))
    api.refused_tokens.add("TOKEN-revoked")
    async with http_session() as http:
        await api_client(services, base_url, http).send_text(USER, "您好")
    assert api.used_tokens == ["TOKEN-revoked", "TOKEN-1"] and len(api.sent) == 1


# -- the custom menu -----------------------------------------------------------------------
async def test_push_menu_publishes_the_configured_menu(services, standin):
    api, base_url = standin
    config = build_config({}, {**SAFE_ENV, "XIAOBAO_WECHAT_APP_SECRET": APP_SECRET,
                               "XIAOBAO_WECHAT_API_BASE_URL": base_url})
    definition = menu_definition(config.wechat.menu)
    await publish_menu(config.wechat, services.sessions, definition)
    assert api.menus == [definition]
    assert "问一问".encode() in api.raw_bodies[0]


def test_push_menu_command_prints_and_checks_its_secrets(tmp_path, capsys, monkeypatch):
    for name in ("XIAOBAO_WECHAT_APP_ID", "XIAOBAO_WECHAT_APP_SECRET", "XIAOBAO_WECHAT_TOKEN",
                 "XIAOBAO_WECHAT_AES_KEY"):
        monkeypatch.delenv(name, raising=False)
    config_file = tmp_path / "config.toml"
    config_file.write_text('[wechat]\nmenu = ["问一问=topics", "官网=https://example.org/"]\n',
                           encoding="utf-8")
    assert cli_main(["--config", str(config_file), "wechat", "push-menu", "--print"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["button"][1] == {"type": "view", "name": "官网",
                                    "url": "https://example.org/"}
    assert cli_main(["--config", str(config_file), "wechat", "push-menu"]) == 2
    assert "XIAOBAO_WECHAT_APP_SECRET" in capsys.readouterr().err
    config_file.write_text('[wechat]\nmenu = ["a=1", "b=2", "c=3", "d=4"]\n', encoding="utf-8")
    assert cli_main(["--config", str(config_file), "wechat", "push-menu", "--print"]) == 2
    assert "wechat.menu" in capsys.readouterr().err


# -- hostile and broken requests -----------------------------------------------------------
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY leak SYSTEM "file:///etc/passwd">]>
<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>
<FromUserName><![CDATA[oAbCdEfGhIjKlMnOpQrStUvWxYz0]]></FromUserName>
<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>
<Content>&leak;</Content><MsgId>1</MsgId></xml>"""
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE xml [
 <!ENTITY a "lollollollollollollollollollol">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
 <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
 <!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">
 <!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">
 <!ENTITY i "&h;&h;&h;&h;&h;&h;&h;&h;&h;&h;">
]>
<xml><ToUserName>gh</ToUserName><FromUserName>u</FromUserName><CreateTime>1</CreateTime>
<MsgType>text</MsgType><Content>&i;</Content><MsgId>2</MsgId></xml>"""
EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE xml SYSTEM "http://127.0.0.1:9/evil.dtd">
<xml><MsgType>text</MsgType></xml>"""


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (XXE, 400),
        (BILLION_LAUGHS, 400),
        (EXTERNAL_DTD, 400),
        (b"<xml><ToUserName>gh</ToUserName><Content>broken", 400),
        (b"", 400),
        (b"{\"json\": true}", 400),
        (b"<xml><Content>no sender</Content></xml>", 400),
        (b"<xml>" + b"<Content>x</Content>" * 2000 + b"</xml>", 413),
    ],
)
async def test_hostile_or_broken_bodies_are_refused_without_a_500(plain, body, status):
    response = await plain.client.post("/wechat", params=signed_query(), data=body)
    text = await response.text()
    assert response.status == status
    assert "root:" not in text and "lol" not in text


async def test_hostile_xml_inside_a_safe_payload_is_refused(compatible):
    query = signed_query(encrypt_type="aes")
    encrypted = seal(XXE)
    query["msg_signature"] = sign(TOKEN, query["timestamp"], query["nonce"], encrypted)
    envelope = message_xml({"ToUserName": ACCOUNT, "Encrypt": encrypted})
    response = await compatible.client.post("/wechat", params=query, data=envelope)
    assert response.status == 400 and "root:" not in await response.text()


async def test_oversized_body_is_refused_before_it_is_read(plain):
    async def stream():
        for _ in range(100):
            yield b"<xml>" + b" " * 1000

    response = await plain.client.post("/wechat", params=signed_query(), data=stream())
    assert response.status == 413


@pytest.mark.parametrize(
    "query",
    [
        {},
        signed_query(token="wrong-token"),
        {**signed_query(), "signature": ""},
        signed_query(timestamp=str(int(time.time()) - 301)),
        signed_query(timestamp=str(int(time.time()) + 3600)),
        signed_query(timestamp="not-a-time"),
    ],
)
async def test_unsigned_forged_or_stale_posts_are_403(plain, query):
    body = message_xml(plain.fields("text", Content=QUESTION))
    response = await plain.client.post("/wechat", params=query, data=body)
    assert response.status == 403


async def test_forged_msg_signature_is_403_and_nothing_is_processed(make_client, sqlite_url):
    client, app = await make_client(wechat_config(sqlite_url, SAFE_ENV))
    server = WechatServer(client)
    query = signed_query(encrypt_type="aes")
    encrypted = seal(message_xml(server.fields("text", Content=QUESTION)))
    query["msg_signature"] = sign(TOKEN, query["timestamp"], query["nonce"], encrypted + "x")
    envelope = message_xml({"ToUserName": ACCOUNT, "Encrypt": encrypted})
    response = await client.post("/wechat", params=query, data=envelope)
    assert response.status == 403
    assert await count(app, Conversation) == 0


async def test_a_payload_for_another_account_is_400(compatible):
    query = signed_query(encrypt_type="aes")
    key = base64.b64decode(AES_KEY + "=")
    xml = message_xml(compatible.fields("text", Content="你好"))
    plain_bytes = b"R" * 16 + len(xml).to_bytes(4, "big") + xml + b"wx0000000000000000"
    pad = 32 - len(plain_bytes) % 32
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    encrypted = base64.b64encode(encryptor.update(plain_bytes + bytes([pad]) * pad)
                                 + encryptor.finalize()).decode()
    query["msg_signature"] = sign(TOKEN, query["timestamp"], query["nonce"], encrypted)
    envelope = message_xml({"ToUserName": ACCOUNT, "Encrypt": encrypted})
    response = await compatible.client.post("/wechat", params=query, data=envelope)
    assert response.status == 400


# -- property-based: whatever arrives signed ----------------------------------------------
WHATEVER = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
field_values = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), max_size=30),
    st.sampled_from(["更多", "1", "3", "投诉", "查询", "]]>", "", "   ", "🙂🙂", "&amp;<b>"]),
)
messages = st.fixed_dictionaries(
    {"ToUserName": st.just(ACCOUNT),
     "FromUserName": st.one_of(st.just(USER), st.text(min_size=1, max_size=200)),
     "MsgType": st.one_of(st.sampled_from(["text", "image", "voice", "video", "location",
                                           "link", "event", "file"]), st.text(max_size=12))},
    optional={"Content": field_values, "Recognition": field_values, "EventKey": field_values,
              "Event": st.one_of(st.sampled_from(["subscribe", "unsubscribe", "CLICK",
                                                  "VIEW", "SCAN"]), st.text(max_size=12)),
              "MsgId": st.one_of(st.integers(0, 2**64).map(str), st.text(max_size=80)),
              "CreateTime": st.one_of(st.integers(-1, 2**40).map(str), st.text(max_size=12)),
              "MediaId": field_values},
)


def written_out(fields: dict[str, str], escaped: bool) -> bytes:
    """A message in either way XML allows text: CDATA sections or escaped characters.
    Whatever XML cannot carry stays in, so some bodies are malformed on purpose."""
    if not escaped:
        return message_xml(fields)
    parts = [f"<{name}>{xml_escape(value)}</{name}>" for name, value in fields.items()]
    return ("<xml>" + "".join(parts) + "</xml>").encode("utf-8")


def sender_of(body: bytes) -> str | None:
    """The FromUserName a conforming XML parser reads from the body (None: not XML)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    return root.findtext("FromUserName")


@WHATEVER
@given(message=messages, escaped=st.booleans())
async def test_any_signed_message_gets_a_reply_or_a_clear_refusal(plain_on_each_database,
                                                                  message, escaped):
    """Every field missing, empty, oversized, of an unknown kind or not XML at all: the
    answer is a passive reply to the sender, "success", or a 4xx, on both databases."""
    server, _ = plain_on_each_database
    body = written_out(message, escaped)
    response = await server.client.post("/wechat", params=signed_query(), data=body)
    text = await response.text()
    assert response.status in {200, 400, 413}, text
    if response.status == 200 and text != "success":
        reply = fields_of(text)
        assert reply["ToUserName"] == sender_of(body)
        assert reply["MsgType"] == "text" and reply["Content"].strip()


@WHATEVER
@given(message=messages, noise=st.binary(max_size=40))
async def test_any_sealed_payload_gets_a_reply_or_a_clear_refusal(compatible, message, noise):
    """Safe mode: whatever was encrypted (a message, or bytes that are not one), and
    whatever stands in the Encrypt field, correctly signed, never makes a 500."""
    for sealed in (seal(message_xml(message)), seal(noise), noise.hex(),
                   base64.b64encode(noise).decode()):
        query = signed_query(encrypt_type="aes")
        query["msg_signature"] = sign(TOKEN, query["timestamp"], query["nonce"], sealed)
        envelope = message_xml({"ToUserName": ACCOUNT, "Encrypt": sealed})
        response = await compatible.client.post("/wechat", params=query, data=envelope)
        assert response.status in {200, 400, 413}, await response.text()


query_values = st.one_of(st.text(max_size=60), st.integers().map(str),
                         st.sampled_from(["9" * 30, "-1", "", "aes", "raw", "٣", "1e9",
                                          "now", "now", "now"]),
                         ).filter(lambda value: not looks_personal(value))  # the access log
queries = st.dictionaries(st.sampled_from(["signature", "timestamp", "nonce", "echostr",
                                           "encrypt_type", "msg_signature", "openid"]),
                          query_values, max_size=6)


@WHATEVER
@given(query=queries, safe=st.booleans(), sign_it=st.booleans())
async def test_any_query_on_the_server_address_gets_a_clear_answer(plain, compatible, query,
                                                                    safe, sign_it):
    """WeChat's URL check (GET) and messages (POST) with whatever query string: signed or
    not, huge or garbled timestamps, unknown encryption types."""
    server = compatible if safe else plain
    now = str(int(time.time()))
    query = {key: now if value == "now" else value for key, value in query.items()}
    if sign_it:
        timestamp, nonce = query.get("timestamp", "0"), query.get("nonce", "")
        query = {**query, "signature": sign(TOKEN, timestamp, nonce)}
    response = await server.client.get("/wechat", params=query)
    event(f"GET {response.status}")
    assert response.status in {200, 400, 403}, await response.text()
    body = message_xml(server.fields("text", Content=QUESTION))
    response = await server.client.post("/wechat", params=query, data=body)
    event(f"POST {response.status}")
    assert response.status in {200, 400, 403, 413}, await response.text()


# -- configuration -------------------------------------------------------------------------
def test_wechat_keys_come_from_the_file_and_secrets_only_from_the_environment():
    config = build_config(
        {"wechat": {"path": "/wx", "mode": "safe", "menu": ["问一问=topics"]}},
        environ={**SAFE_ENV, "XIAOBAO_WECHAT_MENU": "问一问=topics, 防诈骗=check",
                 "XIAOBAO_WECHAT_REPLY_BUDGET_SECONDS": "3.5"},
    )
    wechat = config.wechat
    assert (wechat.path, wechat.mode, wechat.reply_budget_seconds) == ("/wx", "safe", 3.5)
    assert wechat.menu == ("问一问=topics", "防诈骗=check")
    assert wechat.enabled and wechat.can_decrypt
    assert TOKEN not in repr(config) and AES_KEY not in repr(config)
    for key in ("token", "app_id", "aes_key", "app_secret"):
        with pytest.raises(ConfigError, match=f"XIAOBAO_WECHAT_{key.upper()}"):
            build_config({"wechat": {key: "x"}}, environ={})


@pytest.mark.parametrize(
    ("document", "environ", "names"),
    [
        ({}, {"XIAOBAO_WECHAT_APP_ID": APP_ID}, "XIAOBAO_WECHAT_AES_KEY"),
        ({}, {"XIAOBAO_WECHAT_AES_KEY": AES_KEY}, "XIAOBAO_WECHAT_APP_ID"),
        ({"wechat": {"mode": "safe"}}, {"XIAOBAO_WECHAT_TOKEN": TOKEN}, "XIAOBAO_WECHAT_AES_KEY"),
        ({}, {**SAFE_ENV, "XIAOBAO_WECHAT_AES_KEY": AES_KEY[:-1]}, "XIAOBAO_WECHAT_AES_KEY"),
        ({}, {**SAFE_ENV, "XIAOBAO_WECHAT_AES_KEY": AES_KEY[:-1] + "!"},
         "XIAOBAO_WECHAT_AES_KEY"),
        ({"wechat": {"mode": "plain"}}, {"XIAOBAO_WECHAT_APP_SECRET": "s"},
         "XIAOBAO_WECHAT_APP_ID"),
        ({"wechat": {"mode": "secret"}}, {}, "wechat.mode"),
        ({"wechat": {"path": "wechat"}}, {}, "wechat.path"),
        ({"wechat": {"reply_budget_seconds": 6}}, {}, "wechat.reply_budget_seconds"),
        ({"wechat": {"menu": "问一问=topics"}}, {}, "wechat.menu"),
        ({"wechat": {"menu": ["问一问"]}}, {}, "wechat.menu"),
        ({"wechat": {"api_base_url": "ftp://x"}}, {}, "wechat.api_base_url"),
    ],
)
def test_bad_wechat_configuration_is_one_line_naming_the_variable(document, environ, names):
    with pytest.raises(ConfigError) as raised:
        build_config(document, environ)
    assert names in str(raised.value) and "\n" not in str(raised.value)


def test_plain_mode_needs_no_safe_mode_keys():
    config = build_config({"wechat": {"mode": "plain"}},
                          {"XIAOBAO_WECHAT_TOKEN": TOKEN, "XIAOBAO_WECHAT_APP_ID": APP_ID})
    assert config.wechat.enabled and not config.wechat.can_decrypt


def test_a_menu_wechat_would_refuse_stops_start_up(sqlite_url, knowledge_index):
    config = wechat_config(sqlite_url, {"XIAOBAO_WECHAT_TOKEN": TOKEN},
                           menu=["a=1", "b=2", "c=3", "d=4"])
    with pytest.raises(ConfigError, match=r"wechat\.menu"):
        create_app(config, knowledge_index)


async def test_a_whole_complaint_by_numbered_replies(plain):
    from bot.models import Complaint

    await plain.event("subscribe")
    assert "请先用自己的话说说" in await plain.text("3")  # 我要投诉
    prompt = await plain.text("上周在建行办的信用卡被收了年费，说好免年费的，客服一直推脱")
    assert "中国建设银行蚌埠分行" in prompt and "回复 1 对，是这家" in prompt
    assert "什么时候发生" in await plain.text("1")
    assert "怎么解决" in await plain.text("2")  # 最近一周内
    assert "您同意吗" in await plain.text("1")  # 退款
    assert "姓名" in await plain.text("1")  # 同意
    assert "手机号码" in await plain.text("王芳")
    assert "身份证号" in await plain.text("13800001234")
    assert "为自己投诉" in await plain.text("1")  # 跳过
    summary = await plain.text("1")  # 为我自己
    assert "138****1234" in summary and "回复 1 确认提交" in summary
    filed = await plain.text("1")
    assert "受理编号：BB-" in filed
    assert await count(plain.client.app, Complaint) == 1
