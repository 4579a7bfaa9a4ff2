"""WeChat Official Account channel: the endpoint WeChat's servers call.

Only the transport lives here.  Every request is verified first (signature in constant
time, then the timestamp against replays) before its body is read; the body is size-limited
and parsed with `defusedxml`; safe-mode requests are decrypted and answered encrypted, each
request in the mode it arrives in.  Messages become an `Incoming` for the engine, whose
replies come back as one passive text reply: buttons as "回复 N …" lines (a digit reply
presses them) and long answers cut into pages read with "更多".

WeChat's 5-second rule: a message is answered within `wechat.reply_budget_seconds`; every
message answered is remembered, with its reply, in the follower's state that the turn
saves (`handlers.wechat_store`), so WeChat's retries (at any worker) get the stored reply,
nothing is handled twice, and a message whose turn failed (a worker killed mid-turn) is
still answered on the retry; an answer that overruns the budget is sent later through the
customer-service API (or kept for "更多" without one).
The wire format itself is in `handlers.wechat_protocol`.

A follower who writes faster than `limits.wechat_per_user_per_minute` is asked to slow down
without the engine being called.  There is no per-address limit here: every request comes
from WeChat's own servers, so an address limit would throttle all followers at once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot import db
from bot.config import Config, ConfigError, WechatConfig
from bot.limits import limits_of
from bot.messages import Incoming, Reply
from bot.services import SERVICES, Services
from bot.state import load_state, read_state, save_state
from handlers import wechat_store as store
from handlers.wechat_api import WechatApi, WechatApiError, http_session
from handlers.wechat_protocol import (
    PASSIVE_TEXT_LIMIT_BYTES,
    MenuError,
    ProtocolError,
    check_msg_signature,
    check_signature,
    decrypt,
    delivery_key,
    encrypt,
    encrypted_reply,
    is_fresh,
    menu_definition,
    paginate,
    parse_xml,
    render,
    text_reply,
)

log = logging.getLogger(__name__)

CHANNEL = "wechat"
SUCCESS = "success"
MORE_WORDS = frozenset({"更多", "下一段"})
NUMBERED = {"numbered_choices": True}
WAIT_POLL_SECONDS = 0.1
DRAIN_SECONDS = 10.0
SWEEP_SECONDS = 3600.0
READ_CHUNK_BYTES = 8192
MAX_USER_ID_CHARS = 128
ANSWERED_EVENTS = frozenset({"subscribe", "click"})

# What this channel says by itself (the engine says everything else).
MEDIA_NAMES = {"image": "图片", "video": "视频", "shortvideo": "小视频", "location": "位置",
               "link": "链接", "file": "文件"}
VOICE_UNCLEAR = ("抱歉，这段语音我没能听清。请您打字告诉我，"
                 "比如“银行卡被盗刷了怎么办”。")
NO_MORE_PAGES = "后面没有了。您可以直接打字提问，或回复「菜单」。"
STILL_WORKING = "您的问题我还在查，请过几秒钟回复「更多」看答案。"
SLOW_DOWN = "您发消息太快了，请稍等一会儿再发。"


def media_note(kind: str) -> str:
    """What the bot can do, for a message it cannot read (a picture, a location, ...)."""
    name = MEDIA_NAMES.get(kind, "这类消息")
    return (f"抱歉，我暂时看不了{name}，只能看懂文字。\n"
            "我可以：解答银行、保险方面的疑问；帮您看看收到的短信是不是诈骗"
            "（请把短信的文字复制发给我）；帮您向银行或保险公司投诉。\n"
            "请直接打字告诉我，或回复「菜单」。")


def trouble(hotline: str) -> str:
    """The apology when answering failed, naming a person to call."""
    return f"抱歉，系统刚才出了点问题，请稍后再发一次。着急的话请拨打{hotline}。"


class WechatChannel:
    """The WeChat adapter's long-lived parts: the engine, the API client, late deliveries."""

    def __init__(self, services: Services, config: WechatConfig, api: WechatApi | None) -> None:
        self.services = services
        self.config = config
        self.api = api
        self.page_bytes = PASSIVE_TEXT_LIMIT_BYTES
        self._tasks: set[asyncio.Task[Any]] = set()
        self._next_sweep = 0.0

    # -- the 5-second rule ---------------------------------------------------------------
    async def respond(self, message: Mapping[str, str], deadline: float) -> str | None:
        """The passive reply to one verified message (None means "success": no reply)."""
        if _is_quiet(message):
            return None
        key = delivery_key(message)
        self._sweep_when_due()
        user = message["FromUserName"]
        task = self._spawn(self._answer(message, key))
        loop = asyncio.get_running_loop()
        done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
        if task in done:
            pages = task.result()  # claimed, answered and kept in one transaction
            if pages is None:  # a repeat of a delivery answered (or being answered) before
                return await self._reply_of_retry(key, user, deadline)
            return (pages[0] if pages else "") or None
        late = "" if self.api is not None else STILL_WORKING
        self._spawn(self._deliver_late(task, key, late, user))
        log.info("wechat: answer overran the %.1f s budget; delivering it later",
                 self.config.reply_budget_seconds)
        return late or None

    async def _alone(self, key: str, user: str,
                     pages: Callable[[dict[str, Any]], list[str]]) -> list[str] | None:
        """A message that does not reach the engine ("更多", media): answered and
        remembered in one transaction, like the engine's turns (`_Delivery`)."""
        async with self.services.transactions.begin() as tx:
            state = await load_state(tx, CHANNEL, user)
            if store.was_answered(state, key):
                return None
            answer = pages(state)
            store.remember(state, key, answer, time.time())
            await save_state(tx, CHANNEL, user, state)
        return answer

    def _sweep_when_due(self) -> None:
        """Start forgetting what silent followers left behind, at most once every
        `SWEEP_SECONDS` per worker.  It runs in the background: a sweep reads the whole
        conversations table, and the message that starts it must not wait for that."""
        now = asyncio.get_running_loop().time()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_SECONDS
        self._spawn(self._sweep())

    async def _sweep(self) -> None:
        try:
            while True:
                async with self.services.transactions.begin() as tx:
                    found = await store.forget_silent(tx, CHANNEL, store.SWEEP_BATCH)
                if found < store.SWEEP_BATCH:
                    return
        except Exception as error:  # the next sweep, an hour later, tries again
            if db.is_unreachable(error):
                log.warning("wechat: sweep skipped, database unavailable (%s)",
                            type(error).__name__)
            else:
                log.exception("wechat: sweeping silent followers' memory failed")

    async def _reply_of_retry(self, key: str, user: str, deadline: float) -> str | None:
        """A retry waits briefly for the first delivery's reply and repeats it."""
        loop = asyncio.get_running_loop()
        while True:
            async with self.services.transactions.begin(read_only=True) as tx:
                state, _ = await read_state(tx, CHANNEL, user)
            reply = store.reply_of(state, key)
            if reply is not None:
                return reply or None
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(WAIT_POLL_SECONDS, remaining))

    async def _deliver_late(self, task: asyncio.Task[list[str] | None], key: str, late: str,
                            user: str) -> None:
        """Send an overrun answer through the API, or keep it for "更多" when that fails.

        The passive reply already given (`late`) is stored once the turn has committed,
        so WeChat's retries repeat it instead of waiting.
        """
        pages = await task
        if pages is None:
            return  # a repeat: the first delivery answers
        await self._update_memory(user, lambda state: store.set_reply(
            state, key, late, time.time()))
        if not pages:
            return
        if self.api is not None:
            try:
                await self.api.send_text(user, pages[0])
            except WechatApiError as error:
                log.warning("wechat: late answer not sent through the API (%s); "
                            "kept for 更多", error)
            else:
                pages = pages[1:]
        try:
            await self._update_memory(user, lambda state: store.keep_pages(state, pages))
        except Exception:
            log.exception("wechat: could not keep the pages of a late answer")

    async def _update_memory(self, user: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Change the follower's state outside a turn (locked, so no turn is overwritten)."""
        async with self.services.transactions.begin() as tx:
            state = await load_state(tx, CHANNEL, user)
            change(state)
            await save_state(tx, CHANNEL, user, state)

    # -- messages ------------------------------------------------------------------------
    async def _answer(self, message: Mapping[str, str], key: str) -> list[str] | None:
        """The pages of the answer to one message, None for a repeat of a claimed delivery
        (failures become an apology, not a 500)."""
        kind = message.get("MsgType", "").strip().lower()
        try:
            return await self._pages_for(kind, message, key)
        except Exception as error:
            if db.is_unreachable(error):
                log.warning("wechat: database unavailable (%s)", type(error).__name__)
            else:
                log.exception("wechat: answering a %s message failed", kind)
            return [trouble(self.services.config.chat.hotline)]

    async def _pages_for(self, kind: str, message: Mapping[str, str],
                         key: str) -> list[str] | None:
        user = message["FromUserName"]
        if kind == "text":
            text = message.get("Content", "").strip()
            if text in MORE_WORDS:
                return await self._alone(
                    key, user, lambda state: store.pending_pages(state) or [NO_MORE_PAGES])
            limit = self.services.config.chat.max_text_chars
            return await self._engine(Incoming(CHANNEL, user, text=text[:limit], meta=NUMBERED),
                                      key)
        if kind == "voice":
            recognition = message.get("Recognition", "").strip()
            if recognition:
                return await self._engine(Incoming(CHANNEL, user, text=recognition,
                                                   meta=NUMBERED), key)
            return await self._alone(key, user, _constant([VOICE_UNCLEAR]))
        if kind == "event":
            event = message.get("Event", "").strip().lower()
            if event == "subscribe":
                return await self._engine(Incoming(CHANNEL, user, action="start", meta=NUMBERED),
                                          key)
            if event == "click":
                action = message.get("EventKey", "").strip() or "menu"
                return await self._engine(Incoming(CHANNEL, user, action=action, meta=NUMBERED),
                                          key)
            return []
        return await self._alone(key, user, _constant([media_note(kind)]))

    async def _engine(self, incoming: Incoming, key: str) -> list[str] | None:
        delivery = _Delivery(key, self.page_bytes)
        if await self.services.chat.handle_delivery(incoming, delivery) is None:
            return None
        return delivery.pages

    # -- background work -----------------------------------------------------------------
    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run work that may outlive the request, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        """Let late deliveries finish before shutdown (bounded), then cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=DRAIN_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


@dataclass
class _Delivery:
    """One WeChat message on its way through the engine (`Engine.handle_delivery`): a
    repeat is recognised, and the rendered reply and unread pages are remembered, in the
    follower's state that the turn saves."""

    key: str
    page_bytes: int
    pages: list[str] = field(default_factory=list)

    def is_repeat(self, state: dict[str, Any]) -> bool:
        return store.was_answered(state, self.key)

    def keep(self, state: dict[str, Any], replies: list[Reply]) -> None:
        self.pages = paginate(render(replies), self.page_bytes)
        store.remember(state, self.key, self.pages, time.time())


def _constant(pages: list[str]) -> Callable[[dict[str, Any]], list[str]]:
    return lambda _state: pages


WECHAT = web.AppKey("wechat", WechatChannel)


def _is_quiet(message: Mapping[str, str]) -> bool:
    """Events that need no answer at all (unsubscribe, a menu link opened, ...)."""
    if message.get("MsgType", "").strip().lower() != "event":
        return False
    return message.get("Event", "").strip().lower() not in ANSWERED_EVENTS


# -- HTTP ----------------------------------------------------------------------------------
def _refuse(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=reason, content_type="text/plain")


class _TooLarge(Exception):
    """The body is over `wechat.max_body_bytes`."""


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refused (without reading it all) once it passes `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise _TooLarge
    body = bytearray()
    async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


def _verified(query: Mapping[str, str], config: WechatConfig) -> web.Response | None:
    """The refusal for a request that is not signed with our token or is stale, else None."""
    timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
    if not check_signature(config.token, timestamp, nonce, query.get("signature", "")):
        return _refuse(403, "bad signature")
    if not is_fresh(timestamp, time.time()):
        return _refuse(403, "stale timestamp")
    return None


async def verify(request: web.Request) -> web.Response:
    """GET: WeChat's URL verification; echo `echostr` (decrypted, when sent encrypted)."""
    config = request.app[WECHAT].config
    query = request.query
    echostr = query.get("echostr", "")
    if "msg_signature" in query:
        timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
        if not config.can_decrypt:
            return _refuse(403, "safe mode is not configured")
        if not check_msg_signature(config.token, timestamp, nonce, echostr,
                                   query["msg_signature"]):
            return _refuse(403, "bad signature")
        if not is_fresh(timestamp, time.time()):
            return _refuse(403, "stale timestamp")
        try:
            echostr = decrypt(echostr, config.aes_key, config.app_id).decode("utf-8")
        except (ProtocolError, UnicodeDecodeError):
            return _refuse(400, "echostr does not decrypt")
    else:
        refusal = _verified(query, config)
        if refusal is not None:
            return refusal
    return web.Response(text=echostr, content_type="text/plain",
                        headers={"X-Content-Type-Options": "nosniff"})


class _Forbidden(ProtocolError):
    """A safe-mode payload whose `msg_signature` does not match."""


def _open(body: bytes, query: Mapping[str, str], safe: bool,
          config: WechatConfig) -> dict[str, str]:
    """The message fields of a verified request body (decrypted in safe mode)."""
    fields = parse_xml(body)
    if not safe:
        return fields
    encrypted = fields.get("Encrypt", "").strip()
    if not check_msg_signature(config.token, query.get("timestamp", ""),
                               query.get("nonce", ""), encrypted,
                               query.get("msg_signature", "")):
        raise _Forbidden("bad msg_signature")
    return parse_xml(decrypt(encrypted, config.aes_key, config.app_id))


def _check_fields(message: Mapping[str, str]) -> str | None:
    """What is missing from a message for it to be answered, or None."""
    for name in ("ToUserName", "FromUserName", "MsgType"):
        if not message.get(name, "").strip():
            return f"{name} is missing"
    if len(message["FromUserName"]) > MAX_USER_ID_CHARS:
        return "FromUserName is too long"
    if not message.get("CreateTime", "").strip().isdigit():
        return "CreateTime is missing"
    return None


async def receive(request: web.Request) -> web.Response:
    """POST: one message or event from WeChat, answered with a passive reply in time."""
    channel = request.app[WECHAT]
    config = channel.config
    deadline = asyncio.get_running_loop().time() + config.reply_budget_seconds
    query = request.query
    refusal = _verified(query, config)
    if refusal is not None:
        return refusal
    safe = query.get("encrypt_type", "").strip().lower() == "aes"
    if safe and not config.can_decrypt:
        return _refuse(403, "safe mode is not configured")
    if not safe and config.mode == "safe":
        return _refuse(403, "plain requests are refused in safe mode")
    try:
        body = await _read_body(request, config.max_body_bytes)
    except _TooLarge:
        return _refuse(413, "body too large")
    try:
        message = _open(body, query, safe, config)
    except _Forbidden:
        return _refuse(403, "bad msg_signature")
    except ProtocolError as error:
        return _refuse(400, str(error))
    problem = _check_fields(message)
    if problem is not None:
        return _refuse(400, problem)
    limits = limits_of(request)  # per follower only: every request comes from WeChat itself
    if not _is_quiet(message) and limits.check((limits.wechat_user, message["FromUserName"])):
        content: str | None = SLOW_DOWN
    else:
        content = await channel.respond(message, deadline)
    if content is None:
        return web.Response(text=SUCCESS, content_type="text/plain")
    now = int(time.time())
    xml = text_reply(message["FromUserName"], message["ToUserName"], now, content)
    if safe:
        encrypted = encrypt(xml.encode("utf-8"), config.aes_key, config.app_id)
        xml = encrypted_reply(config.token, encrypted, str(now), str(secrets.randbelow(10**10)))
    return web.Response(text=xml, content_type="application/xml")


def setup(app: web.Application, config: Config) -> None:
    """Mount the WeChat endpoint, only when XIAOBAO_WECHAT_TOKEN is set."""
    wechat = config.wechat
    if not wechat.enabled:
        return
    try:
        menu_definition(wechat.menu)
    except MenuError as error:
        raise ConfigError(f"wechat.menu: {error}") from None

    async def channel_ctx(app: web.Application) -> AsyncIterator[None]:
        async with http_session() as http:
            services = app[SERVICES]
            api = WechatApi(http, services.sessions, wechat) if wechat.app_secret else None
            channel = WechatChannel(services, wechat, api)
            app[WECHAT] = channel
            yield
            await channel.drain()

    app.cleanup_ctx.append(channel_ctx)
    app.router.add_get(wechat.path, verify)
    app.router.add_post(wechat.path, receive)

