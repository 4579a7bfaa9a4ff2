"""The Telegram channel end to end: the real python-telegram-bot client, the real engine
and database, and a scripted stand-in for the Bot API on 127.0.0.1 (via telegram.base_url).

The stand-in serves queued updates to getUpdates (it ignores `offset`, so a test can make it
repeat an update the way a real server may), answers the other methods the channel uses,
records every call, and can be told to refuse the next call of a method (e.g. a 429).
Updates are handled one at a time, so once the reply to a later update has arrived, every
earlier update has been dealt with.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from bot import texts
from bot.app import create_app
from bot.config import ConfigError, build_config, load_config
from bot.messages import Button, Incoming, Reply
from bot.services import SERVICES
from handlers.telegram import (
    COMMANDS,
    MAX_CALLBACK_BYTES,
    SECRET_HEADER,
    TELEGRAM,
    action_for,
    callback_data_for,
    keyboard,
    send_replies,
    send_to_chat,
    split_text,
    too_long,
    trouble,
    utf16_units,
)
from tests.log_guard import looks_personal

REPO = Path(__file__).resolve().parents[1]
BOT_ID = 5550001
TOKEN = f"{BOT_ID}:AAH-test_token-for-the-stand-in"
CONSUMER = 700123456
WEBHOOK_SECRET = "s3cret-Token_for-tests"
LONGEST_POLL = 0.3
DATE = 1767225600
QUESTION = "银行卡被盗刷了怎么办"
SCAM_SMS = ("【工商银行】您的账户存在异常，已被冻结，请立即点击 http://icbc-vip.cc/login "
            "验证身份并将资金转入安全账户，否则将影响征信。")
JSON_PARAMS = {"chat_id", "reply_markup", "commands", "scope", "allowed_updates", "offset",
               "timeout", "link_preview_options", "limit"}


@dataclass
class Call:
    """One request the channel made to the Bot API."""

    method: str
    params: dict[str, Any]
    status: int
    at: float


class BotApi:
    """A scripted local stand-in for the Telegram Bot API."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.base_url = ""
        self._updates: list[dict[str, Any]] = []
        self._refusals: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)

    def application(self) -> web.Application:
        """The stand-in as an aiohttp application."""
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        return app

    # -- scripting ------------------------------------------------------------------------
    def deliver(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for the next getUpdates (again, if it was served before)."""
        self._updates.append(update)
        return update

    def update(self, **body: Any) -> dict[str, Any]:
        """A new update with the next update_id."""
        return {"update_id": next(self._update_ids), **body}

    def message(self, words: str, chat: int = CONSUMER, chat_type: str = "private",
                **extra: Any) -> dict[str, Any]:
        """A message update from the consumer (a command gets its bot_command entity)."""
        body: dict[str, Any] = {
            "message_id": next(self._message_ids), "date": DATE,
            "chat": {"id": chat, "type": chat_type, "first_name": "测试", "title": "群"},
            "from": {"id": CONSUMER, "is_bot": False, "first_name": "测试"},
            **extra,
        }
        if words:
            body["text"] = words
        if words.startswith("/"):
            body["entities"] = [{"type": "bot_command", "offset": 0,
                                 "length": utf16_units(words.split()[0])}]
        return self.update(message=body)

    def button(self, data: str, chat: int = CONSUMER) -> dict[str, Any]:
        """A callback query: the consumer pressed an inline button."""
        return self.update(callback_query={
            "id": f"cq{next(self._message_ids)}", "chat_instance": "ci", "data": data,
            "from": {"id": CONSUMER, "is_bot": False, "first_name": "测试"},
            "message": {"message_id": 1, "date": DATE, "text": "…",
                        "chat": {"id": chat, "type": "private", "first_name": "测试"}},
        })

    def say(self, words: str, **extra: Any) -> dict[str, Any]:
        """Deliver a consumer's message."""
        return self.deliver(self.message(words, **extra))

    def press(self, data: str) -> dict[str, Any]:
        """Deliver a button press."""
        return self.deliver(self.button(data))

    def refuse_next(self, method: str, status: int, description: str,
                    **parameters: Any) -> None:
        """Make the next call of `method` fail the way the real API does."""
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        self._refusals[method].append((status, body))

    # -- reading --------------------------------------------------------------------------
    def called(self, method: str) -> list[Call]:
        """Every call of one method, in order."""
        return [call for call in self.calls if call.method == method]

    def sent(self) -> list[dict[str, Any]]:
        """The messages actually delivered (sendMessage calls that succeeded)."""
        return [call.params for call in self.called("sendMessage") if call.status == 200]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        """Wait until the channel has done what the test expects."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(f"timed out; calls: {[c.method for c in self.calls]}")
            await asyncio.sleep(0.01)

    async def replies(self, count: int) -> list[dict[str, Any]]:
        """Wait for `count` delivered messages in all and return them."""
        await self.wait_for(lambda: len(self.sent()) >= count)
        return self.sent()

    # -- serving --------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.match_info["token"] != TOKEN:
            return web.json_response({"ok": False, "error_code": 401,
                                      "description": "Unauthorized"}, status=401)
        params = await self._params(request)
        loop = asyncio.get_running_loop()
        if self._refusals[method]:
            status, body = self._refusals[method].pop(0)
            self.calls.append(Call(method, params, status, loop.time()))
            return web.json_response(body, status=status)
        result = await self._result(method, params)
        self.calls.append(Call(method, params, 200, loop.time()))
        return web.json_response({"ok": True, "result": result})

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return dict(await request.json())
        form = await request.post()
        return {key: json.loads(str(value)) if key in JSON_PARAMS else str(value)
                for key, value in form.items()}

    async def _result(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return {"id": BOT_ID, "is_bot": True, "first_name": "小保",
                    "username": "xiaobao_test_bot"}
        if method == "getUpdates":
            loop = asyncio.get_running_loop()
            deadline = loop.time() + min(float(params.get("timeout", 0)), LONGEST_POLL)
            while not self._updates and loop.time() < deadline:
                await asyncio.sleep(0.01)
            served, self._updates = self._updates, []
            return served
        if method == "sendMessage":
            return {"message_id": next(self._message_ids), "date": DATE,
                    "chat": {"id": params["chat_id"], "type": "private"},
                    "text": params["text"]}
        if method in {"setMyCommands", "deleteWebhook", "setWebhook", "answerCallbackQuery"}:
            return True
        raise web.HTTPNotFound(text=f"the stand-in does not implement {method}")


def telegram_config(database_url: str, bot_api: BotApi, **telegram: Any) -> Any:
    """A test configuration with the Telegram channel pointed at the stand-in."""
    environ = {"XIAOBAO_TELEGRAM_TOKEN": TOKEN, "XIAOBAO_TELEGRAM_BASE_URL": bot_api.base_url}
    if telegram.get("webhook_url"):
        environ["XIAOBAO_TELEGRAM_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    # A text limit below Telegram's own 4,096 lets the overlong-message path be exercised.
    document = {"database": {"url": database_url}, "chat": {"max_text_chars": 2000},
                "telegram": {"poll_timeout": 1, "max_retries": 2, **telegram}}
    return build_config(document, environ=environ)


def keyboard_of(message: dict[str, Any]) -> list[dict[str, str]]:
    """The inline buttons under a sent message, row by row flattened."""
    return [button for row in message["reply_markup"]["inline_keyboard"] for button in row]


async def engine_says(client: Any, **incoming: Any) -> list[Reply]:
    """What the engine answers a brand-new user on another channel (the expected text)."""
    services = client.app[SERVICES]
    return await services.chat.handle(Incoming(channel="web", user_id="reference", **incoming))


@pytest.fixture
async def bot_api(aiohttp_server) -> BotApi:
    api = BotApi()
    server = await aiohttp_server(api.application(), host="127.0.0.1")
    api.base_url = str(server.make_url("/bot"))
    return api


@pytest.fixture
async def polling(bot_api, aiohttp_client, sqlite_url, knowledge_index):
    """The whole service, receiving Telegram updates by polling the stand-in.

    The stand-in comes first so that it is closed last, after the service has stopped.
    """
    client = await aiohttp_client(create_app(telegram_config(sqlite_url, bot_api),
                                             knowledge_index))
    await bot_api.wait_for(lambda: bool(bot_api.called("getUpdates")))
    return client


@pytest.fixture
async def webhook(bot_api, aiohttp_client, sqlite_url, knowledge_index):
    """The whole service, receiving Telegram updates on its own webhook route."""
    config = telegram_config(sqlite_url, bot_api, webhook_url="https://bot.example.org/telegram")
    return await aiohttp_client(create_app(config, knowledge_index))


# -- start-up -------------------------------------------------------------------------------
async def test_startup_registers_chinese_commands_and_polls(polling, bot_api):
    assert [call.method for call in bot_api.calls[:2]] == ["getMe", "setMyCommands"]
    registered = bot_api.called("setMyCommands")[0].params
    assert [c["command"] for c in registered["commands"]] == [
        "start", "menu", "help", "complain", "status", "check", "cancel"]
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in c["description"])
               for c in registered["commands"])
    assert registered["scope"] == {"type": "all_private_chats"}
    assert bot_api.called("deleteWebhook")
    poll = bot_api.called("getUpdates")[0].params
    assert poll["allowed_updates"] == ["message", "callback_query"]
    assert polling.app[TELEGRAM].bot.base_url == bot_api.base_url + TOKEN


async def test_serve_with_token_and_base_url_talks_to_the_stand_in(
    aiohttp_server, bot_api, tmp_path, knowledge_index
):
    environ = {
        "XIAOBAO_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "XIAOBAO_TELEGRAM_TOKEN": TOKEN,
        "XIAOBAO_TELEGRAM_BASE_URL": bot_api.base_url,
    }
    config = load_config(REPO / "config.toml", environ=environ)
    await aiohttp_server(create_app(config, knowledge_index), host="127.0.0.1")
    bot_api.say("/start")
    [greeting] = await bot_api.replies(1)
    assert greeting["text"] == texts.greeting(config.chat.service_name)


async def test_without_a_token_the_channel_is_off_and_the_service_runs(
    aiohttp_client, config, knowledge_index, bot_api
):
    client = await aiohttp_client(create_app(config, knowledge_index))
    assert (await client.get("/healthz")).status == 200
    assert TELEGRAM not in client.app
    assert bot_api.calls == []


# -- consumers ------------------------------------------------------------------------------
async def test_start_greets_with_the_menu_as_an_inline_keyboard(polling, bot_api):
    bot_api.say("/start")
    [greeting] = await bot_api.replies(1)
    assert greeting["chat_id"] == CONSUMER
    assert greeting["text"] == texts.greeting(polling.app[SERVICES].config.chat.service_name)
    buttons = keyboard_of(greeting)
    assert [b["text"] for b in buttons] == [b.label for b in texts.MENU_BUTTONS]
    assert [b["callback_data"] for b in buttons] == [b.action for b in texts.MENU_BUTTONS]
    assert greeting["link_preview_options"] == {"is_disabled": True}


@pytest.mark.parametrize(("payload", "action"), [("check", "check"),
                                                  ("complaint", "complaint"),
                                                  ("nonsense", "start")])
async def test_start_deep_links_open_a_feature(polling, bot_api, payload, action):
    bot_api.say(f"/start {payload}")
    [reply] = await bot_api.replies(1)
    assert reply["text"] == (await engine_says(polling, action=action))[0].text


async def test_a_question_is_answered_from_the_knowledge_base(polling, bot_api):
    expected = await engine_says(polling, text=QUESTION)
    bot_api.say(QUESTION)
    sent = await bot_api.replies(len(expected))
    assert [m["text"] for m in sent] == [r.text for r in expected]
    assert sent[0]["text"].startswith(f"【{QUESTION}】")
    assert [b["callback_data"] for b in keyboard_of(sent[-1])] == [
        b.action for b in expected[-1].buttons]


async def test_a_button_press_is_acknowledged_and_answered(polling, bot_api):
    bot_api.say("/start")
    [greeting] = await bot_api.replies(1)
    help_button = next(b for b in keyboard_of(greeting) if b["text"] == "使用帮助")
    press = bot_api.press(help_button["callback_data"])
    [_, answer] = await bot_api.replies(2)
    assert answer["text"] == texts.help_text(polling.app[SERVICES].config.chat.hotline)
    [acknowledged] = bot_api.called("answerCallbackQuery")
    assert acknowledged.params["callback_query_id"] == press["callback_query"]["id"]
    assert acknowledged.at <= bot_api.called("sendMessage")[-1].at


async def test_check_then_a_pasted_sms_gets_a_verdict(polling, bot_api):
    bot_api.say("/check")
    [prompt] = await bot_api.replies(1)
    assert prompt["text"] == texts.scam_check_prompt()
    bot_api.say(SCAM_SMS)
    [_, verdict] = await bot_api.replies(2)
    assert verdict["text"].startswith((texts.VERDICT_HEADINGS["scam"],
                                       texts.VERDICT_HEADINGS["suspicious"]))
    assert "http://icbc-vip.cc/login" in verdict["text"]
    assert all(len(b["callback_data"].encode()) <= MAX_CALLBACK_BYTES
               for b in keyboard_of(verdict))


async def test_cancel_mid_dialogue_leaves_the_scam_check(polling, bot_api):
    bot_api.say("/check")
    await bot_api.replies(1)
    bot_api.say("/cancel")
    [_, menu] = await bot_api.replies(2)
    assert menu["text"] == (await engine_says(polling, action="menu"))[0].text
    bot_api.say(QUESTION)
    sent = await bot_api.replies(3)
    assert sent[2]["text"].startswith(f"【{QUESTION}】")


async def test_menu_command_also_leaves_the_scam_check(polling, bot_api):
    bot_api.say("/check")
    bot_api.say("/menu")
    await bot_api.replies(2)
    bot_api.say(QUESTION)
    sent = await bot_api.replies(3)
    assert sent[2]["text"].startswith(f"【{QUESTION}】")


async def test_commands_addressed_to_the_bot_by_name_and_unknown_commands(polling, bot_api):
    bot_api.say("/help@xiaobao_test_bot")
    bot_api.say("/frobnicate")
    [help_reply, menu] = await bot_api.replies(2)
    assert help_reply["text"] == texts.help_text(polling.app[SERVICES].config.chat.hotline)
    assert menu["text"] == (await engine_says(polling, action="menu"))[0].text


async def test_wordless_and_overlong_messages(polling, bot_api):
    bot_api.say("", location={"latitude": 32.9, "longitude": 117.4})
    bot_api.say("长" * 2001)
    [wordless, overlong] = await bot_api.replies(2)
    assert wordless["text"] == texts.empty_message()
    assert overlong["text"] == too_long(2000)


# -- delivery -------------------------------------------------------------------------------
# python-telegram-bot 22 warns about its own use of `RetryAfter.retry_after`.
@pytest.mark.filterwarnings("ignore:.*attribute `retry_after` will be")
async def test_429_is_retried_after_retry_after_and_delivered(polling, bot_api):
    bot_api.refuse_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    bot_api.say("/help")
    [delivered] = await bot_api.replies(1)
    assert delivered["text"] == texts.help_text(polling.app[SERVICES].config.chat.hotline)
    refused, accepted = bot_api.called("sendMessage")
    assert (refused.status, accepted.status) == (429, 200)
    assert accepted.at - refused.at >= 1.0


async def test_an_update_repeated_by_the_server_is_handled_once(polling, bot_api):
    first = len(await engine_says(polling, text=QUESTION))
    question = bot_api.say(QUESTION)
    await bot_api.replies(first)
    bot_api.deliver(question)
    bot_api.say("/help")
    help_text = texts.help_text(polling.app[SERVICES].config.chat.hotline)
    await bot_api.wait_for(lambda: any(m["text"] == help_text for m in bot_api.sent()))
    # Updates are handled in order, so the repeat is done with: it sent nothing.
    assert [m["text"] for m in bot_api.sent()][first:] == [help_text]


async def test_unhandled_update_kinds_are_ignored_and_logged(polling, bot_api, caplog):
    caplog.set_level(logging.DEBUG, logger="handlers.telegram")
    edited = bot_api.deliver(bot_api.update(edited_message={
        "message_id": 1, "date": DATE, "edit_date": DATE + 5, "text": QUESTION,
        "chat": {"id": CONSUMER, "type": "private", "first_name": "测试"}}))
    post = bot_api.deliver(bot_api.update(channel_post={
        "message_id": 2, "date": DATE, "text": "公告",
        "chat": {"id": -1001234567890, "type": "channel", "title": "频道"}}))
    poll = bot_api.deliver(bot_api.update(poll={
        "id": "p1", "question": "?", "total_voter_count": 0, "is_closed": False,
        "is_anonymous": True, "type": "regular", "allows_multiple_answers": False,
        "allows_revoting": False, "members_only": False,
        "options": [{"text": "a", "voter_count": 0, "persistent_id": "a"},
                    {"text": "b", "voter_count": 0, "persistent_id": "b"}]}))
    group = bot_api.say(QUESTION, chat=-4001, chat_type="group")
    bot_api.say("/help")
    [only] = await bot_api.replies(1)
    assert only["text"] == texts.help_text(polling.app[SERVICES].config.chat.hotline)
    ignored = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    for update, kind in [(edited, "edited_message"), (post, "channel_post"), (poll, "poll"),
                         (group, "message")]:
        assert f"ignoring telegram update {update['update_id']} of kind {kind}" in ignored


async def test_nothing_personal_or_secret_is_logged_at_info(polling, bot_api, caplog):
    caplog.set_level(logging.DEBUG)
    bot_api.say(QUESTION)
    await bot_api.replies(1)
    for record in caplog.records:
        if record.levelno >= logging.INFO and record.name != "aiohttp.access":
            line = record.getMessage()
            assert QUESTION not in line and str(CONSUMER) not in line and TOKEN not in line


async def test_a_failure_is_logged_without_content_and_the_consumer_is_told(
    polling, bot_api, caplog
):
    async with polling.app[SERVICES].engine.begin() as connection:
        await connection.execute(text("DROP TABLE conversations"))
    bot_api.say(QUESTION)
    [apology] = await bot_api.replies(1)
    assert apology["text"] == trouble(polling.app[SERVICES].config.chat.hotline)
    [failure] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "failed with OperationalError" in failure.getMessage()
    assert QUESTION not in failure.getMessage() and str(CONSUMER) not in failure.getMessage()


# -- webhook --------------------------------------------------------------------------------
async def test_webhook_mode_registers_the_webhook_and_does_not_poll(webhook, bot_api):
    [registered] = bot_api.called("setWebhook")
    assert registered.params["url"] == "https://bot.example.org/telegram"
    assert registered.params["secret_token"] == WEBHOOK_SECRET
    assert registered.params["allowed_updates"] == ["message", "callback_query"]
    assert not bot_api.called("getUpdates")


@pytest.mark.parametrize("headers", [{}, {SECRET_HEADER: "wrong-secret"},
                                     {SECRET_HEADER: WEBHOOK_SECRET + "x"},
                                     {SECRET_HEADER: ""}])
async def test_webhook_without_the_right_secret_is_refused(webhook, bot_api, headers):
    response = await webhook.post("/telegram", json=bot_api.message("/start"), headers=headers)
    assert response.status == 403
    await webhook.post("/telegram", json=bot_api.message("/help"),
                       headers={SECRET_HEADER: WEBHOOK_SECRET})
    [only] = await bot_api.replies(1)
    assert only["text"].startswith("使用方法")


async def test_webhook_with_the_right_secret_is_processed(webhook, bot_api):
    response = await webhook.post("/telegram", json=bot_api.message("/start"),
                                  headers={SECRET_HEADER: WEBHOOK_SECRET})
    assert response.status == 200
    [greeting] = await bot_api.replies(1)
    assert greeting["text"] == texts.greeting(webhook.app[SERVICES].config.chat.service_name)


async def test_webhook_repeats_are_handled_once_and_bad_bodies_get_400(webhook, bot_api):
    headers = {SECRET_HEADER: WEBHOOK_SECRET}
    update = bot_api.message("/help")
    for _ in range(2):
        assert (await webhook.post("/telegram", json=update, headers=headers)).status == 200
    for body in (b"not json", b"[1]", b'{"message": {}}'):
        assert (await webhook.post("/telegram", data=body, headers=headers)).status == 400
    await webhook.post("/telegram", json=bot_api.message("/start"), headers=headers)
    [help_reply, greeting] = await bot_api.replies(2)
    assert len(bot_api.sent()) == 2
    assert help_reply["text"].startswith("使用方法") and greeting["text"].startswith("您好")


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.text(max_size=40))
chats = st.fixed_dictionaries({"id": st.one_of(st.integers(), st.text(max_size=10)),
                               "type": st.one_of(st.just("private"), json_scalars)})
messages = st.fixed_dictionaries(
    {"message_id": st.one_of(st.integers(), json_scalars), "chat": st.one_of(chats, json_scalars)},
    optional={"date": st.one_of(st.integers(), json_scalars),
              "text": st.one_of(st.text(max_size=200), json_scalars),
              "from": st.one_of(st.fixed_dictionaries({"id": st.integers(),
                                                       "is_bot": st.booleans(),
                                                       "first_name": st.text(max_size=20)}),
                                json_scalars)})
updates = st.one_of(
    # Update ids are logged (a repeat, an ignored kind), so none has a phone number's shape.
    st.fixed_dictionaries({"update_id": st.integers().filter(
                               lambda n: not looks_personal(str(n)))},
                          optional={"message": st.one_of(messages, json_scalars),
                                    "edited_message": messages,
                                    "callback_query": st.dictionaries(st.text(max_size=10),
                                                                      json_scalars, max_size=4)}),
    st.dictionaries(st.text(max_size=12), json_scalars, max_size=5),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(update=updates)
@example(update={"update_id": 45,  # found by this test: an OSError, a 500 before
                 "message": {"message_id": None, "chat": None, "date": 6.77680361916768e16}})
@example(update={"update_id": 46,  # and an OverflowError
                 "message": {"message_id": 1, "chat": {"id": 1, "type": "private"},
                             "date": 10**20}})
async def test_any_update_with_the_right_secret_gets_200_or_400(webhook, bot_api, update):
    """Telegram is trusted for its secret, not for its bodies: a body that names an
    update but holds nonsense (dates past the year 9999, ids of the wrong type, fields
    missing) is refused with 400 or queued, never a 500."""
    response = await webhook.post("/telegram", data=json.dumps(update),
                                  headers={SECRET_HEADER: WEBHOOK_SECRET})
    assert response.status in {200, 400}, await response.text()


# -- long messages, buttons and pushes ------------------------------------------------------
def long_answer() -> str:
    """A real answer from the knowledge base, repeated well past one message."""
    paragraph = texts.help_text("12378")
    return "\n\n".join(f"{number}. {paragraph}" for number in range(1, 80))


async def test_a_long_answer_is_split_at_paragraphs_with_buttons_under_the_last(
    polling, bot_api
):
    answer = long_answer()
    assert len(answer) > 2 * 4096
    services = polling.app[SERVICES]
    reply = Reply(answer, (texts.BACK_TO_MENU,))
    await send_replies(polling.app[TELEGRAM].bot, services.sessions, CONSUMER, [reply])
    sent = bot_api.sent()
    assert len(sent) >= 3
    assert all(utf16_units(m["text"]) <= 4096 for m in sent)
    assert "\n\n".join(m["text"] for m in sent) == answer
    assert [("reply_markup" in m) for m in sent] == [False] * (len(sent) - 1) + [True]


async def test_send_to_chat_pushes_a_message_to_a_consumer(polling, bot_api):
    await send_to_chat(polling.app[TELEGRAM], CONSUMER, "您的投诉 BB-2611-7K3Q 已有答复。")
    await send_to_chat(polling.app[TELEGRAM], CONSUMER, long_answer())
    sent = bot_api.sent()
    assert sent[0] == {"chat_id": CONSUMER, "text": "您的投诉 BB-2611-7K3Q 已有答复。",
                       "link_preview_options": {"is_disabled": True}}
    assert len(sent) > 2 and all(utf16_units(m["text"]) <= 4096 for m in sent)


def test_split_text_prefers_paragraphs_then_sentences_then_a_hard_cut():
    assert split_text("短消息") == ["短消息"]
    assert split_text("  \n ") == []
    sentences = "请先挂失银行卡，再去派出所报案。" * 600
    chunks = split_text(sentences)
    assert all(chunk.endswith("。") and len(chunk) <= 4096 for chunk in chunks)
    assert "".join(chunks) == sentences
    assert [len(c) for c in split_text("长" * 10000)] == [4096, 4096, 1808]
    emoji = split_text("😀" * 3000)
    assert [utf16_units(c) for c in emoji] == [4096, 1904]
    mixed = split_text("甲" * 3000 + "\n" + "乙" * 3000)
    assert mixed == ["甲" * 3000, "乙" * 3000]


async def test_long_button_actions_travel_as_a_stored_hash(services):
    action = "complaint:institution:" + "蚌埠" * 30
    data = await callback_data_for(services.sessions, action)
    assert len(data.encode()) <= MAX_CALLBACK_BYTES and data.startswith("#")
    assert await callback_data_for(services.sessions, action) == data
    assert await action_for(services.sessions, data) == action
    markup = await keyboard(services.sessions, [Button("投诉这家机构", action)])
    assert markup is not None and markup.inline_keyboard[0][0].callback_data == data
    assert await callback_data_for(services.sessions, "kb:card-fraud-report-loss") == (
        "kb:card-fraud-report-loss")
    hashed = await callback_data_for(services.sessions, "#short")
    assert hashed != "#short" and await action_for(services.sessions, hashed) == "#short"
    assert await action_for(services.sessions, "#" + "0" * 32) == "menu"


async def test_an_unknown_hashed_button_shows_the_menu(polling, bot_api):
    bot_api.press("#" + "f" * 32)
    [menu] = await bot_api.replies(1)
    assert menu["text"] == (await engine_says(polling, action="menu"))[0].text


def test_every_engine_button_fits_telegram_callback_data():
    actions = [b.action for b in (*texts.MENU_BUTTONS, texts.BACK_TO_MENU)]
    assert all(len(action.encode()) <= MAX_CALLBACK_BYTES for action in actions)


# -- configuration --------------------------------------------------------------------------
def test_commands_are_the_documented_consumer_commands():
    assert {c.name for c in COMMANDS} == {"start", "help", "menu", "complain", "status",
                                          "check", "cancel"}


@pytest.mark.parametrize(
    ("document", "environ", "names"),
    [
        ({"telegram": {"webhook_url": "https://bot.example.org/telegram"}}, {},
         "XIAOBAO_TELEGRAM_WEBHOOK_SECRET"),
        ({"telegram": {"token": "123:abc"}}, {}, "XIAOBAO_TELEGRAM_TOKEN"),
        ({"telegram": {"webhook_secret": "abc"}}, {}, "XIAOBAO_TELEGRAM_WEBHOOK_SECRET"),
        ({}, {"XIAOBAO_TELEGRAM_WEBHOOK_SECRET": "has spaces"},
         "XIAOBAO_TELEGRAM_WEBHOOK_SECRET"),
        ({"telegram": {"webhook_path": "telegram"}}, {}, "telegram.webhook_path"),
        ({"telegram": {"base_url": "api.telegram.org"}}, {}, "telegram.base_url"),
        ({"telegram": {"poll_timeout": -1}}, {}, "telegram.poll_timeout"),
        ({}, {"XIAOBAO_TELEGRAM_MAX_RETRIES": "many"}, "XIAOBAO_TELEGRAM_MAX_RETRIES"),
    ],
)
def test_bad_telegram_configuration_is_one_line_naming_the_key(document, environ, names):
    with pytest.raises(ConfigError) as raised:
        build_config(document, environ)
    assert names in str(raised.value) and "\n" not in str(raised.value)


def test_telegram_secrets_come_from_the_environment_and_stay_out_of_repr():
    config = build_config({}, {"XIAOBAO_TELEGRAM_TOKEN": TOKEN,
                               "XIAOBAO_TELEGRAM_BASE_URL": "http://127.0.0.1:8081/bot",
                               "XIAOBAO_TELEGRAM_WEBHOOK_URL": "https://bot.example.org/t",
                               "XIAOBAO_TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET})
    assert config.telegram.enabled and config.telegram.token == TOKEN
    assert config.telegram.base_url == "http://127.0.0.1:8081/bot"
    assert TOKEN not in repr(config) and WEBHOOK_SECRET not in repr(config)
    assert not build_config({}, {}).telegram.enabled
