"""Running the dispatcher inside the service: a cleanup context of the aiohttp app.

At start-up the static channels of `notifications.channels` are synced into the
database, the senders are built (an HTTP client for WeCom, the running Telegram bot when
that channel is on, SMTP settings for e-mail) and the dispatcher loop starts as a task; at
shutdown the task is cancelled, handing back any row it held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from telegram.error import RetryAfter, TelegramError
from telegram.ext import Application

from bot.config import Config, NotificationsConfig
from bot.models import utcnow
from bot.notifications.channels import (
    DeliveryError,
    Sender,
    SmtpMail,
    TelegramChat,
    WecomRobot,
    retry_after_seconds,
)
from bot.notifications.dispatcher import Dispatcher, Push
from bot.notifications.queues import sync_static_channels
from bot.notifications.render import Labels
from bot.services import SERVICES
from handlers.telegram import TELEGRAM, send_to_chat

log = logging.getLogger(__name__)

DISPATCHER = web.AppKey("notification_dispatcher", Dispatcher)


def build_senders(settings: NotificationsConfig, http: aiohttp.ClientSession,
                  telegram: Application | None) -> dict[str, Sender]:
    """One sender per channel kind this service can deliver to."""
    senders: dict[str, Sender] = {
        "wecom": WecomRobot(http, settings.wecom_base_url, settings.send_timeout_seconds),
        "email": SmtpMail(host=settings.smtp_host, port=settings.smtp_port,
                          sender=settings.smtp_from, starttls=settings.smtp_starttls,
                          timeout=settings.send_timeout_seconds,
                          username=settings.smtp_username, password=settings.smtp_password),
    }
    if telegram is not None:
        senders["telegram"] = TelegramChat(telegram.bot)
    return senders


def telegram_push(application: Application) -> Push:
    """Push a staff message to a consumer's Telegram chat (their user id is the chat id)."""

    async def push(user_id: str, text: str) -> None:
        try:
            await send_to_chat(application, int(user_id), text)
        except RetryAfter as error:
            raise DeliveryError("Telegram 429", retry_after_seconds(error)) from None
        except (TelegramError, ValueError) as error:
            raise DeliveryError(f"Telegram {type(error).__name__}") from None

    return push


async def notifications_ctx(app: web.Application) -> AsyncIterator[None]:
    """Sync the static channels, then run the dispatcher for as long as the service runs."""
    services = app[SERVICES]
    settings = services.config.notifications
    directory = services.triage.directory
    specs = settings.queue_channels()
    for queue_id in sorted({queue_id for queue_id, _, _ in specs}):
        if directory.get(queue_id) is None:
            log.warning("notifications.channels names queue %r, which the directory lacks",
                        queue_id)
    async with services.sessions() as session, session.begin():
        added = await sync_static_channels(session, specs, utcnow())
    telegram = app.get(TELEGRAM)
    async with aiohttp.ClientSession() as http:
        dispatcher = Dispatcher(
            services.sessions, settings, build_senders(settings, http, telegram),
            Labels.load(directory),
            consumer_push={"telegram": telegram_push(telegram)} if telegram else None,
        )
        app[DISPATCHER] = dispatcher
        task = asyncio.create_task(dispatcher.run(), name="notification-dispatcher")
        log.info("notification dispatcher started (%d static channel(s) added)", added)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def setup(app: web.Application, config: Config) -> None:
    """Run the dispatcher in this service unless notifications.enabled is false.

    Call after the Telegram channel's setup, so the running bot is there to send with.
    """
    if not config.notifications.enabled:
        log.info("notification dispatcher is off (notifications.enabled = false)")
        return
    app.cleanup_ctx.append(notifications_ctx)
