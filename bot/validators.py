"""Validators for what consumers type into the complaint form.

Each returns the cleaned value, or raises `Invalid` with a message the consumer can act
on (many are elderly: say what is expected, with an example).
"""

from __future__ import annotations

import re
import unicodedata

ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"


class Invalid(ValueError):
    """The input cannot be used; the message says what to type instead."""


def _plain(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


def mobile_number(text: str) -> str:
    """A mainland mobile number: 11 digits starting 13-19 (spaces, dashes, +86 allowed)."""
    digits = re.sub(r"[\s\-()（）]", "", _plain(text))
    digits = re.sub(r"^(\+?86)", "", digits)
    if not re.fullmatch(r"1[3-9][0-9]{9}", digits):
        raise Invalid("手机号码应该是11位数字，以1开头，比如 13812345678。请再输入一次：")
    return digits


def id_number(text: str) -> str:
    """An 18-character resident ID number with a valid GB 11643 check character."""
    value = _plain(text).upper().replace(" ", "")
    if not re.fullmatch(r"[0-9]{17}[0-9X]", value):
        raise Invalid("身份证号码应该是18位（最后一位可能是X）。请再输入一次，或点“跳过”：")
    total = sum(int(d) * w for d, w in zip(value[:17], ID_WEIGHTS, strict=True))
    if ID_CHECK[total % 11] != value[-1]:
        raise Invalid("这个身份证号码好像有一位输错了（校验不通过）。请核对后再输入，或点“跳过”：")
    return value


def person_name(text: str) -> str:
    """A name as people write it: 1–30 characters, no digits."""
    value = _plain(text)
    if not value or len(value) > 30 or re.search(r"\d", value) or not value.isprintable():
        raise Invalid("请输入您的姓名（不要带数字），比如：张桂兰")
    return value


def free_text(text: str, minimum: int = 2, maximum: int = 5000) -> str:
    """Free text within sensible bounds (a story of 5,000 characters is kept whole)."""
    value = text.strip()
    if len(re.sub(r"\W", "", value)) < minimum:
        raise Invalid("内容太短了，请再多说几句：")
    if len(value) > maximum:
        raise Invalid(f"内容太长了（超过{maximum}字），请精简一下再发：")
    return value
