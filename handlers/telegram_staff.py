"""Telegram for institution staff: /link, /queue and /unlink in a group or private chat.

Only Telegram lives here: commands are parsed, the work is done by
`bot.notifications.links` and the answer is sent back to the chat.  A chat linked to a
queue with a one-time code gets that queue's notifications from the dispatcher and may
list that queue's open complaints with /queue — tracking number, business line, days to
the deadline and the risk flag, never a name, a phone number or the story.
"""

from __future__ import annotations

import logging

from telegram import BotCommand, Update
from telegram.ext import Application, CommandHandler, ContextTypes, filters

from bot.models import utcnow
from bot.notifications import links
from bot.notifications.links import LinkOutcome
from bot.notifications.render import Labels, days_left
from bot.services import Services

log = logging.getLogger(__name__)

Context = ContextTypes.DEFAULT_TYPE
QUEUE_LIMIT = 20
STAFF_COMMANDS = (
    BotCommand("link", "用一次性代码把本群关联到投诉队列"),
    BotCommand("queue", "查看本群队列的待办投诉"),
    BotCommand("unlink", "停止在本群接收投诉通知"),
)
LINK_USAGE = ("用法：/link 关联代码\n关联代码由管理员生成（xiaobao staff link-code 队列），"
              "24 小时内有效，只能用一次。")
NOT_LINKED = "本群还没有关联投诉队列。请向管理员要一个关联代码，然后发送 /link 关联代码。"
LINK_REFUSED = {
    LinkOutcome.UNKNOWN: "关联代码不正确，请核对后重新发送（代码由 8 位字母和数字组成）。",
    LinkOutcome.EXPIRED: "这个关联代码已过期（有效期 24 小时），请让管理员重新生成。",
    LinkOutcome.USED: "这个关联代码已经用过了，每个代码只能用一次，请让管理员重新生成。",
}


def deadline_words(left: int) -> str:
    """Days to the deadline as staff read them."""
    if left < 0:
        return f"已超期 {-left} 天"
    return "今天到期" if left == 0 else f"还剩 {left} 天"


class StaffChat:
    """The staff commands; registered before the consumer handlers so they win."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.labels = Labels.load(services.triage.directory)

    def register(self, application: Application) -> None:
        """Add /link, /queue and /unlink for private chats and groups alike."""
        only_messages = filters.UpdateType.MESSAGE
        application.add_handler(CommandHandler("link", self.link, filters=only_messages))
        application.add_handler(CommandHandler("queue", self.queue, filters=only_messages))
        application.add_handler(CommandHandler("unlink", self.unlink, filters=only_messages))

    def queue_name(self, queue_id: str) -> str:
        """A queue's name from the directory (its id if the directory lacks it)."""
        return self.labels.queues.get(queue_id, queue_id)

    async def link(self, update: Update, context: Context) -> None:
        """Link this chat to the queue of a one-time code."""
        chat = update.effective_chat
        if chat is None:
            return
        if not context.args:
            await context.bot.send_message(chat.id, LINK_USAGE)
            return
        async with self.services.sessions() as session, session.begin():
            result = await links.redeem(session, " ".join(context.args), str(chat.id))
        log.info("telegram /link: %s", result.outcome.value)
        await context.bot.send_message(chat.id, self.link_answer(result))

    def link_answer(self, result: links.LinkResult) -> str:
        """What the chat is told after /link."""
        if result.outcome in LINK_REFUSED:
            return LINK_REFUSED[result.outcome]
        name = self.queue_name(result.queue_id or "")
        if result.outcome == LinkOutcome.ALREADY:
            return f"本群已经关联「{name}」，无需重复关联。"
        moved = ""
        if result.previous_queue_id:
            moved = f"（已不再接收「{self.queue_name(result.previous_queue_id)}」的通知）"
        return (f"已关联：本群将收到「{name}」的投诉通知{moved}。\n"
                "发送 /queue 查看待办投诉，/unlink 取消关联。")

    async def queue(self, update: Update, context: Context) -> None:
        """List the open complaints of this chat's queue, and of no other."""
        chat = update.effective_chat
        if chat is None:
            return
        now = utcnow()
        sections = []
        async with self.services.sessions() as session:
            for queue_id in await links.linked_queues(session, str(chat.id)):
                complaints, total = await links.open_complaints(session, queue_id, QUEUE_LIMIT)
                lines = [f"「{self.queue_name(queue_id)}」待办投诉 {total} 件"
                         + ("（按处理时限排序）：" if total else "。")]
                for number, complaint in enumerate(complaints, 1):
                    business = self.labels.businesses.get(complaint.business, complaint.business)
                    flags = " · ⚠舆情风险" if complaint.risk else ""
                    lines.append(f"{number}. {complaint.tracking_no} · {business} · "
                                 f"{deadline_words(days_left(complaint.deadline_at, now))}"
                                 f"{flags}")
                if total > len(complaints):
                    lines.append(f"……另有 {total - len(complaints)} 件，请在后台查看。")
                sections.append("\n".join(lines))
        if not sections:
            await context.bot.send_message(chat.id, NOT_LINKED)
            return
        dashboard = self.services.config.complaints.dashboard_url
        await context.bot.send_message(chat.id, "\n\n".join([*sections, f"后台：{dashboard}"]))

    async def unlink(self, update: Update, context: Context) -> None:
        """Stop this chat's notifications."""
        chat = update.effective_chat
        if chat is None:
            return
        async with self.services.sessions() as session, session.begin():
            left = await links.unlink(session, str(chat.id))
        log.info("telegram /unlink: %d queue(s)", len(left))
        if not left:
            await context.bot.send_message(chat.id, "本群没有关联任何投诉队列。")
            return
        names = "、".join(f"「{self.queue_name(queue_id)}」" for queue_id in left)
        await context.bot.send_message(chat.id, f"已取消关联：本群不再接收{names}的投诉通知。")
