"""The conversation engine: one incoming message in, a list of replies out.

Every channel calls `Engine.handle`; none of them knows about menus, dialogues or the
knowledge base.  Each message loads the user's state from the database, is dispatched by
button action or by intent, and saves the state in the same transaction, so a restart or
another worker continues the conversation exactly where it was.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from bot import complaint_records as records
from bot import texts
from bot.complaint_dialogue import ComplaintDialogue, DialogueTurn
from bot.complaint_status import ComplaintStatus
from bot.config import ChatConfig
from bot.messages import Button, Incoming, Reply
from bot.models import Complaint, ConsumerMessage, UnansweredQuestion, utcnow
from bot.privacy import redact
from bot.state import load_state, read_state, save_state, save_state_if_unchanged
from bot.transactions import Transaction, Transactions
from classifiers.intent import (
    Intent,
    complaint_story,
    detect_intent,
    strip_scam_question,
)
from classifiers.scam import ScamChecker, looks_like_pasted_message
from knowledge.base import Entry
from knowledge.index import KnowledgeIndex
from knowledge.matcher import MatchResult

log = logging.getLogger(__name__)

MAX_BUTTON_LABEL = 30
SCAM_CHECK_INLINE_CHARS = 12
LEAVE_MODE_INTENTS = frozenset(
    {Intent.MENU, Intent.CANCEL, Intent.HELP, Intent.GREETING, Intent.SCAM_CHECK}
)
UNANSWERED_TEXT_CHARS = 500
SUGGESTION_FLOOR = 0.12
# An optimistic attempt, then locked ones: one more than a lost race and a lost
# connection need together.
ATTEMPTS = 3
# Built once: a declined question is kept on many messages (see bot.transactions).
_KEEP_UNANSWERED = insert(UnansweredQuestion).values(
    text=bindparam("text"), normalized=bindparam("normalized"), score=bindparam("score"),
    candidates=bindparam("candidates", type_=UnansweredQuestion.__table__.c.candidates.type),
    created_at=bindparam("now", type_=UnansweredQuestion.__table__.c.created_at.type))


class _StateChanged(Exception):
    """An optimistic turn found the user's state saved by another turn meanwhile."""


@dataclass
class Turn:
    """What one message may read and change: the transaction, the user's state, the input."""

    tx: Transaction
    state: dict[str, Any]
    incoming: Incoming


Handler = Callable[[Turn], Awaitable[list[Reply]]]


class Delivery(Protocol):
    """What a channel that redelivers messages keeps with each turn (see handle_delivery).

    It keeps it in the user's state, which the turn saves anyway: rows of its own would
    cost round trips on every message (`handlers.wechat_store`).
    """

    def is_repeat(self, state: dict[str, Any]) -> bool:
        """True when the state shows this delivery answered before."""

    def keep(self, state: dict[str, Any], replies: list[Reply]) -> None:
        """Record the delivery, with what a repeat must be answered, in the state."""


def numbered_choice(turn: Turn) -> str | None:
    """On channels without buttons, "2" means the second button of the last reply."""
    if not turn.incoming.meta.get("numbered_choices"):
        return None
    text = (turn.incoming.text or "").strip()
    offered = turn.state.get("buttons") or []
    if text.isdigit() and 1 <= int(text) <= len(offered):
        return str(offered[int(text) - 1])
    return None


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def _storable(incoming: Incoming) -> Incoming:
    """The message with characters no database can store replaced."""
    return replace(incoming, user_id=_clean(incoming.user_id) or "?",
                   text=_clean(incoming.text), action=_clean(incoming.action))


def _dialogue(turn: Turn) -> DialogueTurn:
    return DialogueTurn(turn.tx, turn.state, turn.incoming.channel, turn.incoming.user_id)


def _label(text: str) -> str:
    return text if len(text) <= MAX_BUTTON_LABEL else text[: MAX_BUTTON_LABEL - 1] + "…"


class Engine:
    """Channel-agnostic dialogue logic; state lives in the database."""

    def __init__(
        self,
        transactions: Transactions,
        knowledge: KnowledgeIndex,
        chat: ChatConfig,
        scam: ScamChecker,
        complaints: ComplaintDialogue,
        status: ComplaintStatus,
    ) -> None:
        self._transactions = transactions
        self.knowledge = knowledge
        self.chat = chat
        self.scam = scam
        self.complaints = complaints
        self.status = status
        self._actions: dict[str, Handler] = {
            "start": self._greet,
            "menu": self._menu,
            "help": self._help,
            "topics": self._topics,
            "check": self._ask_for_message,
            "check-pending": self._check_pending,
            "answer-pending": self._answer_pending,
            "complaint": self._complaint_start,
            "status": self._status_list,
            "cancel": self._cancel,
        }
        self._prefixed: dict[str, Callable[[Turn, str], Awaitable[list[Reply]]]] = {
            "kb": self._answer_entry,
            "group": self._topic_group,
            "topic": self._topic_entries,
            "cx": lambda turn, arg: self.complaints.on_action(_dialogue(turn), f"cx:{arg}"),
            "status": lambda turn, arg: self.status.ask(_dialogue(turn), arg),
            "withdraw": lambda turn, arg: self.status.withdraw(_dialogue(turn), arg, False),
            "withdraw-yes": lambda turn, arg: self.status.withdraw(_dialogue(turn), arg, True),
        }
        self._intents: dict[Intent, Handler] = {
            Intent.GREETING: self._greet,
            Intent.MENU: self._menu,
            Intent.HELP: self._help,
            Intent.THANKS: self._thanks,
            Intent.CANCEL: self._cancel,
            Intent.COMPLAINT: self._complaint_start,
            Intent.SCAM_CHECK: self._scam_check_intent,
            Intent.STATUS: self._status_text,
            Intent.INJECTION: self._injection,
            Intent.QUESTION: self._question,
        }

    async def handle(self, incoming: Incoming) -> list[Reply]:
        """Answer one message or button press, persisting the user's state.

        Text that cannot be stored (lone surrogates from a JSON escape, NUL bytes) is
        made safe first, whatever channel it came from.

        Replies are returned only after the transaction commits, so a consumer never sees
        a tracking number for a complaint that was not stored.  A turn that loses a race
        (a double-clicked confirmation, say) is run once more against the winner's data.
        """
        replies = await self.handle_delivery(incoming, None)
        if replies is None:
            raise AssertionError("only a delivery's claim turns a message away")
        return replies

    async def handle_delivery(self, incoming: Incoming,
                              delivery: Delivery | None) -> list[Reply] | None:
        """`handle`, for a channel that redelivers: None for a repeat of a delivery.

        The delivery is recorded, with its reply, in the state the turn saves, so all of
        it is stored together or not at all: a worker that dies mid-turn leaves the
        message unrecorded and the channel's retry is answered, and a repeat of a message
        already answered is turned away without running the turn.  Two deliveries of
        one message at once both run; the state's version lets only one of them save,
        and the other, run again locked, finds it recorded.
        """
        incoming = _storable(incoming)
        for attempt in range(ATTEMPTS):
            locked = attempt > 0
            try:
                async with self._transactions.begin() as tx:
                    replies = await self._turn(tx, incoming, delivery, locked)
                return replies
            except _StateChanged:
                log.info("the user's state changed during the turn; running it again locked")
            except IntegrityError:
                if attempt == ATTEMPTS - 1:
                    raise
                log.info("turn conflicted with a concurrent one; running it again")
            except DBAPIError as error:
                # Pooled connections are not pinged before use (a ping costs three round
                # trips on every message); a connection that died with a database restart
                # fails here once, the pool replaces all of them, and the turn runs again.
                if attempt == ATTEMPTS - 1 or not error.connection_invalidated:
                    raise
                log.warning("database connection lost; running the turn again")
        raise AssertionError("unreachable")

    async def _turn(self, tx: Transaction, incoming: Incoming, delivery: Delivery | None,
                    locked: bool) -> list[Reply] | None:
        """One attempt at a message in `tx`: optimistic first, locked when run again.

        The first attempt reads the state without a lock and saves it only if no other
        turn of the same user saved it meanwhile (`bot.state`); on PostgreSQL a plain
        question then costs two round trips instead of four.  Otherwise it raises
        `_StateChanged`, its transaction rolls back, and the next attempt holds the row
        lock from the start.
        """
        if locked:
            state, version = await load_state(tx, incoming.channel, incoming.user_id), None
        else:
            state, version = await read_state(tx, incoming.channel, incoming.user_id)
        if delivery is not None and delivery.is_repeat(state):
            return None
        replies = await self.handle_turn(Turn(tx=tx, state=state, incoming=incoming))
        state["turns"] = int(state.get("turns", 0)) + 1
        if delivery is not None:
            delivery.keep(state, replies)
        if locked:
            await save_state(tx, incoming.channel, incoming.user_id, state)
        elif not await save_state_if_unchanged(tx, incoming.channel, incoming.user_id,
                                               state, version):
            raise _StateChanged
        return replies

    async def handle_turn(self, turn: Turn) -> list[Reply]:
        """Dispatch one message and remember the buttons offered, for numbered replies.

        Staff replies not yet delivered to this consumer (channels that cannot push) come
        first, so nothing staff said is ever missed.  An expired complaint draft is
        dropped first, whatever the message is about: it holds personal data.
        """
        self.complaints.forget_expired(turn.state)
        waiting = await self._staff_messages(turn)
        replies = waiting + await self._dispatch(turn)
        turn.state["buttons"] = [b.action for reply in replies for b in reply.buttons]
        return replies

    async def _staff_messages(self, turn: Turn) -> list[Reply]:
        # Only consumers who filed a complaint on this channel can have replies waiting;
        # everyone else is spared a query on every message.
        if not turn.state.get("filed"):
            return []
        session = await turn.tx.session()
        rows = (await session.execute(
            select(ConsumerMessage, Complaint.tracking_no)
            .join(Complaint, Complaint.id == ConsumerMessage.complaint_id)
            .where(ConsumerMessage.channel == turn.incoming.channel,
                   ConsumerMessage.user_id == turn.incoming.user_id,
                   ConsumerMessage.delivered_at.is_(None))
            .order_by(ConsumerMessage.id)
        )).all()
        replies = []
        for message, tracking_no in rows:
            message.delivered_at = utcnow()
            replies.append(Reply(f"📮 关于您的投诉 {tracking_no}，机构回复：\n{message.text}",
                                 (Button("查看投诉进度", f"status:{tracking_no}"),)))
        return replies

    async def _dispatch(self, turn: Turn) -> list[Reply]:
        choice = numbered_choice(turn)
        if choice is not None:
            turn = Turn(turn.tx, turn.state, replace(turn.incoming, text=None,
                                                          action=choice))
        action = (turn.incoming.action or "").strip()
        if action:
            handler = self._actions.get(action)
            if handler is not None:
                return await handler(turn)
            prefix, _, argument = action.partition(":")
            prefixed = self._prefixed.get(prefix)
            if prefixed is not None and argument:
                return await prefixed(turn, argument)
            return await self._menu(turn)
        text = (turn.incoming.text or "").strip()
        if not text:
            return [Reply(texts.empty_message(), texts.MENU_BUTTONS)]
        intent = detect_intent(text)
        mode = turn.state.get("mode")
        if mode == "complaint":
            if intent is Intent.CANCEL:
                return await self.complaints.on_action(_dialogue(turn), "cx:cancel")
            if intent not in LEAVE_MODE_INTENTS:
                return await self.complaints.on_text(_dialogue(turn), text)
        if mode == "status-verify" and intent not in LEAVE_MODE_INTENTS:
            return await self.status.verify(_dialogue(turn), text)
        if mode == "scam-check" and intent not in LEAVE_MODE_INTENTS:
            turn.state.pop("mode", None)
            return self._check(text)
        turn.state.pop("mode", None)
        tracking_no = records.parse_tracking_no(text)
        if tracking_no is not None and (mode == "status" or len(text) <= 40):
            return await self.status.ask(_dialogue(turn), tracking_no)
        if intent is Intent.QUESTION and looks_like_pasted_message(text):
            return self._offer_check(turn, text)
        return await self._intents[intent](turn)

    # -- menus -------------------------------------------------------------------------
    async def _greet(self, turn: Turn) -> list[Reply]:
        return [Reply(texts.greeting(self.chat.service_name), texts.MENU_BUTTONS)]

    async def _menu(self, turn: Turn) -> list[Reply]:
        for key in ("mode", "pending_check", "verify"):
            turn.state.pop(key, None)
        replies = [Reply("请选择您需要的服务，或直接打字问我：", texts.MENU_BUTTONS)]
        if self.complaints.draft(_dialogue(turn)) is not None:
            replies.append(Reply("您还有一份没填完的投诉，需要时点“继续填写投诉”。",
                                 (Button("继续填写投诉", "cx:resume"),)))
        return replies

    async def _help(self, turn: Turn) -> list[Reply]:
        return [Reply(texts.help_text(self.chat.hotline), texts.MENU_BUTTONS)]

    async def _thanks(self, turn: Turn) -> list[Reply]:
        return [Reply(texts.thanks(), (texts.BACK_TO_MENU,))]

    async def _injection(self, turn: Turn) -> list[Reply]:
        return [Reply(texts.injection(self.chat.hotline), texts.MENU_BUTTONS)]

    async def _topics(self, turn: Turn) -> list[Reply]:
        buttons = tuple(Button(label, f"group:{key}") for key, label, _ in texts.TOPIC_GROUPS)
        return [Reply(texts.topic_menu_intro(), (*buttons, texts.BACK_TO_MENU))]

    async def _topic_group(self, turn: Turn, key: str) -> list[Reply]:
        group = next((g for g in texts.TOPIC_GROUPS if g[0] == key), None)
        if group is None:
            return await self._topics(turn)
        base = self.knowledge.matcher.base_
        buttons = [
            Button(_label(topic.zh), f"topic:{topic.id}")
            for topic_id in group[2]
            if (topic := base.topic(topic_id)) is not None and base.entries_of(topic_id)
        ]
        return [Reply(f"{group[1]}：", (*buttons, Button("返回上一级", "topics")))]

    async def _topic_entries(self, turn: Turn, topic_id: str) -> list[Reply]:
        base = self.knowledge.matcher.base_
        topic = base.topic(topic_id)
        entries = base.entries_of(topic_id)
        if topic is None or not entries:
            return await self._topics(turn)
        buttons = [Button(_label(entry.title), f"kb:{entry.id}") for entry in entries]
        return [Reply(f"关于“{topic.zh}”，您想了解：", (*buttons, Button("返回上一级", "topics")))]

    # -- knowledge ---------------------------------------------------------------------
    async def _answer_entry(self, turn: Turn, entry_id: str) -> list[Reply]:
        entry = self.knowledge.matcher.base_.entry(entry_id)
        if entry is None:
            return await self._topics(turn)
        return [self.render_entry(entry)]

    def render_entry(self, entry: Entry) -> Reply:
        """An entry as one message: answer, risk warning, next steps, sources."""
        parts = [f"【{entry.title}】", entry.answer]
        if entry.risk:
            parts.append(f"⚠️ 风险提示：{entry.risk}")
        if entry.next_steps:
            steps = "\n".join(f"{i}. {step}" for i, step in enumerate(entry.next_steps, 1))
            parts.append(f"您可以这样做：\n{steps}")
        if entry.sources:
            parts.append(f"依据：{'；'.join(entry.sources)}")
        base = self.knowledge.matcher.base_
        related = [base.entry(link) for link in entry.related[:3]]
        buttons = tuple(
            Button(_label(other.title), f"kb:{other.id}") for other in related if other
        )
        return Reply("\n\n".join(parts), (*buttons, texts.BACK_TO_MENU))

    async def _question(self, turn: Turn) -> list[Reply]:
        text = (turn.incoming.text or "").strip()
        result = self.knowledge.matcher.match(text)
        turn.state["last_topic"] = result.best.entry.topic if result.answered else None
        if result.entry is not None:
            return [self.render_entry(result.entry)]
        await self._record_unanswered(turn.tx, result)
        suggestions = tuple(
            Button(_label(c.entry.title), f"kb:{c.entry.id}")
            for c in result.candidates
            if c.similarity >= SUGGESTION_FLOOR
        )
        if not suggestions:
            return [Reply(texts.out_of_scope(self.chat.hotline),
                          (Button("看看能问哪些问题", "topics"), texts.BACK_TO_MENU))]
        return [
            Reply(texts.not_sure(self.chat.hotline)),
            Reply(texts.suggestion_intro(),
                  (*suggestions, Button("按类别查找", "topics"), texts.BACK_TO_MENU)),
        ]

    async def _record_unanswered(self, tx: Transaction, result: MatchResult) -> None:
        """Keep the question (personal numbers masked) for knowledge curators."""
        text = redact(result.query.strip())[:UNANSWERED_TEXT_CHARS]
        processor = self.knowledge.matcher.processor
        await tx.run(_KEEP_UNANSWERED, {
            "text": text,
            "normalized": processor.content(processor.normalize(text))[:200],
            "score": result.confidence,
            "candidates": [
                {"entry_id": c.entry.id, "similarity": round(c.similarity, 4)}
                for c in result.candidates
            ],
            "now": utcnow(),
        })

    async def _cancel(self, turn: Turn) -> list[Reply]:
        if turn.state.get("mode") == "complaint":
            return await self.complaints.on_action(_dialogue(turn), "cx:cancel")
        return await self._menu(turn)

    # -- complaints --------------------------------------------------------------------
    async def _complaint_start(self, turn: Turn) -> list[Reply]:
        story = complaint_story(turn.incoming.text or "")
        return await self.complaints.start(_dialogue(turn), story)

    async def _status_list(self, turn: Turn) -> list[Reply]:
        return await self.status.ask(_dialogue(turn), None)

    async def _status_text(self, turn: Turn) -> list[Reply]:
        return await self.status.ask(_dialogue(turn),
                                     records.parse_tracking_no(turn.incoming.text or ""))

    # -- "is this a scam?" -------------------------------------------------------------
    async def _ask_for_message(self, turn: Turn) -> list[Reply]:
        turn.state["mode"] = "scam-check"
        return [Reply(texts.scam_check_prompt(), (Button("取消", "menu"),))]

    async def _scam_check_intent(self, turn: Turn) -> list[Reply]:
        message = strip_scam_question(turn.incoming.text or "")
        if len(message) >= SCAM_CHECK_INLINE_CHARS:
            return self._check(message)
        return await self._ask_for_message(turn)

    def _offer_check(self, turn: Turn, text: str) -> list[Reply]:
        turn.state["pending_check"] = text[: self.chat.max_text_chars]
        return [Reply(texts.scam_check_offer(),
                      (Button("帮我看看是不是诈骗", "check-pending"),
                       Button("不用，回答我的问题", "answer-pending"), texts.BACK_TO_MENU))]

    async def _check_pending(self, turn: Turn) -> list[Reply]:
        text = turn.state.pop("pending_check", None)
        if not text:
            return await self._ask_for_message(turn)
        return self._check(text)

    async def _answer_pending(self, turn: Turn) -> list[Reply]:
        text = turn.state.pop("pending_check", None)
        if not text:
            return await self._menu(turn)
        return await self._question(Turn(turn.tx, turn.state,
                                         Incoming(turn.incoming.channel, turn.incoming.user_id,
                                                  text=text)))

    def _check(self, text: str) -> list[Reply]:
        """Run the scam checker and explain its verdict in plain words."""
        verdict = self.scam.check(text)
        parts = [texts.VERDICT_HEADINGS[verdict.verdict]]
        if verdict.scam_type:
            parts.append(f"看起来像：{texts.SCAM_TYPE_NAMES[verdict.scam_type]}")
        if verdict.reasons:
            reasons = "\n".join(f"{i}. {r}" for i, r in enumerate(verdict.reasons, 1))
            parts.append(f"我的判断依据：\n{reasons}")
        if verdict.links:
            parts.append("信息里的链接（请不要点开）：\n" + "\n".join(verdict.links))
        if verdict.phones:
            parts.append("信息里的电话（请不要回拨；要核实，请打机构官方电话）：\n"
                         + "、".join(verdict.phones))
        parts.append(verdict.advice)
        buttons: list[Button] = []
        entry_id = texts.SCAM_ADVICE_ENTRIES.get(verdict.scam_type or "")
        entry = self.knowledge.matcher.base_.entry(entry_id) if entry_id else None
        if entry is not None:
            buttons.append(Button(_label(f"了解：{entry.title}"), f"kb:{entry.id}"))
        buttons += [Button("再查一条", "check"), texts.BACK_TO_MENU]
        return [Reply("\n\n".join(parts), tuple(buttons))]
