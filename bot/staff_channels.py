"""Where each queue's notifications go, as administrators set it in the dashboard.

A queue channel is a WeCom group robot (its webhook address or bare key), a Telegram chat
(its chat id) or an e-mail address.  The dispatcher (`bot.notifications`) reads these
rows; this module only validates and records them, with the dispatcher's own reading of a
robot key.  Webhook addresses carry the robot's key, so pages show them masked.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.models import QueueChannel, utcnow
from bot.notifications.channels import wecom_key
from bot.staff_accounts import AccountError, audit
from classifiers.institutions import Directory

CHANNEL_KINDS = {"wecom": "企业微信群机器人", "telegram": "Telegram 群", "email": "电子邮件"}
TELEGRAM_CHAT = re.compile(r"^(-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31})$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


def check_target(kind: str, target: str) -> str:
    """The cleaned target of a channel, or AccountError saying what is wrong."""
    target = target.strip()
    if kind not in CHANNEL_KINDS:
        raise AccountError("请选择通知渠道类型")
    if not target or len(target) > 500:
        raise AccountError("请填写通知地址（最多 500 个字符）")
    if kind == "wecom":
        parts = urlsplit(target)
        if wecom_key(target) is None or ("://" in target and parts.scheme != "https"):
            raise AccountError("企业微信机器人需要 webhook 地址（https://…?key=…）或机器人的 key")
    elif kind == "telegram" and not TELEGRAM_CHAT.match(target):
        raise AccountError("Telegram 需要群的 chat id（如 -1001234567890）")
    elif kind == "email" and not EMAIL.match(target):
        raise AccountError("请填写有效的电子邮件地址")
    return target


def masked_target(channel: QueueChannel) -> str:
    """What a page shows of a target: webhook keys never appear."""
    if channel.kind == "wecom":
        parts = urlsplit(channel.target)
        key = wecom_key(channel.target) or ""
        where = f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.netloc else "key"
        return f"{where} (key {key[:4]}…)"
    return channel.target


async def channels(session: AsyncSession) -> list[QueueChannel]:
    """Every queue channel, by queue."""
    return list((await session.scalars(
        select(QueueChannel).order_by(QueueChannel.queue_id, QueueChannel.id))).all())


async def add_channel(session: AsyncSession, directory: Directory, queue_id: str, kind: str,
                      target: str, by: int) -> QueueChannel:
    """Record a new, active channel for a queue of the directory."""
    if directory.get(queue_id) is None:
        raise AccountError("请选择队列")
    channel = QueueChannel(queue_id=queue_id, kind=kind, target=check_target(kind, target),
                           active=True, created_at=utcnow())
    session.add(channel)
    await session.flush()
    audit(session, "channel-added", by, detail={"channel": channel.id, "queue": queue_id,
                                                 "kind": kind})
    return channel


async def set_channel_active(session: AsyncSession, channel_id: int, active: bool,
                             by: int) -> QueueChannel | None:
    """Pause or resume a channel (rows are kept for the delivery history)."""
    channel = await session.get(QueueChannel, channel_id)
    if channel is None:
        return None
    channel.active = active
    audit(session, "channel-activated" if active else "channel-paused", by,
          detail={"channel": channel.id})
    return channel
