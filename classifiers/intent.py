"""What a free-text message is for, before it is treated as a knowledge question.

Chat users rarely press buttons: they type "你好", "菜单", "我要投诉" or paste an SMS.  These
few intents are recognised by explicit, reviewable patterns (a wrong guess here would
hijack a real question), and everything else goes to the knowledge matcher.
"""

from __future__ import annotations

import re
import unicodedata
from enum import Enum


class Intent(Enum):
    """The kinds of message the engine routes before knowledge matching."""

    GREETING = "greeting"
    MENU = "menu"
    HELP = "help"
    THANKS = "thanks"
    COMPLAINT = "complaint"
    SCAM_CHECK = "scam-check"
    STATUS = "status"
    CANCEL = "cancel"
    INJECTION = "injection"
    QUESTION = "question"


_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)
_WHOLE: dict[Intent, tuple[str, ...]] = {
    Intent.GREETING: ("你好", "您好", "你好啊", "您好啊", "hi", "hello", "嗨", "哈喽",
                      "在吗", "在不在", "有人吗", "早上好", "上午好", "中午好", "下午好",
                      "晚上好", "你好小助手", "小助手", "开始", "start"),
    Intent.MENU: ("菜单", "主菜单", "目录", "功能", "返回", "返回菜单", "回到菜单", "menu", "0"),
    Intent.HELP: ("帮助", "help", "怎么用", "使用说明", "你能做什么", "你会什么", "你能干什么",
                  "能做什么", "有什么功能"),
    Intent.THANKS: ("谢谢", "谢谢你", "谢谢您", "多谢", "感谢", "好的谢谢", "知道了", "明白了",
                    "好的", "ok", "thanks", "thank you"),
    Intent.CANCEL: ("取消", "算了", "不弄了", "退出", "cancel"),
}
_COMPLAINT = re.compile(
    r"^(我)?(要|想|想要|需要)(投诉|举报|反映问题)|^(帮我|我来)投诉|^投诉(一下)?$|^我有投诉"
)
_SCAM_CHECK = re.compile(
    r"(这|这个|这条|这是|它|对方)?(是不是|是否|算不算|会不会是)(诈骗|骗局|骗子|假的)(啊|吗|呀|呢)?|"
    r"帮我看看.*(诈骗|骗)|^查诈骗|^(防诈|鉴别|识别)(骗局|短信)?$"
)
_STATUS = re.compile(r"^(查|查询|查看)(投诉)?(进度|状态|结果)|^我的投诉")
_INJECTION = re.compile(
    r"(忽略|无视|忘记|忘掉)(之前|以上|上面|前面|所有)的?(指令|指示|规则|设定|提示)|"
    r"(system|系统)\s*(prompt|提示词)|提示词|ignore (all |the )?(previous|above) "
    r"(instructions|prompts)|jailbreak|越狱模式|你现在是dan|扮演.*没有限制|developer mode",
    re.IGNORECASE,
)


def _squash(text: str) -> str:
    return _PUNCT.sub("", unicodedata.normalize("NFKC", text).lower())


def detect_intent(text: str) -> Intent:
    """The routing intent of a typed message (QUESTION when nothing else applies)."""
    squashed = _squash(text)
    for intent, phrases in _WHOLE.items():
        if squashed in phrases:
            return intent
    if _INJECTION.search(text):
        return Intent.INJECTION
    if _COMPLAINT.search(squashed) and (len(squashed) <= 20 or squashed.startswith(
            ("我要投诉", "我想投诉", "我要举报", "我想举报"))):
        return Intent.COMPLAINT
    if len(squashed) <= 20 and _STATUS.search(squashed):
        return Intent.STATUS
    if _SCAM_CHECK.search(squashed) and (
        len(squashed) <= 30 or _SCAM_CHECK.search(squashed[-12:])
    ):
        return Intent.SCAM_CHECK
    return Intent.QUESTION


def strip_scam_question(text: str) -> str:
    """What is left of "…这是不是诈骗" once the question itself is removed (the message)."""
    remainder = _SCAM_CHECK.sub("", unicodedata.normalize("NFKC", text))
    return remainder.strip(" \t\r\n，,。.？?！!～~")


def complaint_story(text: str) -> str:
    """The story in "我要投诉工行乱扣年费…" (the words after the request to complain)."""
    stripped = unicodedata.normalize("NFKC", text).strip()
    remainder = re.sub(r"^(我)?(要|想|想要|需要)?(投诉|举报|反映问题)(一下)?", "", stripped)
    return remainder.strip(" \t\r\n，,。.：:！!")
