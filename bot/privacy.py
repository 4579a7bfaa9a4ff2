"""Masking personal data before it is shown to staff, logged or kept for curators.

PIPL asks for the minimum: phone and ID numbers appear unmasked only on a complaint's own
page for its own institution; everywhere else they pass through these functions.
"""

from __future__ import annotations

import re

_MOBILE = re.compile(r"(?<!\d)(1[3-9]\d)[\s-]?(\d{4})[\s-]?(\d{4})(?!\d)")
_ID_CARD = re.compile(r"(?<![0-9A-Za-z])(\d{6})(\d{8})(\d{3}[\dXx])(?![0-9A-Za-z])")
_LONG_DIGITS = re.compile(r"(?<!\d)(\d{4})\d{5,}(\d{4})(?!\d)")


def mask_phone(phone: str) -> str:
    """138****1234: enough to recognise one's own number, not to call it."""
    digits = re.sub(r"\D", "", phone)
    if len(digits) < 7:
        return "*" * len(digits)
    return f"{digits[:3]}****{digits[-4:]}"


def mask_id_number(number: str) -> str:
    """First 6 and last 4 characters of a resident ID number, the rest hidden."""
    cleaned = number.strip()
    if len(cleaned) < 10:
        return "*" * len(cleaned)
    return f"{cleaned[:6]}{'*' * (len(cleaned) - 10)}{cleaned[-4:]}"


def redact(text: str) -> str:
    """Mask every phone, ID and card-like number inside free text."""
    text = _ID_CARD.sub(lambda m: mask_id_number(m.group(0)), text)
    text = _MOBILE.sub(lambda m: f"{m.group(1)}****{m.group(3)}", text)
    return _LONG_DIGITS.sub(lambda m: f"{m.group(1)}****{m.group(2)}", text)
