"""Telegram channel: python-telegram-bot wired to the engine, by polling or by webhook.

Only Telegram lives here.  A consumer's command, message or button press in a private chat
becomes an `Incoming` (the user id is the private chat's id, so whoever answers later can
write back with `send_to_chat`); the engine's replies become messages with inline keyboards,
split below Telegram's 4,096-character limit.  Everything that must survive a restart or
be shared between workers lives in the database: an update is claimed once in
`ProcessedDelivery` before it is handled, so a repeat is dropped whichever worker it
reaches, and a button action too long for Telegram's 64-byte callback data is stored there
under a short hash.

The python-telegram-bot `Application` runs inside the service's own aiohttp application
(`setup` adds its cleanup context): in polling mode its updater fetches updates, on the
leader worker only (`bot.leadership`: Telegram allows one poller per bot); in webhook
mode it is built without an updater and the route at `telegram.webhook_path` checks
Telegram's secret header in constant time and feeds `update_queue`.

Staff commands in linked groups (/link, /queue, /unlink) are in `handlers.telegram_staff`;
they are registered first so that they also work in private chats.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeAllGroupChats,
    BotCommandScopeAllPrivateChats,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Update,
)
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    Defaults,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.config import Config, TelegramConfig
from bot.leadership import while_leader
from bot.messages import Button, Incoming, Reply
from bot.models import ProcessedDelivery
from bot.services import SERVICES, Services
from handlers.telegram_staff import STAFF_COMMANDS, StaffChat

log = logging.getLogger(__name__)

CHANNEL = "telegram"
# `ProcessedDelivery.channel` of the rows that map a hashed callback data to its action.
ACTION_CHANNEL = "telegram-action"
MAX_MESSAGE_UNITS = 4096  # Telegram counts UTF-16 code units
MAX_CALLBACK_BYTES = 64
HASHED_PREFIX = "#"
HASH_HEX_CHARS = 32
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = ("message", "callback_query")
FALLBACK_ACTION = "menu"
KEYBOARD_ONLY_TEXT = "请选择："
# Sentence ends a long message may be split after, best first.
SENTENCE_ENDS = ("。", "！", "？", "!", "?", "；", ";", "…", ". ")

Context = ContextTypes.DEFAULT_TYPE
Callback = Callable[[Update, Context], Awaitable[None]]
TELEGRAM = web.AppKey("telegram", Application)


@dataclass(frozen=True)
class Command:
    """A consumer command: what the menu shows, and what the engine receives."""

    name: str
    description: str
    action: str | None = None
    text: str | None = None


COMMANDS = (
    Command("start", "开始使用", action="start"),
    Command("menu", "主菜单", text="菜单"),
    Command("help", "使用帮助", action="help"),
    Command("complain", "我要投诉", action="complaint"),
    Command("status", "查投诉进度", action="status"),
    Command("check", "帮我看看是不是诈骗", action="check"),
    Command("cancel", "取消当前操作", text="取消"),
)
# `t.me/BOT?start=PAYLOAD` links (from posters, the web page, ...) open one feature at once.
DEEP_LINKS = {"complaint": "complaint", "check": "check"}


def too_long(limit: int) -> str:
    """What a consumer reads when a message exceeds `chat.max_text_chars`."""
    return f"您发的内容太长了（超过{limit}个字）。请只发最关键的部分，或分几次发给我。"


def trouble(hotline: str) -> str:
    """What a consumer reads when their message could not be handled."""
    return (
        "抱歉，系统暂时出了点问题，请稍后再试。\n"
        f"着急的话请拨打{hotline}银行保险消费者投诉维权热线；遇到诈骗请马上拨打110或96110。"
    )


# -- rendering ------------------------------------------------------------------------------
def utf16_units(text: str) -> int:
    """Length as Telegram counts it (characters outside the BMP count twice)."""
    return len(text.encode("utf-16-le")) // 2


def _fitting_prefix(text: str, limit: int) -> int:
    """How many characters of `text` fit in `limit` UTF-16 units."""
    units = 0
    for index, character in enumerate(text):
        units += 2 if ord(character) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def _last_end(window: str, separators: Sequence[str]) -> int:
    """Just after the last of `separators` in `window`, or 0 when there is none."""
    ends = [window.rfind(separator) + len(separator) for separator in separators
            if separator in window]
    return max(ends, default=0)


def _cut(window: str) -> int:
    """Where to end a chunk inside `window`: a paragraph, line or sentence end if any."""
    half = len(window) // 2
    for separators in (("\n\n",), ("\n",), SENTENCE_ENDS, (" ",)):
        if (cut := _last_end(window, separators)) > half:
            return cut
    return _last_end(window, ("\n", *SENTENCE_ENDS)) or len(window)


def split_text(text: str, limit: int = MAX_MESSAGE_UNITS) -> list[str]:
    """Split a long reply into messages Telegram accepts, at the cleanest boundaries."""
    chunks: list[str] = []
    rest = text.strip()
    while utf16_units(rest) > limit:
        window = rest[: _fitting_prefix(rest, limit)]
        cut = _cut(window)
        chunk = rest[:cut].rstrip()
        if chunk:
            chunks.append(chunk)
        rest = rest[cut:].lstrip()
    if rest:
        chunks.append(rest)
    return chunks


def _action_key(action: str) -> str:
    digest = hashlib.sha256(action.encode("utf-8")).hexdigest()
    return HASHED_PREFIX + digest[:HASH_HEX_CHARS]


async def callback_data_for(sessions: async_sessionmaker[AsyncSession], action: str) -> str:
    """The callback data for a button: the action itself, or a stored hash when too long."""
    if len(action.encode("utf-8")) <= MAX_CALLBACK_BYTES and not action.startswith(
        HASHED_PREFIX
    ):
        return action
    key = _action_key(action)
    try:
        async with sessions() as session, session.begin():
            if await session.get(ProcessedDelivery, (ACTION_CHANNEL, key)) is None:
                session.add(ProcessedDelivery(channel=ACTION_CHANNEL, delivery_key=key,
                                              reply=action))
    except IntegrityError:
        pass  # another worker stored the same action under the same key first
    return key


async def action_for(sessions: async_sessionmaker[AsyncSession], data: str) -> str:
    """The engine action behind a pressed button's callback data (the menu if unknown)."""
    if not data.startswith(HASHED_PREFIX):
        return data
    async with sessions() as session:
        row = await session.get(ProcessedDelivery, (ACTION_CHANNEL, data))
    return row.reply if row is not None and row.reply else FALLBACK_ACTION


async def keyboard(
    sessions: async_sessionmaker[AsyncSession], buttons: Sequence[Button]
) -> InlineKeyboardMarkup | None:
    """The engine's buttons as an inline keyboard, one button per row."""
    if not buttons:
        return None
    rows = [
        [InlineKeyboardButton(button.label,
                              callback_data=await callback_data_for(sessions, button.action))]
        for button in buttons
    ]
    return InlineKeyboardMarkup(rows)


async def send_replies(
    bot: Bot, sessions: async_sessionmaker[AsyncSession], chat_id: int, replies: Sequence[Reply]
) -> None:
    """Send the engine's replies in order; a reply's buttons go under its last part."""
    for reply in replies:
        markup = await keyboard(sessions, reply.buttons)
        chunks = split_text(reply.text)
        if not chunks and markup is not None:
            chunks = [KEYBOARD_ONLY_TEXT]
        for number, chunk in enumerate(chunks, 1):
            await bot.send_message(chat_id, chunk,
                                   reply_markup=markup if number == len(chunks) else None)


async def send_to_chat(application: Application, chat_id: int, text: str) -> None:
    """Push a message to a consumer's chat (staff replies, complaint updates)."""
    for chunk in split_text(text):
        await application.bot.send_message(chat_id, chunk)


# -- deliveries -----------------------------------------------------------------------------
async def claim_delivery(sessions: async_sessionmaker[AsyncSession], key: str) -> bool:
    """Record that an update is being handled; False when some worker already did."""
    try:
        async with sessions() as session, session.begin():
            session.add(ProcessedDelivery(channel=CHANNEL, delivery_key=key))
    except IntegrityError:
        return False
    return True


def update_kind(update: Update) -> str:
    """The kind of an update ("message", "poll", ...), for logs that carry no content."""
    kinds = [key for key in update.to_dict() if key != "update_id"]
    return kinds[0] if kinds else "empty"


# -- consumer conversation ------------------------------------------------------------------
class ConsumerChat:
    """Consumers in private chats: commands, messages and button presses to the engine."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def register(self, application: Application) -> None:
        """Add the consumer handlers; a repeated update is stopped before any of them."""
        private = filters.ChatType.PRIVATE & filters.UpdateType.MESSAGE
        application.add_handler(TypeHandler(Update, self.claim), group=-1)
        for command in COMMANDS:
            application.add_handler(
                CommandHandler(command.name, self.command(command), filters=private)
            )
        application.add_handler(MessageHandler(private & filters.COMMAND, self.unknown_command))
        application.add_handler(MessageHandler(private & (filters.TEXT | filters.CAPTION),
                                               self.message))
        application.add_handler(MessageHandler(private & filters.ATTACHMENT, self.attachment))
        application.add_handler(CallbackQueryHandler(self.button))
        application.add_handler(TypeHandler(Update, self.ignore))
        application.add_error_handler(self.failed)

    async def claim(self, update: Update, context: Context) -> None:
        """Let each update through once, however often Telegram or a worker delivers it."""
        key = f"{context.bot.id}:{update.update_id}"
        if not await claim_delivery(self.services.sessions, key):
            log.debug("telegram update %s was handled already; dropping the repeat",
                      update.update_id)
            raise ApplicationHandlerStop

    def command(self, command: Command) -> Callback:
        """The handler of one command: its engine action, or the words it stands for."""

        async def handle(update: Update, context: Context) -> None:
            action = command.action
            if command.name == "start" and context.args:
                action = DEEP_LINKS.get(context.args[0], action)
            await self.converse(update, context, text=command.text, action=action)

        return handle

    async def unknown_command(self, update: Update, context: Context) -> None:
        """Show the menu for a command the bot does not know."""
        await self.converse(update, context, action=FALLBACK_ACTION)

    async def message(self, update: Update, context: Context) -> None:
        """Pass a typed message (or a photo's caption) to the engine."""
        message = update.effective_message
        text = (message.text or message.caption or "") if message is not None else ""
        limit = self.services.config.chat.max_text_chars
        chat = update.effective_chat
        if len(text) > limit and chat is not None:
            await context.bot.send_message(chat.id, too_long(limit))
            return
        await self.converse(update, context, text=text)

    async def attachment(self, update: Update, context: Context) -> None:
        """A sticker, voice note or file without words: the engine asks for text."""
        await self.converse(update, context, text="")

    async def button(self, update: Update, context: Context) -> None:
        """Acknowledge a button press, then send its action to the engine."""
        query = update.callback_query
        if query is None:
            return
        await query.answer()
        chat = update.effective_chat
        if query.data is None or chat is None or chat.type != ChatType.PRIVATE:
            log.debug("ignoring telegram update %s: button outside a private chat",
                      update.update_id)
            return
        action = await action_for(self.services.sessions, query.data)
        await self.converse(update, context, action=action)

    async def ignore(self, update: Update, context: Context) -> None:
        """Drop an update kind the bot does not handle (edits, channel posts, polls...)."""
        log.debug("ignoring telegram update %s of kind %s", update.update_id,
                  update_kind(update))

    async def converse(self, update: Update, context: Context, *, text: str | None = None,
                       action: str | None = None) -> None:
        """One engine turn for the chat the update came from, replies sent back to it."""
        chat = update.effective_chat
        if chat is None:
            return
        incoming = Incoming(channel=CHANNEL, user_id=str(chat.id), text=text, action=action)
        replies = await self.services.chat.handle(incoming)
        await send_replies(context.bot, self.services.sessions, chat.id, replies)

    async def failed(self, update: object, context: Context) -> None:
        """Log a failure without the update's content, and tell the consumer to retry."""
        error = context.error
        update_id = update.update_id if isinstance(update, Update) else None
        where = "".join(traceback.format_tb(error.__traceback__)) if error else ""
        log.error("telegram update %s failed with %s\n%s", update_id,
                  type(error).__name__, where)
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is not None and chat.type == ChatType.PRIVATE:
            try:
                await context.bot.send_message(chat.id,
                                               trouble(self.services.config.chat.hotline))
            except TelegramError as problem:
                log.warning("could not apologise for telegram update %s: %s", update_id,
                            type(problem).__name__)
        raise ApplicationHandlerStop  # no later handler gets a half-handled update


# -- wiring ---------------------------------------------------------------------------------
def build_application(services: Services) -> Application:
    """The python-telegram-bot application for this configuration, handlers registered."""
    telegram = services.config.telegram
    builder = (
        ApplicationBuilder()
        .token(telegram.token)
        .base_url(telegram.base_url)
        .rate_limiter(AIORateLimiter(max_retries=telegram.max_retries))
        .defaults(Defaults(link_preview_options=LinkPreviewOptions(is_disabled=True)))
    )
    if telegram.webhook_url:
        builder = builder.updater(None)
    application = builder.build()
    StaffChat(services).register(application)  # first: /link etc. also work in private
    ConsumerChat(services).register(application)
    return application


async def start_channel(application: Application, telegram: TelegramConfig, *,
                        poll: bool = True) -> None:
    """Register the commands, then receive updates by webhook or (if `poll`) by polling."""
    await application.bot.set_my_commands(
        [BotCommand(command.name, command.description) for command in COMMANDS],
        scope=BotCommandScopeAllPrivateChats(),
    )
    await application.bot.set_my_commands(list(STAFF_COMMANDS),
                                          scope=BotCommandScopeAllGroupChats())
    if telegram.webhook_url:
        await application.bot.set_webhook(
            telegram.webhook_url, secret_token=telegram.webhook_secret,
            allowed_updates=list(ALLOWED_UPDATES),
        )
    elif poll and application.updater is not None:
        await application.updater.start_polling(
            poll_interval=0.0, timeout=telegram.poll_timeout,
            allowed_updates=list(ALLOWED_UPDATES),
        )
    await application.start()


async def poll_updates(application: Application, telegram: TelegramConfig) -> None:
    """Fetch updates by long polling until cancelled (run by the leader worker only)."""
    updater = application.updater
    if updater is None:
        return
    await updater.start_polling(poll_interval=0.0, timeout=telegram.poll_timeout,
                                allowed_updates=list(ALLOWED_UPDATES))
    try:
        await asyncio.Event().wait()
    finally:
        if updater.running:
            await updater.stop()


async def stop_channel(application: Application) -> None:
    """Stop fetching, finish the update in hand, and close the HTTP clients."""
    if application.updater is not None and application.updater.running:
        await application.updater.stop()
    if application.running:
        await application.stop()
    await application.shutdown()


async def telegram_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run the bot for as long as the service runs (after the shared services open)."""
    services = app[SERVICES]
    # httpx logs every request URL at INFO, and Bot API URLs contain the bot token.
    httpx_log = logging.getLogger("httpx")
    if httpx_log.level == logging.NOTSET:
        httpx_log.setLevel(logging.WARNING)
    application = build_application(services)
    polling: asyncio.Task[None] | None = None
    try:
        await application.initialize()
        await start_channel(application, services.config.telegram, poll=False)
        app[TELEGRAM] = application
        if application.updater is not None:  # Telegram allows one poller: the leader
            polling = asyncio.create_task(while_leader(
                app, functools.partial(poll_updates, application, services.config.telegram),
                "telegram polling"))
        log.info("telegram channel started (%s)",
                 "webhook" if services.config.telegram.webhook_url else "polling")
        yield
    finally:
        if polling is not None:
            polling.cancel()
            await asyncio.gather(polling, return_exceptions=True)
        await stop_channel(application)


async def webhook(request: web.Request) -> web.Response:
    """POST webhook_path: an update from Telegram, verified, queued for the application."""
    expected = request.app[SERVICES].config.telegram.webhook_secret.encode("utf-8")
    given = request.headers.get(SECRET_HEADER, "").encode("utf-8")
    if not hmac.compare_digest(given, expected):
        return web.Response(status=403, text="forbidden")
    application = request.app[TELEGRAM]
    try:
        body: Any = json.loads(await request.read())
        if not isinstance(body, dict) or not isinstance(body.get("update_id"), int):
            raise ValueError("not an update")
        update = Update.de_json(body, application.bot)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, OSError):
        # What python-telegram-bot raises on a body that is not a well-formed update; a
        # date past what the platform's clock holds, for one, is an OSError or an
        # OverflowError from `datetime`, not a ValueError.
        return web.Response(status=400, text="not a Telegram update")
    await application.update_queue.put(update)
    return web.Response(text="ok")


def setup(app: web.Application, config: Config) -> None:
    """Mount the Telegram channel when a bot token is configured; otherwise leave it off."""
    telegram = config.telegram
    if not telegram.enabled:
        log.info("telegram channel is off (XIAOBAO_TELEGRAM_TOKEN is not set)")
        return
    if telegram.webhook_url:
        app.router.add_post(telegram.webhook_path, webhook)
    app.cleanup_ctx.append(telegram_ctx)
