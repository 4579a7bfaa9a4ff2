"""What a staff notification says: short, masked Chinese text with a link to the dashboard.

The payload of an outbox row is masked when it is written (`notification_payload`).
Rendering still takes only the fields it knows, masks phone numbers again and redacts
free text, so a payload written carelessly by a later feature cannot carry a phone or ID
number into a chat group or a mailbox.  The consumer's story is never shown: chats and
mailboxes are outside the dashboard's access control, and staff open the complaint there.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.models import as_utc
from bot.privacy import mask_phone, redact
from classifiers.institutions import SPEC_FILE, Directory
from classifiers.triage import RISK_REASON_TEXT

SHANGHAI = ZoneInfo("Asia/Shanghai")
OPEN_IN_DASHBOARD = "在后台打开"
DEFAULT_TITLE = "投诉动态"
TITLES = {
    "new-complaint": "新投诉",
    "urgent-risk": "紧急：有舆情风险的投诉",
    "withdrawn": "投诉已撤回",
    "due-soon": "投诉即将到期",
    "overdue": "投诉已超期",
    "urgent-overdue": "超期投诉（已报协会）",
    "transferred": "转来的投诉",
}
MAX_REASON_CHARS = 100
# WeCom markdown reads these; values show them as full-width look-alikes instead.
MARKDOWN_LOOKALIKES = str.maketrans({"*": "＊", "<": "＜", ">": "＞", "[": "［", "]": "］",
                                     "`": "｀", "_": "＿"})


@dataclass(frozen=True)
class Labels:
    """Chinese names for the codes a payload carries (business, cause, risk, queue)."""

    businesses: Mapping[str, str]
    causes: Mapping[str, str]
    risk_reasons: Mapping[str, str]
    queues: Mapping[str, str]

    @classmethod
    def load(cls, directory: Directory) -> Labels:
        """Read the names from complaints.toml, triage and the institution directory."""
        spec = tomllib.loads(SPEC_FILE.read_text(encoding="utf-8"))
        return cls(
            businesses={item["id"]: item["zh"] for item in spec["business"]},
            causes={item["id"]: item["zh"] for item in spec["cause"]},
            risk_reasons=dict(RISK_REASON_TEXT),
            queues={key: value.name for key, value in directory.institutions.items()},
        )


@dataclass(frozen=True)
class Notice:
    """One rendered notification, ready for any channel."""

    reference: str
    title: str
    tracking_no: str
    fields: tuple[tuple[str, str], ...]
    link: str | None

    @property
    def headline(self) -> str:
        """The first line: what happened, and to which complaint."""
        return f"【{self.title}】{self.tracking_no}".rstrip()

    def text(self) -> str:
        """Plain text for Telegram and e-mail bodies."""
        lines = [self.headline, *(f"{label}：{value}" for label, value in self.fields)]
        if self.link:
            lines.append(f"{OPEN_IN_DASHBOARD}：{self.link}")
        return "\n".join(lines)

    def markdown(self) -> str:
        """WeCom robot markdown, ending with the notification's reference."""
        lines = [f"**{self.headline.translate(MARKDOWN_LOOKALIKES)}**"]
        lines += [f"> {label}：{value.translate(MARKDOWN_LOOKALIKES)}"
                  for label, value in self.fields]
        if self.link:
            lines.append(f"[{OPEN_IN_DASHBOARD}]({self.link})")
        lines.append(f'<font color="comment">通知编号：{self.reference}</font>')
        return "\n".join(lines)

    def subject(self) -> str:
        """An e-mail subject line."""
        institution = dict(self.fields).get("机构", "")
        return f"{self.headline} {institution}".strip()

    def email_body(self) -> str:
        """The e-mail body: the text, the reference, and where replies do not go."""
        return (f"{self.text()}\n\n通知编号：{self.reference}\n"
                "此邮件由系统自动发送，请勿直接回复；请在后台处理投诉。\n")


def days_left(deadline_at: datetime, now: datetime) -> int:
    """Calendar days from today to the deadline's day in Beijing time (negative: overdue)."""
    return (as_utc(deadline_at).astimezone(SHANGHAI).date()
            - as_utc(now).astimezone(SHANGHAI).date()).days


def deadline_text(deadline_at: datetime, now: datetime) -> str:
    """The deadline as staff read it: its date, and how long is left or overdue."""
    left = days_left(deadline_at, now)
    when = f"{as_utc(deadline_at).astimezone(SHANGHAI):%Y年%m月%d日}前"
    if left < 0:
        return f"{when}（已超期 {-left} 天）"
    return f"{when}（今天到期）" if left == 0 else f"{when}（还剩 {left} 天）"


def _clean(value: Any) -> str:
    """A payload value as one safe line: redacted, no line breaks."""
    return " ".join(redact(str(value)).split())


def _deadline(value: Any, now: datetime) -> str | None:
    try:
        return deadline_text(datetime.fromisoformat(str(value)), now)
    except ValueError:
        return None


def render(kind: str, payload: Mapping[str, Any], reference: str, labels: Labels,
           now: datetime) -> Notice:
    """Turn an outbox row's kind and masked payload into a notice (unknown keys are dropped)."""
    fields: list[tuple[str, str]] = []

    def add(label: str, value: Any, limit: int | None = None) -> None:
        if value not in (None, "", [], ()):
            fields.append((label, _clean(value)[:limit]))

    add("机构", payload.get("institution"))
    if payload.get("from_queue"):
        add("转自", labels.queues.get(str(payload["from_queue"]), payload["from_queue"]))
    if payload.get("escalated_from"):
        add("原处理机构", labels.queues.get(str(payload["escalated_from"]),
                                       payload["escalated_from"]))
    business = payload.get("business")
    add("业务", labels.businesses.get(str(business), business) if business else None)
    cause = payload.get("cause")
    add("原因", labels.causes.get(str(cause), cause) if cause else None)
    if payload.get("risk"):
        reasons = [labels.risk_reasons.get(str(code), str(code))
                   for code in payload.get("risk_reasons") or ()]
        add("舆情风险", "；".join(reasons) or "是")
    if payload.get("agent_led"):
        add("疑似代理维权", "是")
    if payload.get("phone"):
        add("联系电话", mask_phone(str(payload["phone"])))
    if payload.get("deadline"):
        add("处理时限", _deadline(payload["deadline"], now))
    if payload.get("reason"):
        add("转交理由", payload["reason"], MAX_REASON_CHARS)  # cut after redacting
    link = str(payload.get("link") or "")
    return Notice(
        reference=reference,
        title=TITLES.get(kind, DEFAULT_TITLE),
        tracking_no=_clean(payload.get("tracking_no", "")),
        fields=tuple(fields),
        link=link if link.startswith(("https://", "http://")) and " " not in link else None,
    )
