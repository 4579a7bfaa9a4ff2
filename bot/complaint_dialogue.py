"""The guided complaint dialogue: story first, then the form, a summary, and confirmation.

The draft lives in the user's conversation state (`bot.complaint_drafts`), so a crash or a
restart at any step resumes the same draft, on any worker.  "返回" goes back a step,
"修改 X" edits a field from the summary, "取消" deletes the draft; a question asked in
between is answered from the knowledge base and the dialogue resumes where it was.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from bot import complaint_records as records
from bot.complaint_drafts import (
    Draft,
    drop_expired,
    load_draft,
    new_draft,
    purge_expired,
)
from bot.complaint_form import (
    FIELD_BY_NAME,
    FIELDS,
    PERSONAL_FIELDS,
    FormContext,
    FormField,
    NeedsInput,
    field_named,
    next_field,
)
from bot.config import ChatConfig, ComplaintsConfig
from bot.messages import Button, Reply
from bot.models import as_utc, utcnow
from bot.transactions import Transaction
from bot.validators import Invalid
from classifiers.institutions import Directory
from classifiers.triage import Triage
from knowledge.index import KnowledgeIndex

BACK = Button("返回上一步", "cx:back")
CANCEL = Button("取消投诉", "cx:cancel")
MENU = Button("回主菜单", "menu")
QUESTION_HINT = re.compile(r"[？?]|吗|怎么|什么|多久|多长时间|能不能|可不可以|是不是|为什么|咋|啥")
SHANGHAI = ZoneInfo("Asia/Shanghai")


@dataclass
class DialogueTurn:
    """The parts of an engine turn the dialogue needs."""

    tx: Transaction
    state: dict[str, Any]
    channel: str
    user_id: str


class ComplaintDialogue:
    """Runs the complaint form over a database-backed draft; keeps no conversation state."""

    def __init__(self, triage: Triage, knowledge: KnowledgeIndex, chat: ChatConfig,
                 complaints: ComplaintsConfig, rng: random.Random | None = None) -> None:
        self.triage = triage
        self.directory: Directory = triage.directory
        self.knowledge = knowledge
        self.chat = chat
        self.config = complaints
        self.rng = rng or random.SystemRandom()
        self.stories = records.StoryTrigrams()  # derived from filed stories, never changed

    # -- draft storage -----------------------------------------------------------------
    def draft(self, turn: DialogueTurn) -> Draft | None:
        """The user's draft.  An expired one is gone already: the engine calls
        `forget_expired` at the start of every turn."""
        return load_draft(turn.state)

    def forget_expired(self, state: dict[str, Any]) -> None:
        """Drop an expired draft from a user's state, whatever the turn is about."""
        drop_expired(state, self.config.draft_expiry_days)

    async def purge_expired(self, session: AsyncSession, now: datetime | None = None) -> int:
        """Delete drafts nobody touched for `draft_expiry_days` (they hold personal data)."""
        return await purge_expired(session, self.config.draft_expiry_days, now)

    def _save(self, row: Draft, data: dict[str, Any]) -> None:
        row.update(data)

    # -- entry points ------------------------------------------------------------------
    async def start(self, turn: DialogueTurn, story: str | None = None) -> list[Reply]:
        """Begin a complaint (offering to resume a draft that already exists)."""
        row = self.draft(turn)
        if row is not None:
            turn.state["mode"] = "complaint"
            return [self._resume_offer(row)]
        row = new_draft(turn.state)
        turn.state["mode"] = "complaint"
        if story and len(story.strip()) >= 8:
            return await self._accept(turn, row, dict(row.data), FIELD_BY_NAME["story"], story)
        return [self._prompt(row.data, FIELD_BY_NAME["story"])]

    async def on_text(self, turn: DialogueTurn, text: str) -> list[Reply]:
        """A typed message while the dialogue is open."""
        row = self.draft(turn)
        if row is None:
            turn.state.pop("mode", None)
            return [Reply("您之前填写的投诉已经过期或已提交。需要的话，我们重新开始：",
                          (Button("我要投诉", "complaint"), MENU))]
        if as_utc(row.updated_at) < utcnow() - timedelta(minutes=self.config.draft_resume_minutes):
            self._save(row, row.data)
            return [self._resume_offer(row)]
        stripped = text.strip()
        if stripped in {"返回", "上一步", "返回上一步"}:
            return self._back(row)
        if stripped in {"继续", "继续投诉", "继续填写"}:
            return [self._current_prompt(row.data)]
        edit = re.match(r"^(修改|更改|改)\s*(.+)$", stripped)
        if edit and (target := field_named(edit.group(2))) is not None:
            return self._edit(row, target)
        data = dict(row.data)
        field = next_field(data["values"])
        if field is None:
            return [self._summary(data)]
        if field.name != "story" and QUESTION_HINT.search(stripped):
            answered = self._answer_question(stripped)
            if answered is not None:
                return [answered, self._current_prompt(data, lead="我们接着填投诉：")]
        return await self._accept(turn, row, data, field, stripped)

    async def on_action(self, turn: DialogueTurn, action: str) -> list[Reply]:
        """A button of the dialogue (actions start with "cx:")."""
        row = self.draft(turn)
        command, _, argument = action.removeprefix("cx:").partition(":")
        if command == "confirm":
            return await self._confirm(turn, row)
        if row is None:
            turn.state.pop("mode", None)
            return [Reply("这份投诉已经提交或取消了。", (Button("查投诉进度", "status"), MENU))]
        turn.state["mode"] = "complaint"
        data = dict(row.data)
        if command == "cancel":
            row.discard()
            turn.state.pop("mode", None)
            return [Reply("已取消，您填写的内容都已删除。需要时可以随时重新投诉。",
                          (Button("我要投诉", "complaint"), MENU))]
        if command == "back":
            return self._back(row)
        if command in {"resume", "continue"}:
            self._save(row, data)
            return [self._current_prompt(data)]
        if command == "restart":
            self._save(row, {"values": {}, "order": []})
            return [self._prompt(row.data, FIELD_BY_NAME["story"])]
        if command == "edit-menu":
            buttons = tuple(Button(f"修改{f.title}", f"cx:edit:{f.name}") for f in FIELDS
                            if f.name in data["values"] and f.name != "consent")
            return [Reply("要修改哪一项？", (*buttons, Button("不改了，回到核对", "cx:resume")))]
        if command == "edit" and argument in FIELD_BY_NAME:
            return self._edit(row, FIELD_BY_NAME[argument])
        if command == "set":
            name, _, value = argument.partition(":")
            field = next_field(data["values"])
            if field is not None and field.name == name:
                return await self._accept(turn, row, data, field, value)
            return [self._current_prompt(data)]
        return [self._current_prompt(data)]

    # -- steps -------------------------------------------------------------------------
    async def _accept(self, turn: DialogueTurn, row: Draft, data: dict[str, Any],
                      field: FormField, text: str) -> list[Reply]:
        context = FormContext(self.directory, {**data, **data["values"]})
        try:
            value = field.clean(text, context)
        except NeedsInput as needs:
            data.update(needs.remember)
            self._save(row, data)
            return [self._prompt(data, field, lead=str(needs))]
        except Invalid as invalid:
            return [self._prompt(data, field, lead=str(invalid))]
        values = dict(data["values"])
        values[field.name] = value
        data["values"] = values
        data["order"] = [*[n for n in data["order"] if n != field.name], field.name]
        data.pop("institution_options", None)
        if field.name == "story":
            data.update(self._triage(value))
        if field.name == "consent" and value == "no":
            row.discard()
            turn.state.pop("mode", None)
            return [self._no_consent(data)]
        self._save(row, data)
        following = next_field(values)
        if following is None:
            return [self._summary(data)]
        return [self._prompt(data, following)]

    def _triage(self, story: str) -> dict[str, Any]:
        result = self.triage.classify(story)
        return {
            "suggested_institution": result.institution.id if result.institution else None,
            "triage": {"sector": result.sector, "business": result.business,
                       "cause": result.cause, "risk_reasons": list(result.risk_reasons),
                       "agent_reasons": list(result.agent_reasons)},
        }

    def _back(self, row: Draft) -> list[Reply]:
        data = dict(row.data)
        order = list(data["order"])
        if not order:
            return [self._current_prompt(data)]
        last = order.pop()
        values = {k: v for k, v in data["values"].items() if k != last}
        if last == "consent":  # going back over consent forgets what it covered
            values = {k: v for k, v in values.items() if k not in PERSONAL_FIELDS}
            order = [n for n in order if n not in PERSONAL_FIELDS]
        data.update(values=values, order=order)
        self._save(row, data)
        return [self._current_prompt(data)]

    def _edit(self, row: Draft, field: FormField) -> list[Reply]:
        data = dict(row.data)
        if field.name == "consent":
            return [self._current_prompt(data)]
        data["values"] = {k: v for k, v in data["values"].items() if k != field.name}
        data["order"] = [n for n in data["order"] if n != field.name]
        self._save(row, data)
        return [self._prompt(data, field)]

    async def _confirm(self, turn: DialogueTurn, row: Draft | None) -> list[Reply]:
        if row is None:
            return await self._already_confirmed(turn)
        data = dict(row.data)
        if next_field(data["values"]) is not None:
            return [self._current_prompt(data)]
        values, triage = data["values"], data.get("triage", {})
        queue = self.directory.get(values["institution"]) or self.directory.association_for(None)
        institution = None if queue.is_association else queue
        sector = institution.sector if institution else (
            "bank" if queue.id == "assoc-bank" else
            triage.get("sector") if triage.get("sector") in {"life", "property"} else "life")
        key = f"{turn.channel}:{turn.user_id}:{row.draft_key}"
        complaint = await records.file_complaint(
            await turn.tx.session(),
            records.Submission(
                channel=turn.channel, user_id=turn.user_id, confirmation_key=key, queue=queue,
                institution=institution, sector=sector,
                business=triage.get("business", "other"), cause=triage.get("cause", "other"),
                story=values["story"], occurred=values["occurred"], wish=values["wish"],
                name=values["name"], phone=values["phone"], id_number=values.get("id_number"),
                relationship=values["relationship"], consent_at=utcnow(),
                risk_reasons=tuple(triage.get("risk_reasons", ())),
                agent_reasons=tuple(triage.get("agent_reasons", ())),
            ),
            self.directory, self.config.tracking_prefix, self.config.dashboard_url, self.rng,
            stories=self.stories,
        )
        row.discard()
        turn.state.pop("mode", None)
        turn.state["last_confirmation"] = key
        turn.state["filed"] = True  # staff may now write back: the engine looks for replies
        return [self._filed(complaint.tracking_no, queue.name, complaint.deadline_at)]

    async def _already_confirmed(self, turn: DialogueTurn) -> list[Reply]:
        key = turn.state.get("last_confirmation")
        complaint = (await records.find_by_confirmation(await turn.tx.session(), key)
                     if key else None)
        if complaint is None:
            return [Reply("没有找到需要提交的投诉。", (Button("我要投诉", "complaint"), MENU))]
        return [Reply(f"这份投诉已经提交过了，不会重复提交。受理编号：{complaint.tracking_no}",
                      (Button("查询进度", f"status:{complaint.tracking_no}"), MENU))]

    # -- rendering ---------------------------------------------------------------------
    def _prompt(self, data: dict[str, Any], field: FormField, lead: str = "") -> Reply:
        context = FormContext(self.directory, {**data, **data["values"]})
        buttons = [Button(c.label, f"cx:set:{field.name}:{c.value}")
                   for c in field.choices(context)]
        if data.get("order"):
            buttons.append(BACK)
        buttons.append(CANCEL)
        text = f"{lead}\n{field.prompt(context)}" if lead else field.prompt(context)
        return Reply(text, tuple(buttons))

    def _current_prompt(self, data: dict[str, Any], lead: str = "") -> Reply:
        field = next_field(data["values"])
        if field is None:
            return self._summary(data, lead)
        return self._prompt(data, field, lead)

    def _summary(self, data: dict[str, Any], lead: str = "") -> Reply:
        context = FormContext(self.directory, {**data, **data["values"]})
        lines = [f"{lead}\n" if lead else "", "请核对您的投诉内容："]
        for number, field in enumerate((f for f in FIELDS if f.name != "consent"), 1):
            value = data["values"].get(field.name)
            lines.append(f"{number}. {field.title}：{field.show(value, context)}")
        lines.append("确认无误请点“确认提交”；要改哪一项，点“修改”或回复“修改 手机号”这样的话。")
        return Reply("\n".join(line for line in lines if line),
                     (Button("确认提交", "cx:confirm"), Button("修改", "cx:edit-menu"), CANCEL))

    def _resume_offer(self, row: Draft) -> Reply:
        story = str(row.data.get("values", {}).get("story", ""))
        about = f"（“{story[:20]}…”）" if story else ""
        return Reply(f"您有一份还没填完的投诉{about}，要接着填吗？",
                     (Button("接着填", "cx:resume"), Button("重新开始", "cx:restart"), CANCEL))

    def _answer_question(self, text: str) -> Reply | None:
        result = self.knowledge.matcher.match(text)
        if result.entry is None:
            return None
        entry = result.entry
        return Reply(f"【{entry.title}】\n{entry.answer}")

    def _no_consent(self, data: dict[str, Any]) -> Reply:
        institution = self.directory.get(str(data["values"].get("institution", "")))
        own = (f"拨打{institution.short}的客服电话{institution.hotline}，"
               if institution and institution.hotline else "直接联系机构的客服电话或到网点，")
        return Reply(
            "没关系，我们尊重您的选择。您刚才填写的内容已经全部删除，没有保存您的任何个人信息。\n"
            f"您还可以：{own}或拨打{self.chat.hotline}银行保险消费者投诉维权热线，"
            "也可以写信或到当地金融监管部门反映。",
            (Button("投诉渠道和流程", "topic:complaint-process"), MENU),
        )

    def _filed(self, tracking_no: str, queue_name: str, deadline_at: datetime) -> Reply:
        return Reply(
            f"✅ 投诉已提交！\n受理编号：{tracking_no}\n请记下这个编号，以后查进度要用。\n"
            f"您的投诉已转给：{queue_name}。按照规定，机构应当在收到投诉之日起15日内作出处理决定"
            f"（本次截止：{deadline_at.astimezone(SHANGHAI):%Y年%m月%d日}；情况复杂的可以延长，"
            "但要告诉您原因）。\n随时发送“查进度”就能看到处理情况；想撤回投诉也可以在那里操作。",
            (Button("查询进度", f"status:{tracking_no}"), MENU),
        )
