"""One small sender per channel kind: a WeCom group robot, a Telegram chat, an e-mail.

Each sender has one `async send(target, notice)` that returns when the channel accepted
the message and raises `DeliveryError` otherwise, with `retry_after` when the channel
said how long to wait (WeCom's 45009, Telegram's 429).  Error texts name the channel and
its status code only: they are stored in the outbox and shown on the dashboard, so they
never carry a robot key, an address, a chat id or the channel's own error prose.
"""

from __future__ import annotations

import hashlib
import re
import ssl
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import aiohttp
import aiosmtplib
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, ChatMigrated, RetryAfter, TelegramError
from telegram.warnings import PTBDeprecationWarning

from bot.notifications.render import OPEN_IN_DASHBOARD, Notice

WECOM_PATH = "/cgi-bin/webhook/send"
WECOM_RATE_LIMITED = 45009
WECOM_RETRY_AFTER = 60.0  # the robot's limit is per minute
_WECOM_KEY = re.compile(r"[\w-]{8,}")
_REFERENCE_CHARS = re.compile(r"[^A-Za-z0-9.-]+")


class DeliveryError(Exception):
    """The channel did not take the message; try again later (not before retry_after)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class TargetMoved(DeliveryError):
    """The target has a new address (a Telegram group became a supergroup)."""

    def __init__(self, new_target: str) -> None:
        super().__init__("Telegram chat migrated to a supergroup", retry_after=0.0)
        self.new_target = new_target


class Sender(Protocol):
    """What the dispatcher needs of a channel."""

    async def send(self, target: str, notice: Notice) -> None:
        """Deliver one notice to one target, or raise DeliveryError."""


def wecom_key(target: str) -> str | None:
    """The robot key inside a webhook address (or a bare key), None when there is none."""
    target = target.strip()
    if "://" in target:
        keys = parse_qs(urlsplit(target).query).get("key", [])
        return keys[0] if keys and _WECOM_KEY.fullmatch(keys[0]) else None
    return target if _WECOM_KEY.fullmatch(target) else None


def canonical_target(kind: str, target: str) -> str:
    """One spelling per destination, so two rows naming one robot or mailbox post once."""
    if kind == "wecom":
        return wecom_key(target) or target.strip()
    if kind == "email":
        return target.strip().lower()
    return target.strip()


@dataclass(frozen=True)
class WecomRobot:
    """A WeCom group robot: POST a markdown message to its webhook.

    Only the key is taken from the target; the host is `base_url`, so tests (and
    deployments behind a proxy) send to the address they configure.
    """

    http: aiohttp.ClientSession
    base_url: str
    timeout: float

    async def send(self, target: str, notice: Notice) -> None:
        """Post the notice; 45009 (over 20 a minute) comes back with a minute's wait."""
        key = wecom_key(target)
        if key is None:
            raise DeliveryError("WeCom target has no robot key")
        body = {"msgtype": "markdown", "markdown": {"content": notice.markdown()}}
        try:
            async with self.http.post(
                self.base_url.rstrip("/") + WECOM_PATH, params={"key": key}, json=body,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                if response.status == 429:
                    raise DeliveryError("WeCom HTTP 429",
                                        _seconds(response.headers.get("Retry-After"))
                                        or WECOM_RETRY_AFTER)
                if response.status != 200:
                    raise DeliveryError(f"WeCom HTTP {response.status}")
                answer: Any = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise DeliveryError(f"WeCom {type(error).__name__}") from None
        code = answer.get("errcode") if isinstance(answer, dict) else None
        if code == 0:
            return
        if code == WECOM_RATE_LIMITED:
            raise DeliveryError(f"WeCom errcode {code} (rate limited)", WECOM_RETRY_AFTER)
        raise DeliveryError(f"WeCom errcode {code}")


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def telegram_chat_id(target: str) -> int | str:
    """A numeric chat id as Telegram wants it; an @channel name stays a string."""
    return int(target) if target.lstrip("-").isdigit() else target


def retry_after_seconds(error: RetryAfter) -> float:
    """Telegram's retry_after in seconds, without python-telegram-bot 22's type warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True)
class TelegramChat:
    """A Telegram group or private chat, through the running bot.

    The bot's `AIORateLimiter` keeps to Telegram's limits (about 20 messages a minute in
    a group) and waits out a 429's retry_after itself, up to `telegram.max_retries`;
    beyond that the 429 comes back here and the dispatcher waits at least as long.
    """

    bot: Bot

    async def send(self, target: str, notice: Notice) -> None:
        """Send the notice with a button that opens the complaint in the dashboard."""
        chat_id = telegram_chat_id(target)
        markup = None
        if notice.link:
            markup = InlineKeyboardMarkup(
                [[InlineKeyboardButton(OPEN_IN_DASHBOARD, url=notice.link)]])
        try:
            try:
                await self.bot.send_message(chat_id, notice.text(), reply_markup=markup)
            except BadRequest as error:
                # Telegram refuses buttons to addresses it cannot open (an intranet
                # dashboard); the link is in the text as well, so send without it.
                if markup is None or "url" not in error.message.lower():
                    raise
                await self.bot.send_message(chat_id, notice.text())
        except ChatMigrated as error:
            raise TargetMoved(str(error.new_chat_id)) from None
        except RetryAfter as error:
            raise DeliveryError("Telegram 429", retry_after_seconds(error)) from None
        except TelegramError as error:
            raise DeliveryError(f"Telegram {type(error).__name__}") from None


def message_id(reference: str, target: str, sender: str) -> str:
    """A Message-ID that is the same for every retry of one notice to one address."""
    domain = sender.rpartition("@")[2] or "xiaobao.invalid"
    recipient = hashlib.sha256(target.strip().lower().encode("utf-8")).hexdigest()[:12]
    local = _REFERENCE_CHARS.sub(".", reference).strip(".")
    return f"<{local}.{recipient}@{domain}>"


@dataclass(frozen=True)
class SmtpMail:
    """An e-mail address, over SMTP with optional STARTTLS and login.

    Every retry of one notice to one address carries the same Message-ID (and the
    notification's key in `X-Xiaobao-Notification`), so mail systems that drop
    duplicates drop a re-sent copy.
    """

    host: str
    port: int
    sender: str
    starttls: bool
    timeout: float
    username: str = ""
    password: str = ""
    tls_context: ssl.SSLContext | None = None

    def message(self, target: str, notice: Notice) -> EmailMessage:
        """The e-mail for one notice to one address."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = target
        message["Subject"] = notice.subject()
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = message_id(notice.reference, target, self.sender)
        message["X-Xiaobao-Notification"] = notice.reference
        message.set_content(notice.email_body())
        return message

    async def send(self, target: str, notice: Notice) -> None:
        """Hand the e-mail to the SMTP server."""
        if not (self.host and self.sender):
            raise DeliveryError("SMTP is not configured (notifications.smtp_host)")
        options: Mapping[str, Any] = {
            "hostname": self.host, "port": self.port, "start_tls": self.starttls,
            "timeout": self.timeout, "tls_context": self.tls_context,
            "username": self.username or None,
            "password": self.password if self.username else None,
        }
        try:
            await aiosmtplib.send(self.message(target, notice), **options)
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = sorted({refused.code for refused in error.recipients})
            raise DeliveryError(f"SMTP recipient refused {codes}") from None
        except aiosmtplib.SMTPResponseException as error:
            raise DeliveryError(f"SMTP {error.code}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            raise DeliveryError(f"SMTP {type(error).__name__}") from None
