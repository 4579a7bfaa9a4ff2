"""The WeChat Official Account protocol as pure functions.

Check a signature, decrypt, parse, build a reply, encrypt it: nothing here touches the
network, the database or the clock (callers pass the time in), so every rule of WeChat's
wire format is tested on its own.  The formats are those of WeChat's developer
documentation for official accounts (服务器配置, 消息加解密, 被动回复, 自定义菜单).

Plain-mode signatures are SHA-1 over the sorted token, timestamp and nonce; safe mode adds
the `Encrypt` text to the sorted list (`msg_signature`) and encrypts with AES-256-CBC, the
key being the base64-decoded EncodingAESKey and the IV its first 16 bytes, PKCS#7-padded to
32 bytes, over 16 random bytes + 4-byte network-order length + message + app id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Mapping, Sequence
from typing import Any
from xml.etree.ElementTree import ParseError

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from bot.messages import Reply

# WeChat documents 2048 bytes as the longest text Content of a passive reply; pages are
# measured in UTF-8 bytes against it (a Chinese character takes three).
PASSIVE_TEXT_LIMIT_BYTES = 2048
MORE_HINT = "回复「更多」看下一段"
REPLAY_WINDOW_SECONDS = 300
PAD_BLOCK = 32
RANDOM_PREFIX_BYTES = 16
MAX_DELIVERY_KEY_CHARS = 128

MENU_MAX_TOP = 3
MENU_MAX_SUB = 5
MENU_TOP_NAME_BYTES = 16
MENU_SUB_NAME_BYTES = 60
MENU_KEY_BYTES = 128
MENU_URL_BYTES = 1024

SENTENCE_ENDS = frozenset("。！？!?；;\n")
CLAUSE_ENDS = frozenset("，、,：: ")
CLOSERS = frozenset("”’」』）)】")
XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class ProtocolError(ValueError):
    """A request that breaks WeChat's protocol (answered with 400 or 403, never 500)."""


class BadXml(ProtocolError):
    """A body that is not a well-formed, DTD-free WeChat XML message."""


class CryptoError(ProtocolError):
    """An encrypted payload that does not decrypt to a message for this account."""


class MenuError(ProtocolError):
    """A custom menu that WeChat would refuse."""


# -- signatures ----------------------------------------------------------------------------
def signature(token: str, timestamp: str, nonce: str, *extra: str) -> str:
    """WeChat's signature: SHA-1 hex of the sorted, concatenated values."""
    joined = "".join(sorted([token, timestamp, nonce, *extra]))
    return hashlib.sha1(joined.encode("utf-8")).hexdigest()


def same_signature(expected: str, given: str) -> bool:
    """Compare signatures in constant time, so timing reveals nothing about the token."""
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def check_signature(token: str, timestamp: str, nonce: str, given: str) -> bool:
    """True when a plain-mode `signature` proves the sender knows the server token."""
    return same_signature(signature(token, timestamp, nonce), given)


def check_msg_signature(
    token: str, timestamp: str, nonce: str, encrypted: str, given: str
) -> bool:
    """True when a safe-mode `msg_signature` covers this encrypted payload."""
    return same_signature(signature(token, timestamp, nonce, encrypted), given)


def is_fresh(timestamp: str, now: float, window: int = REPLAY_WINDOW_SECONDS) -> bool:
    """True when a request's timestamp is close enough to our clock not to be a replay."""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    return abs(int(timestamp) - now) <= window


# -- safe-mode encryption ------------------------------------------------------------------
def aes_key_bytes(aes_key: str) -> bytes:
    """The 32-byte AES key behind a 43-character EncodingAESKey."""
    try:
        key = base64.b64decode(aes_key + "=", validate=True)
    except binascii.Error:
        raise CryptoError("EncodingAESKey is not base64") from None
    if len(key) != 32:
        raise CryptoError("EncodingAESKey must decode to 32 bytes")
    return key


def _cipher(aes_key: str) -> Cipher[modes.CBC]:
    key = aes_key_bytes(aes_key)
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def encrypt(message: bytes, aes_key: str, app_id: str, prefix: bytes | None = None) -> str:
    """Encrypt a reply for safe mode (`prefix` is the 16 random bytes; tests fix it)."""
    prefix = secrets.token_bytes(RANDOM_PREFIX_BYTES) if prefix is None else prefix
    if len(prefix) != RANDOM_PREFIX_BYTES:
        raise CryptoError("the random prefix must be 16 bytes")
    plain = prefix + struct.pack(">I", len(message)) + message + app_id.encode("utf-8")
    pad = PAD_BLOCK - len(plain) % PAD_BLOCK
    plain += bytes([pad]) * pad
    encryptor = _cipher(aes_key).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode("ascii")


def decrypt(encrypted: str, aes_key: str, app_id: str) -> bytes:
    """Decrypt a safe-mode payload and check it was meant for this app id."""
    try:
        data = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("payload is not base64") from None
    if not data or len(data) % 16:
        raise CryptoError("payload is not whole AES blocks")
    decryptor = _cipher(aes_key).decryptor()
    plain = decryptor.update(data) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= PAD_BLOCK or plain[-pad:] != bytes([pad]) * pad:
        raise CryptoError("bad padding")
    plain = plain[:-pad]
    header = RANDOM_PREFIX_BYTES + 4
    if len(plain) < header:
        raise CryptoError("payload too short")
    (length,) = struct.unpack(">I", plain[RANDOM_PREFIX_BYTES:header])
    if header + length > len(plain):
        raise CryptoError("length field beyond the payload")
    message, sender = plain[header:header + length], plain[header + length:]
    if sender != app_id.encode("utf-8"):
        raise CryptoError("payload is for another app id")
    return message


# -- XML -----------------------------------------------------------------------------------
def parse_xml(body: bytes) -> dict[str, str]:
    """The fields of a WeChat XML message; DTDs, entities and external references refused."""
    if not body.strip():
        raise BadXml("empty body")
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException) as error:
        raise BadXml(f"not acceptable XML ({type(error).__name__})") from None
    if root.tag != "xml":
        raise BadXml("the root element must be <xml>")
    return {child.tag: child.text or "" for child in root if isinstance(child.tag, str)}


def cdata(text: str) -> str:
    """Text as CDATA: characters XML forbids removed, "]]>" split across two sections."""
    clean = XML_INVALID.sub("", text)
    return "<![CDATA[" + clean.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def text_reply(to_user: str, from_user: str, create_time: int, content: str) -> str:
    """A passive text reply, the XML WeChat expects as the response body."""
    return (
        "<xml>"
        f"<ToUserName>{cdata(to_user)}</ToUserName>"
        f"<FromUserName>{cdata(from_user)}</FromUserName>"
        f"<CreateTime>{int(create_time)}</CreateTime>"
        "<MsgType><![CDATA[text]]></MsgType>"
        f"<Content>{cdata(content)}</Content>"
        "</xml>"
    )


def encrypted_reply(token: str, encrypted: str, timestamp: str, nonce: str) -> str:
    """The safe-mode envelope around an encrypted reply, signed with `msg_signature`."""
    return (
        "<xml>"
        f"<Encrypt>{cdata(encrypted)}</Encrypt>"
        f"<MsgSignature>{cdata(signature(token, timestamp, nonce, encrypted))}</MsgSignature>"
        f"<TimeStamp>{timestamp}</TimeStamp>"
        f"<Nonce>{cdata(nonce)}</Nonce>"
        "</xml>"
    )


def delivery_key(message: Mapping[str, str]) -> str:
    """What identifies a delivery across WeChat's retries: MsgId, else sender + time.

    Events have no MsgId; WeChat documents sender + CreateTime for them.  The event and its
    key are added (a retry repeats them), so two menu taps in one second stay two events.
    """
    msg_id = message.get("MsgId", "").strip()
    if msg_id:
        key = f"msg:{msg_id}"
    else:
        key = ":".join(("event", message.get("FromUserName", ""),
                        message.get("CreateTime", "").strip(), message.get("Event", ""),
                        message.get("EventKey", "")))
    if len(key) > MAX_DELIVERY_KEY_CHARS:
        key = "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return key


# -- rendering -----------------------------------------------------------------------------
def render(replies: Sequence[Reply]) -> str:
    """Replies as one text; buttons become "回复 N …" lines, numbered as the engine counts."""
    parts = [reply.text.strip() for reply in replies if reply.text.strip()]
    buttons = [button for reply in replies for button in reply.buttons]
    if buttons:
        parts.append("\n".join(f"回复 {n} {b.label}" for n, b in enumerate(buttons, 1)))
    return "\n\n".join(parts)


def _fits(text: str, limit: int) -> bool:
    return len(text.encode("utf-8")) <= limit


def _cut(text: str, budget: int) -> int:
    """Where to end a page: the last sentence end within `budget` bytes, else a clause."""
    used, most = 0, 0
    for char in text:
        used += len(char.encode("utf-8"))
        if used > budget:
            break
        most += 1
    for ends in (SENTENCE_ENDS, CLAUSE_ENDS):
        for index in range(most, max(most // 3, 1) - 1, -1):
            if text[index - 1] in ends:
                while index < most and text[index] in CLOSERS:
                    index += 1
                return index
    return max(most, 1)


def paginate(text: str, limit: int = PASSIVE_TEXT_LIMIT_BYTES, hint: str = MORE_HINT) -> list[str]:
    """Split a long answer at sentences into pages of at most `limit` bytes each."""
    rest = text.strip()
    suffix = "\n\n" + hint
    budget = limit - len(suffix.encode("utf-8"))
    pages = []
    while not _fits(rest, limit):
        cut = _cut(rest, budget)
        pages.append(rest[:cut].rstrip() + suffix)
        rest = rest[cut:].lstrip()
    pages.append(rest)
    return pages


# -- custom menu ---------------------------------------------------------------------------
def _menu_button(label: str, action: str, name_bytes: int) -> dict[str, Any]:
    if not label or len(label.encode("utf-8")) > name_bytes:
        raise MenuError(f"menu label {label!r} must be 1 to {name_bytes} bytes")
    if action.startswith(("https://", "http://")):
        if len(action.encode("utf-8")) > MENU_URL_BYTES:
            raise MenuError(f"menu address of {label!r} is longer than {MENU_URL_BYTES} bytes")
        return {"type": "view", "name": label, "url": action}
    if not action or len(action.encode("utf-8")) > MENU_KEY_BYTES:
        raise MenuError(f"menu action of {label!r} must be 1 to {MENU_KEY_BYTES} bytes")
    return {"type": "click", "name": label, "key": action}


def menu_definition(items: Sequence[str]) -> dict[str, Any]:
    """The body of WeChat's menu/create call for `wechat.menu` items ("group/label=action")."""
    buttons: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    for item in items:
        path, equals, action = item.partition("=")
        if not equals:
            raise MenuError(f"menu item {item!r} is not \"label=action\"")
        group, _, label = path.strip().rpartition("/")
        group, label, action = group.strip(), label.strip(), action.strip()
        if not group:
            buttons.append(_menu_button(label, action, MENU_TOP_NAME_BYTES))
            continue
        if group not in groups:
            if len(group.encode("utf-8")) > MENU_TOP_NAME_BYTES:
                raise MenuError(f"menu group {group!r} is longer than "
                                f"{MENU_TOP_NAME_BYTES} bytes")
            groups[group] = {"name": group, "sub_button": []}
            buttons.append(groups[group])
        groups[group]["sub_button"].append(_menu_button(label, action, MENU_SUB_NAME_BYTES))
    if not 1 <= len(buttons) <= MENU_MAX_TOP:
        raise MenuError(f"the menu needs 1 to {MENU_MAX_TOP} top-level buttons, "
                        f"got {len(buttons)}")
    for group in groups.values():
        if len(group["sub_button"]) > MENU_MAX_SUB:
            raise MenuError(f"menu group {group['name']!r} has more than {MENU_MAX_SUB} items")
    return {"button": buttons}

