"""Complaint status and withdrawal, for the consumer who filed it and nobody else.

A tracking number alone does not open a record: the asker must be the user who filed it
on that channel, or confirm the last four digits of the phone number left with it (a
proxy asking for a parent, say).  Three wrong tries end the verification.
"""

from __future__ import annotations

from typing import Any

from bot import complaint_records as records
from bot.complaint_dialogue import SHANGHAI, DialogueTurn
from bot.messages import Button, Reply
from bot.models import Complaint, as_utc
from classifiers.institutions import Directory

MENU = Button("回主菜单", "menu")
MAX_TRIES = 3


class ComplaintStatus:
    """Looks complaints up, verifies the asker and records withdrawals."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    async def ask(self, turn: DialogueTurn, tracking_no: str | None) -> list[Reply]:
        """"查进度 [编号]": show it, ask to verify, or list the user's own complaints."""
        if tracking_no is None:
            session = await turn.tx.session()
            own = await records.complaints_of(session, turn.channel, turn.user_id)
            if not own:
                turn.state["mode"] = "status"
                return [Reply("请发送您的投诉受理编号（比如 BB-2611-7K3Q），我帮您查。", (MENU,))]
            buttons = tuple(Button(c.tracking_no, f"status:{c.tracking_no}") for c in own)
            return [Reply("您提交过这些投诉，请选择要查看的一件：", (*buttons, MENU))]
        complaint = await records.find_by_tracking(await turn.tx.session(), tracking_no)
        if complaint is None:
            return [Reply(f"没有找到编号为 {tracking_no} 的投诉，请核对后再发一次。", (MENU,))]
        if self._may_see(turn, complaint):
            return [await self._show(turn, complaint)]
        turn.state["mode"] = "status-verify"
        turn.state["verify"] = {"tracking_no": tracking_no, "tries": 0}
        return [Reply("为了保护投诉人的信息，请输入投诉时留下的手机号的后四位：", (MENU,))]

    async def verify(self, turn: DialogueTurn, text: str) -> list[Reply]:
        """Check the last four digits of the phone number for a pending lookup."""
        pending: dict[str, Any] = turn.state.get("verify") or {}
        session = await turn.tx.session()
        complaint = await records.find_by_tracking(session, pending.get("tracking_no", ""))
        if complaint is None:
            turn.state.pop("mode", None)
            return [Reply("没有找到这件投诉。", (MENU,))]
        digits = "".join(ch for ch in text if ch.isdigit())
        if len(digits) == 4 and complaint.phone.endswith(digits):
            turn.state.pop("mode", None)
            turn.state.pop("verify", None)
            turn.state.setdefault("verified", []).append(complaint.tracking_no)
            return [await self._show(turn, complaint)]
        pending["tries"] = int(pending.get("tries", 0)) + 1
        if pending["tries"] >= MAX_TRIES:
            turn.state.pop("mode", None)
            turn.state.pop("verify", None)
            return [Reply("核对没有通过。如需帮助，请联系被投诉机构或拨打12378。", (MENU,))]
        turn.state["verify"] = pending
        return [Reply("后四位不对，请再输入一次（只输入4位数字）：", (MENU,))]

    async def withdraw(self, turn: DialogueTurn, tracking_no: str, confirmed: bool
                       ) -> list[Reply]:
        """Ask to confirm, then record the withdrawal (never a deletion)."""
        complaint = await records.find_by_tracking(await turn.tx.session(), tracking_no)
        if complaint is None or not self._may_see(turn, complaint):
            return [Reply("只有投诉人本人才能撤回这件投诉。", (MENU,))]
        if complaint.status in {"withdrawn", "resolved"}:
            return [Reply("这件投诉已经办结或撤回，不需要再撤回。", (MENU,))]
        if not confirmed:
            return [Reply(f"确定要撤回投诉 {tracking_no} 吗？撤回后机构会停止处理。",
                          (Button("确定撤回", f"withdraw-yes:{tracking_no}"),
                           Button("不撤回", f"status:{tracking_no}")))]
        await records.withdraw(await turn.tx.session(), complaint, actor="consumer")
        return [Reply(f"投诉 {tracking_no} 已撤回，记录会保留。如果以后还需要，可以重新投诉。",
                      (MENU,))]

    def _may_see(self, turn: DialogueTurn, complaint: Complaint) -> bool:
        own = complaint.channel == turn.channel and complaint.user_id == turn.user_id
        return own or complaint.tracking_no in turn.state.get("verified", [])

    async def _show(self, turn: DialogueTurn, complaint: Complaint) -> Reply:
        queue = self.directory.get(complaint.queue_id)
        lines = [
            f"投诉编号：{complaint.tracking_no}",
            f"处理机构：{queue.name if queue else complaint.queue_id}",
            f"当前状态：{records.STATUS_NAMES.get(complaint.status, complaint.status)}",
            f"提交时间：{as_utc(complaint.received_at).astimezone(SHANGHAI):%Y年%m月%d日}",
        ]
        if complaint.status not in {"withdrawn", "resolved"}:
            lines.append(f"处理时限：{as_utc(complaint.deadline_at).astimezone(SHANGHAI):%Y年%m月%d日}前"
                         f"（{complaint.deadline_days}日）")
        for reply in await records.staff_replies(await turn.tx.session(), complaint):
            heading = "机构请您补充" if reply.kind == "info-requested" else "机构回复"
            lines.append(f"{heading}（{as_utc(reply.at).astimezone(SHANGHAI):%m月%d日}）："
                         f"{reply.detail.get('text', '')}")
        if complaint.outcome:
            lines.append(f"处理结果：{complaint.outcome}")
        buttons = [MENU]
        if complaint.status not in {"withdrawn", "resolved"}:
            buttons.insert(0, Button("撤回投诉", f"withdraw:{complaint.tracking_no}"))
        return Reply("\n".join(lines), tuple(buttons))
